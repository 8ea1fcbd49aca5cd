// What a migration carries of the kit's own state (the KIT record): the INTx line, MSI and MSI-X
// masks and pending bits, the MSI-X table; and what it cannot carry (closures queued by
// whenRunning), which the kit says loudly.
import { afterEach, describe, expect, it } from 'vitest';
import {
  bar,
  defineDevice,
  deviceImage,
  DeviceSetupError,
  msi,
  msix,
  PciDevice,
  registers,
  u32,
  type Schema,
} from '@vfu/pci';
import { DeviceHarness } from '@vfu/pci/testing';
import { eventfdCreate, eventfdRead, dupFd, type OwnedFd } from '@vfu/native';
import { Irq, IrqSetFlag as I } from '@vfu/protocol';
import {
  FORMAT_VERSION,
  LoadSession,
  Rec,
  SaveSession,
  StreamError,
  headerPayload,
  record,
} from '@vfu/stream';

const Off = { RAISE: 0, LOWER: 4, LATER: 8 } as const;

// Raises the vector written to RAISE (INTx when neither MSI nor MSI-X is on), lowers INTx on a
// write to LOWER; a write to LATER raises as device work (whenRunning), with no afterLoad.
const lines = defineDevice({
  id: 'lines',
  version: 1,
  description: 'raises what it is told to',
  pci: { vendor: 0x1b36, device: 0x0103, classCode: 0xff0000, pin: 1 },
  capabilities: () => [msi({ vectors: 4, perVectorMask: true }), msix({ vectors: 3, bar: 1 })],
  state: { raised: u32 },
  bars: dev => ({
    0: bar(
      'mem32',
      registers(4096, dev.state, [
        {
          offset: Off.RAISE,
          width: 4,
          write: (s, v) => {
            s.raised++;
            dev.irq.raise(Number(v));
          },
        },
        { offset: Off.LOWER, width: 4, write: () => dev.irq.lower() },
        { offset: Off.LATER, width: 4, write: () => dev.whenRunning(() => dev.irq.raise()) },
      ]),
    ),
  }),
});

const harnesses: DeviceHarness<typeof lines.state>[] = [];
const fds: OwnedFd[] = [];
const open = () => {
  const h = new DeviceHarness(lines);
  harnesses.push(h);
  return h;
};
const keep = (h: DeviceHarness<typeof lines.state>) => {
  harnesses.push(h);
  return h;
};
afterEach(() => {
  for (const h of harnesses.splice(0)) h.release();
  for (const f of fds.splice(0)) f.close();
});

/** Binds a real eventfd to INTx of `dev` (DEVICE_SET_IRQS TRIGGER|EVENTFD), as a client does. */
function bindIntx<S extends Schema>(dev: PciDevice<S>): OwnedFd {
  const fd = eventfdCreate();
  fds.push(fd);
  const flags = I.DATA_EVENTFD | I.ACTION_TRIGGER;
  const req = { argsz: 24, flags, index: Irq.INTX, start: 0, count: 1 };
  dev.irq.set(req, [dupFd(fd.fd)]);
  return fd;
}

const STATUS = 0x06,
  STATUS_INTERRUPT = 0x08,
  COMMAND = 0x04,
  INTX_DISABLE = 0x400;

describe('INTx across a migration', () => {
  it('an asserted line is asserted at the destination and signalled when it runs', () => {
    const h = open();
    h.bar(0).write32(Off.RAISE, 0);
    expect(h.irqs.intx).toBe(1);
    const dst = keep(h.migrate());
    expect(h.differences(dst)).toEqual([]);
    expect(dst.config.read16(STATUS) & STATUS_INTERRUPT).toBe(STATUS_INTERRUPT);
    expect(dst.irqs.intx).toBe(0); // stopped: nothing goes out
    dst.run();
    expect(dst.irqs.intx).toBe(1);
    dst.bar(0).write32(Off.LOWER, 0);
    expect(dst.config.read16(STATUS) & STATUS_INTERRUPT).toBe(0);
  });

  it('a low line stays low', () => {
    const h = open();
    h.bar(0).write32(Off.RAISE, 0);
    h.bar(0).write32(Off.LOWER, 0);
    const dst = keep(h.migrate());
    dst.run();
    expect(dst.device.irq.intxAsserted).toBe(false);
    expect(dst.irqs.intx).toBe(0);
  });

  it('is signalled on the eventfd the client sets up after the resume', () => {
    const h = open();
    h.bar(0).write32(Off.RAISE, 0);
    const dst = keep(h.migrate());
    dst.device.irq.deliverTo(null); // real eventfds from here on
    dst.run(); // no eventfd yet: nothing to signal
    const fd = bindIntx(dst.device);
    expect(eventfdRead(fd.fd)).toBe(1n);
    expect(eventfdRead(fd.fd)).toBeNull(); // AUTOMASKED until the client unmasks
  });

  it('is signalled at once when the client had set up its eventfd before the resume', () => {
    const h = open();
    h.bar(0).write32(Off.RAISE, 0);
    const dst = keep(h.migrate());
    dst.device.irq.deliverTo(null);
    const fd = bindIntx(dst.device);
    expect(eventfdRead(fd.fd)).toBeNull(); // stopped (after RESUMING): held back
    dst.run();
    expect(eventfdRead(fd.fd)).toBe(1n);
  });

  it('waits for INTX_DISABLE (migrated in COMMAND) to be cleared', () => {
    const h = open();
    h.config.write16(COMMAND, h.config.read16(COMMAND) | INTX_DISABLE);
    h.bar(0).write32(Off.RAISE, 0);
    expect(h.irqs.intx).toBe(0);
    const dst = keep(h.migrate());
    dst.run();
    expect(dst.irqs.intx).toBe(0);
    expect(dst.device.irq.intxAsserted).toBe(true);
    dst.config.write16(COMMAND, dst.config.read16(COMMAND) & ~INTX_DISABLE);
    expect(dst.irqs.intx).toBe(1);
  });
});

