// QEMU's educational device (QEMU's docs/specs/edu.rst and hw/misc/edu.c), access for access:
// tools/e2e/test/edu-differential.test.ts runs one script against both and compares every read.
// Added: a device-memory BAR so that migration has real memory to move.
import {
  defineDevice,
  bar,
  msi,
  parseSize,
  type DeviceContext,
  u32,
  bytes,
  type Schema,
} from '@vfu/pci';

export const Reg = {
  ID: 0x00,
  LIVENESS: 0x04,
  FACTORIAL: 0x08,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_COUNT: 0x90,
  DMA_CMD: 0x98,
} as const;
export const EDU_ID = 0x010000ed;
export const STATUS_COMPUTING = 0x01,
  STATUS_IRQ_FACT = 0x80;
export const DMA_START = 0x1,
  DMA_TO_RAM = 0x2,
  DMA_IRQ = 0x4;
export const IRQ_FACT = 0x1,
  IRQ_DMA = 0x100;
/** The DMA buffer's address as the device sees it. */
export const DMA_BUFFER = 0x40000,
  DMA_BUFFER_SIZE = 4096;
const BAR0_SIZE = 1 << 20;
const ALL_ONES = 0xffff_ffff_ffff_ffffn;

const state = {
  /** What 0x04 reads: the inverse of the last value written there (0 until then). */
  inverse: u32,
  factorial: u32,
  status: u32,
  irqStatus: u32,
  /** The four 64-bit DMA registers (source, destination, count, command), little-endian. */
  dma: bytes(32),
  buffer: bytes(DMA_BUFFER_SIZE),
} satisfies Schema;
type Dev = DeviceContext<typeof state>;
type State = Dev['state'];

const DMA_SRC = 0,
  DMA_DST = 8,
  DMA_COUNT = 16,
  DMA_CMD = 24;
const dmaView = (s: State) => new DataView(s.dma.buffer, s.dma.byteOffset, 32);
const dmaGet = (s: State, at: number) => dmaView(s).getBigUint64(at, true);
const dmaSet = (s: State, at: number, v: bigint) => dmaView(s).setBigUint64(at, v, true);
const dmaRunning = (s: State) => (dmaGet(s, DMA_CMD) & BigInt(DMA_START)) !== 0n;

/** n! modulo 2^32, as the device's 32-bit register holds it. */
export function factorial(n: number): number {
  // From 34! on the product has 32 factors of two, so it is 0 modulo 2^32: no need to loop to n.
  if (n >= 34) return 0;
  let r = 1;
  for (let i = 2; i <= n; i++) r = Math.imul(r, i) >>> 0;
  return r;
}

function raise(dev: Dev, bits: number): void {
  dev.state.irqStatus = (dev.state.irqStatus | bits) >>> 0;
  if (dev.state.irqStatus) dev.irq.raise();
}

function finishFactorial(dev: Dev): void {
  const s = dev.state;
  s.factorial = factorial(s.factorial);
  s.status &= ~STATUS_COMPUTING;
  if (s.status & STATUS_IRQ_FACT) raise(dev, IRQ_FACT);
}

async function runDma(dev: Dev): Promise<void> {
  const s = dev.state;
  if (!dmaRunning(s)) return;
  const cmd = dmaGet(s, DMA_CMD);
  const toRam = (cmd & BigInt(DMA_TO_RAM)) !== 0n;
  const devAddr = dmaGet(s, toRam ? DMA_SRC : DMA_DST);
  const ram = dmaGet(s, toRam ? DMA_DST : DMA_SRC);
  const count = dmaGet(s, DMA_COUNT);
  const off = devAddr - BigInt(DMA_BUFFER);
  // QEMU's edu only logs a transfer outside its buffer and then overruns it; this one refuses.
  if (off < 0n || off + count > BigInt(DMA_BUFFER_SIZE)) {
    dev.log(`edu DMA outside the buffer: 0x${devAddr.toString(16)} +${count}`);
    dmaSet(s, DMA_CMD, cmd & ~BigInt(DMA_START));
    return;
  }
  const from = Number(off),
    to = Number(off + count);
  try {
    if (toRam) await dev.dma.write(Number(ram), s.buffer.subarray(from, to));
    else s.buffer.set(await dev.dma.read(Number(ram), to - from), from);
  } catch (e) {
    dev.log(`edu DMA failed: ${(e as Error).message}`);
  }
  dmaSet(s, DMA_CMD, cmd & ~BigInt(DMA_START));
  if (cmd & BigInt(DMA_IRQ)) raise(dev, IRQ_DMA);
}

