// QEMU's educational device (docs/specs/edu.rst), plus a device-memory BAR so that migration
// has real memory to move.
import {
  defineDevice,
  registers,
  bar,
  msi,
  parseSize,
  type DeviceContext,
  u32,
  u64,
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

const state = {
  liveness: u32,
  factorial: u32,
  status: u32,
  irqStatus: u32,
  dmaSrc: u64,
  dmaDst: u64,
  dmaCount: u64,
  dmaCmd: u32,
  buffer: bytes(DMA_BUFFER_SIZE),
} satisfies Schema;
type Dev = DeviceContext<typeof state>;

const factorial = (n: number) => {
  let r = 1;
  for (let i = 2; i <= n; i++) r = Math.imul(r, i) >>> 0;
  return r;
};

function raise(dev: Dev, bits: number): void {
  dev.state.irqStatus |= bits;
  dev.irq.raise();
}

async function runDma(dev: Dev): Promise<void> {
  const s = dev.state;
  if (!(s.dmaCmd & DMA_START)) return;
  const toRam = (s.dmaCmd & DMA_TO_RAM) !== 0;
  const devAddr = toRam ? s.dmaSrc : s.dmaDst,
    ram = toRam ? s.dmaDst : s.dmaSrc;
  const off = devAddr - DMA_BUFFER;
  if (off < 0 || off + s.dmaCount > DMA_BUFFER_SIZE) {
    dev.log(`edu DMA outside the buffer: 0x${devAddr.toString(16)} +${s.dmaCount}`);
    s.dmaCmd &= ~DMA_START;
    return;
  }
  try {
    if (toRam) await dev.dma.write(ram, s.buffer.subarray(off, off + s.dmaCount));
    else s.buffer.set(await dev.dma.read(ram, s.dmaCount), off);
  } catch (e) {
    dev.log(`edu DMA failed: ${(e as Error).message}`);
  }
  s.dmaCmd &= ~DMA_START;
  if (s.dmaCmd & DMA_IRQ) raise(dev, IRQ_DMA);
}

export default defineDevice({
  id: 'edu',
  version: 1,
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
    0: bar(
      'mem32',
      registers(1 << 20, dev.state, [
        { offset: Reg.ID, width: 4, read: () => EDU_ID },
        {
          offset: Reg.LIVENESS,
          width: 4,
          read: s => ~s.liveness >>> 0,
          write: (s, v) => {
            s.liveness = Number(v);
          },
        },
        {
          offset: Reg.FACTORIAL,
          width: 4,
          read: s => s.factorial,
          write: (s, v) => {
            if (s.status & STATUS_COMPUTING) return;
            s.factorial = Number(v);
            s.status |= STATUS_COMPUTING;
            dev.whenRunning(() => {
              s.factorial = factorial(s.factorial);
              s.status &= ~STATUS_COMPUTING;
              if (s.status & STATUS_IRQ_FACT) raise(dev, IRQ_FACT);
            });
          },
        },
        {
          offset: Reg.STATUS,
          width: 4,
          read: s => s.status,
          write: (s, v) => {
            s.status = (s.status & STATUS_COMPUTING) | (Number(v) & STATUS_IRQ_FACT);
          },
        },
        { offset: Reg.IRQ_STATUS, width: 4, read: s => s.irqStatus },
        {
          offset: Reg.IRQ_RAISE,
          width: 4,
          write: (_s, v) => dev.whenRunning(() => raise(dev, Number(v))),
        },
        {
          offset: Reg.IRQ_ACK,
          width: 4,
          write: (s, v) => {
            s.irqStatus &= ~Number(v);
            if (!s.irqStatus) dev.irq.lower();
          },
        },
        ...(
          [
            [Reg.DMA_SRC, 'dmaSrc'],
            [Reg.DMA_DST, 'dmaDst'],
            [Reg.DMA_COUNT, 'dmaCount'],
          ] as const
        ).flatMap(([offset, k]) => [
          {
            offset,
            width: 8 as const,
            read: (s: typeof dev.state) => s[k],
            write: (s: typeof dev.state, v: number | bigint) => {
              s[k] = Number(v);
            },
          },
          {
            offset,
            width: 4 as const,
            read: (s: typeof dev.state) => s[k] % 2 ** 32,
            write: (s: typeof dev.state, v: number | bigint) => {
              s[k] = Math.floor(s[k] / 2 ** 32) * 2 ** 32 + Number(v);
            },
          },
          {
            offset: offset + 4,
            width: 4 as const,
            read: (s: typeof dev.state) => Math.floor(s[k] / 2 ** 32),
            write: (s: typeof dev.state, v: number | bigint) => {
              s[k] = Number(v) * 2 ** 32 + (s[k] % 2 ** 32);
            },
          },
        ]),
        {
          offset: Reg.DMA_CMD,
          width: 4,
          read: s => s.dmaCmd,
          write: (s, v) => {
            if (s.dmaCmd & DMA_START) return;
            s.dmaCmd = Number(v) & 7;
            if (s.dmaCmd & DMA_START) dev.whenRunning(() => runDma(dev));
          },
        },
      ]),
    ),
    2: bar('mem64', dev.memory('memory'), true),
  }),
  // A transfer that was in flight when the state was saved resumes at the destination.
  afterLoad: dev => {
    if (dev.state.dmaCmd & DMA_START) dev.whenRunning(() => runDma(dev));
    if (dev.state.status & STATUS_COMPUTING)
      dev.whenRunning(() => {
        dev.state.factorial = factorial(dev.state.factorial);
        dev.state.status &= ~STATUS_COMPUTING;
      });
  },
});