describe('MSI-X across a migration', () => {
  const table = (h: DeviceHarness<typeof lines.state>) => h.bar(1);
  const PBA = 4096;

  it('carries the table (address, data, vector control) and the pending bits', () => {
    const h = open();
    h.enableMsix();
    for (let v = 0; v < 3; v++) {
      table(h).write64(v * 16, 0xfee00000 + v * 0x1000);
      table(h).write32(v * 16 + 8, 0x4000 + v);
    }
    table(h).write32(1 * 16 + 12, 1); // vector 1 masked by the guest
    h.bar(0).write32(Off.RAISE, 1);
    expect(h.irqs.msix).toEqual([0, 0, 0]);
    expect(table(h).read8(PBA)).toBe(0b010);
    const dst = keep(h.migrate());
    expect(h.differences(dst)).toEqual([]);
    for (let v = 0; v < 3; v++) {
      expect(table(dst).read64(v * 16)).toBe(BigInt(0xfee00000 + v * 0x1000));
      expect(table(dst).read32(v * 16 + 8)).toBe(0x4000 + v);
      expect(table(dst).read32(v * 16 + 12)).toBe(v === 1 ? 1 : 0);
    }
    expect(table(dst).read8(PBA)).toBe(0b010);
    dst.run();
    expect(dst.irqs.msix).toEqual([0, 0, 0]); // still masked: still pending
    table(dst).write32(1 * 16 + 12, 0); // the guest unmasks it at the destination
    expect(dst.irqs.msix).toEqual([0, 1, 0]);
    expect(table(dst).read8(PBA)).toBe(0);
    dst.bar(0).write32(Off.RAISE, 2); // unmasked vectors stayed unmasked
    expect(dst.irqs.msix).toEqual([0, 1, 1]);
  });

  it('a vector pending only because the device stopped fires when the destination runs', () => {
    const h = open();
    h.enableMsix();
    h.stop();
    h.device.irq.raise(2);
    const dst = keep(h.migrate());
    expect(table(dst).read8(PBA)).toBe(0b100);
    dst.run();
    expect(dst.irqs.msix).toEqual([0, 0, 1]);
    expect(table(dst).read8(PBA)).toBe(0);
  });

  it('a vector pending under the function mask fires once the destination lifts it', () => {
    const h = open();
    h.enableMsix();
    const cap = h.device.caps.msix!;
    h.config.write16(cap + 2, h.config.read16(cap + 2) | 0x4000);
    h.bar(0).write32(Off.RAISE, 0);
    const dst = keep(h.migrate());
    dst.run();
    expect(dst.irqs.msix).toEqual([0, 0, 0]);
    dst.config.write16(cap + 2, dst.config.read16(cap + 2) & ~0x4000);
    expect(dst.irqs.msix).toEqual([1, 0, 0]);
  });
});

describe('MSI across a migration', () => {
  it('a vector pending under its per-vector mask fires once the destination unmasks it', () => {
    const h = open();
    h.enableMsi();
    const cap = h.device.caps.msi!;
    h.config.write32(cap + 0x10, 0b1000); // mask bits (64-bit capability: at 0x10)
    h.bar(0).write32(Off.RAISE, 3);
    expect(h.irqs.msi).toEqual([0, 0, 0, 0]);
    const dst = keep(h.migrate());
    expect(h.differences(dst)).toEqual([]);
    dst.run();
    expect(dst.irqs.msi).toEqual([0, 0, 0, 0]);
    dst.config.write32(cap + 0x10, 0);
    expect(dst.irqs.msi).toEqual([0, 0, 0, 1]);
  });
});