/**
 * Whether QEMU lets an access of this width at this offset reach edu at all: edu accepts
 * naturally aligned 4- and 8-byte accesses only. QEMU reads any other access as 0 and drops it
 * when written (its memory core splits unaligned wide accesses before they get here).
 */
const reaches = (offset: number, width: number) =>
  (width === 4 || width === 8) && offset % width === 0;

/** What edu answers for a read that reaches it; all ones where no register answers. */
function readRegister(s: State, offset: number, width: number): bigint {
  if (offset < Reg.DMA_SRC && width !== 4) return ALL_ONES;
  switch (offset) {
    case Reg.ID:
      return BigInt(EDU_ID);
    case Reg.LIVENESS:
      return BigInt(s.inverse);
    case Reg.FACTORIAL:
      return BigInt(s.factorial);
    case Reg.STATUS:
      return BigInt(s.status);
    case Reg.IRQ_STATUS:
      return BigInt(s.irqStatus);
    case Reg.DMA_SRC:
    case Reg.DMA_DST:
    case Reg.DMA_COUNT:
    case Reg.DMA_CMD:
      return dmaGet(s, offset - Reg.DMA_SRC);
    default:
      return ALL_ONES;
  }
}

function writeRegister(dev: Dev, offset: number, width: number, v: bigint): void {
  const s = dev.state;
  if (offset < Reg.DMA_SRC && width !== 4) return;
  const v32 = Number(v & 0xffff_ffffn);
  switch (offset) {
    case Reg.LIVENESS:
      s.inverse = ~v32 >>> 0;
      return;
    case Reg.FACTORIAL:
      if (s.status & STATUS_COMPUTING) return;
      s.factorial = v32;
      s.status |= STATUS_COMPUTING;
      dev.whenRunning(() => finishFactorial(dev));
      return;
    case Reg.STATUS:
      s.status = (s.status & ~STATUS_IRQ_FACT) | (v32 & STATUS_IRQ_FACT);
      return;
    case Reg.IRQ_RAISE:
      dev.whenRunning(() => raise(dev, v32));
      return;
    case Reg.IRQ_ACK:
      s.irqStatus = (s.irqStatus & ~v32) >>> 0;
      if (!s.irqStatus) dev.irq.lower();
      return;
    case Reg.DMA_SRC:
    case Reg.DMA_DST:
    case Reg.DMA_COUNT:
      // A 4-byte write replaces the whole register (the upper half becomes 0), as in QEMU.
      if (!dmaRunning(s)) dmaSet(s, offset - Reg.DMA_SRC, v);
      return;
    case Reg.DMA_CMD:
      // A command without the start bit is ignored; one with it is kept whole.
      if (!(v & BigInt(DMA_START)) || dmaRunning(s)) return;
      dmaSet(s, DMA_CMD, v);
      dev.whenRunning(() => runDma(dev));
      return;
  }
}

/** BAR 0: the register block, decoded as QEMU's edu decodes it. */
function registerBar(dev: Dev) {
  return {
    size: BAR0_SIZE,
    read(offset: number, out: Uint8Array): void {
      const width = out.length;
      const v = reaches(offset, width) ? readRegister(dev.state, offset, width) : 0n;
      const dv = new DataView(out.buffer, out.byteOffset, width);
      if (width === 8) dv.setBigUint64(0, v, true);
      else for (let i = 0; i < width; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    },
    write(offset: number, data: Uint8Array): void {
      const width = data.length;
      if (!reaches(offset, width)) return;
      const dv = new DataView(data.buffer, data.byteOffset, width);
      const v = width === 8 ? dv.getBigUint64(0, true) : BigInt(dv.getUint32(0, true));
      writeRegister(dev, offset, width, v);
    },
  };
}

export default defineDevice({
  id: 'edu',
  version: 2,
  description: "QEMU's educational device: factorial, interrupts, DMA, plus device memory in BAR 2",
  pci: { vendor: 0x1234, device: 0x11e8, classCode: 0x00ff00, revision: 0x10, pin: 1 },
  options: {
    memory: {
      description: 'size of the device memory in BAR 2 (power of two, e.g. 64M, 1G)',
      default: '1M',
    },
  },
  capabilities: () => [msi({ vectors: 1 })],
  state,
  memories: o => ({ memory: parseSize(o.memory) }),
  bars: dev => ({
    0: bar('mem32', registerBar(dev)),
    2: bar('mem64', dev.memory('memory'), true),
  }),
  // A transfer that was in flight when the state was saved resumes at the destination.
  afterLoad: dev => {
    if (dmaRunning(dev.state)) dev.whenRunning(() => runDma(dev));
    if (dev.state.status & STATUS_COMPUTING) dev.whenRunning(() => finishFactorial(dev));
  },
});
