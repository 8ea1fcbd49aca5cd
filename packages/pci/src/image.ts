// A device model as the migration stream sees it (the server's save and load sessions and the
// test harness use the same view).
import {
  encodeState,
  decodeState,
  assignState,
  schemaSignature,
  sizeText,
  type DeviceImage,
  type Schema,
  type DeviceIdentity,
} from '@vfu/stream';
import { Region } from '@vfu/protocol';
import type { PciDevice } from './device.js';
import { WRITE_BLOCK } from './regions.js';

/**
 * The stream's view of a device: identity, declared state, config space, the kit's own state
 * (KIT record: work queued by whenRunning, as a count, and the interrupt state) and memories.
 */
export function deviceImage<S extends Schema>(dev: PciDevice<S>): DeviceImage {
  const schema = dev.def.state;
  let queuedAtSource = 0; // from the kit record, which is loaded before the state
  return {
    deviceId: dev.def.id,
    deviceVersion: dev.def.version,
    schema: schemaSignature(schema),
    identity: deviceIdentity(dev),
    saveState: () => encodeState(schema, dev.state),
    checkState: b => {
      const s = decodeState(schema, b);
      return typeof s === 'string' ? s : null;
    },
    loadState: b => {
      assignState(schema, dev.state, decodeState(schema, b) as never);
      dev.loaded(queuedAtSource);
      queuedAtSource = 0;
    },
    saveConfig: () => dev.config.snapshot(),
    configSize: dev.config.size,
    loadConfig: b => dev.config.restore(b),
    kit: {
      save: () => kitRecord(dev.queuedWork, dev.irq.save()),
      check: b => (b.length < 4 ? 'kit record truncated' : dev.irq.check(b.subarray(4))),
      load: b => {
        queuedAtSource = view(b).getUint32(0, true);
        dev.irq.load(b.subarray(4));
      },
    },
    memories: [...dev.memories.entries()].map(([name, m]) => ({
      name,
      size: m.size,
      bytes: m.view,
      writes: { blockSize: WRITE_BLOCK, flags: () => m.writes() },
      isHole: (offset: number, len: number) => m.isHole(offset, len),
    })),
  };
}

const hex = (v: number, digits: number) => v.toString(16).padStart(digits, '0');

/**
 * What a guest can see of the device, whatever options built it: every BAR's type and size, the
 * ROM's size, each memory's size, the config space's size and read-only identity (vendor,
 * device, revision, class, subsystem, interrupt pin) and its capability list. Options reach the
 * guest only through these, so two devices with equal identities are interchangeable.
 */
function deviceIdentity<S extends Schema>(dev: PciDevice<S>): DeviceIdentity {
  const id: DeviceIdentity = {};
  for (let i = Region.BAR0; i <= Region.BAR5; i++) {
    const b = dev.bars[i];
    if (b) id[`BAR${i}`] = `${b.kind}${b.prefetchable ? ' prefetchable' : ''} ${sizeText(b.size)}`;
  }
  const rom = dev.region(Region.ROM);
  if (rom) id.ROM = sizeText(rom.size);
  for (const [name, m] of dev.memories) id[`memory ${name}`] = sizeText(m.size);
  const c = dev.config.bytes,
    dv = new DataView(c.buffer, c.byteOffset, c.length);
  id['config space'] = sizeText(c.length);
  id['PCI ids'] =
    `vendor ${hex(dv.getUint16(0, true), 4)} device ${hex(dv.getUint16(2, true), 4)} ` +
    `revision ${hex(c[8], 2)} class ${hex(dv.getUint32(8, true) >>> 8, 6)} ` +
    `subsystem ${hex(dv.getUint16(0x2c, true), 4)}:${hex(dv.getUint16(0x2e, true), 4)} ` +
    `pin ${c[0x3d]}`;
  id.capabilities = capabilityList(c, dv);
  return { ...id, ...dev.def.identity?.(dev.context) };
}

/**
 * The standard capability list: each ID at its offset, with the read-only parts of MSI's and
 * MSI-X's message control (vectors, 64-bit, per-vector masking; table size).
 */
function capabilityList(c: Uint8Array, dv: DataView): string {
  const out: string[] = [];
  const seen = new Set<number>();
  for (let at = c[0x34] & ~3; at >= 0x40 && at + 2 <= c.length && !seen.has(at); ) {
    seen.add(at);
    const capId = c[at];
    let fact = `${hex(capId, 2)}@${hex(at, 2)}`;
    if (capId === 0x05) fact += ` msi ${hex(dv.getUint16(at + 2, true) & 0x018e, 4)}`;
    if (capId === 0x11) fact += ` msix ${(dv.getUint16(at + 2, true) & 0x7ff) + 1}`;
    out.push(fact);
    at = c[at + 1] & ~3;
  }
  return out.join(', ') || 'none';
}

/** The KIT record: u32 count of queued device work, then the interrupt state. */
function kitRecord(queuedWork: number, irq: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + irq.length);
  view(out).setUint32(0, queuedWork, true);
  out.set(irq, 4);
  return out;
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