describe('device work queued by whenRunning', () => {
  it('harness: a migration that would lose it is a DeviceSetupError', () => {
    const h = open();
    h.stop();
    h.bar(0).write32(Off.LATER, 0);
    expect(() => h.migrate()).toThrow(DeviceSetupError);
    expect(() => h.migrate()).toThrow(/afterLoad/);
  });

  it('server: the destination logs a warning and counts the lost work', () => {
    const src = new PciDevice(lines),
      dst = new PciDevice(lines);
    const logs: string[] = [];
    dst.log = m => logs.push(m);
    try {
      src.setRunning(false);
      src.bars[0]!.handler.write(Off.LATER, Uint8Array.of(0, 0, 0, 0));
      src.bars[0]!.handler.write(Off.LATER, Uint8Array.of(0, 0, 0, 0));
      expect(src.queuedWork).toBe(2);
      dst.setRunning(false);
      transfer(src, dst);
      expect(dst.lostWork).toBe(2);
      expect(logs).toEqual([expect.stringMatching(/^warning: lines: 2 piece\(s\) .* lost/)]);
    } finally {
      src.release();
      dst.release();
    }
  });

  it('work queued at the destination before the load is dropped (it was for other state)', () => {
    const h = open();
    const dst0 = keep(new DeviceHarness(lines));
    dst0.stop();
    dst0.bar(0).write32(Off.LATER, 0);
    expect(dst0.device.queuedWork).toBe(1);
    transfer(h.device, dst0.device);
    expect(dst0.device.queuedWork).toBe(0);
    expect(dst0.device.lostWork).toBe(0); // the source had none
    dst0.run();
    expect(dst0.irqs.intx).toBe(0);
  });

  it('nothing is said when afterLoad queues the work again', () => {
    const redo = defineDevice({ ...lines, afterLoad: dev => dev.whenRunning(() => {}) });
    const h = new DeviceHarness(redo);
    try {
      h.stop();
      h.bar(0).write32(Off.LATER, 0);
      const dst = h.migrate();
      expect(dst.device.lostWork).toBe(0);
      dst.release();
    } finally {
      h.release();
    }
  });
});

describe('the KIT record in the stream', () => {
  it('a stream of another format version is refused', () => {
    const dst = new PciDevice(lines);
    try {
      const head = headerPayload(deviceImage(dst));
      new DataView(head.buffer).setUint16(8, FORMAT_VERSION - 1, true);
      const load = new LoadSession(deviceImage(dst));
      expect(() => load.write(record(Rec.HEADER, head))).toThrow(
        new StreamError(
          `stream format ${FORMAT_VERSION - 1} is not supported ` +
            `(this server reads ${FORMAT_VERSION})`,
        ),
      );
    } finally {
      dst.release();
    }
  });

  it('a stream without it, or with one for other vectors, is refused; nothing is applied', () => {
    const src = new PciDevice(lines),
      dst = new PciDevice(lines);
    try {
      const image = deviceImage(src);
      const state = record(Rec.STATE, image.saveState()),
        config = record(Rec.CONFIG, image.saveConfig()),
        end = record(Rec.END, new Uint8Array(0));
      const without = new LoadSession(deviceImage(dst));
      without.write(record(Rec.HEADER, headerPayload(image)));
      without.write(state);
      without.write(config);
      expect(() => without.write(end)).toThrow(/without the device kit record/);
      const kit = image.kit!.save();
      new DataView(kit.buffer).setUint16(4 + 4, 7, true); // 7 MSI-X vectors
      const other = new LoadSession(deviceImage(dst));
      other.write(record(Rec.HEADER, headerPayload(image)));
      expect(() => other.write(record(Rec.KIT, kit))).toThrow(
        /for 4 MSI and 7 MSI-X vectors, this device has 4 and 3/,
      );
      expect(dst.state.raised).toBe(0);
    } finally {
      src.release();
      dst.release();
    }
  });
});

/** A stop-copy of `src` loaded into `dst` through the stream, as the server does it. */
function transfer<S extends Schema>(src: PciDevice<S>, dst: PciDevice<S>): void {
  const save = new SaveSession(deviceImage(src));
  save.stop();
  const load = new LoadSession(deviceImage(dst));
  for (let d = save.read(1 << 16); d.length; d = save.read(1 << 16)) load.write(d);
  load.commit();
}
