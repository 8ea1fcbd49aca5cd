import { afterEach, describe, expect, it } from 'vitest';
import { DeviceHarness } from '@vfu/pci/testing';
import edu, {
  DMA_BUFFER,
  DMA_IRQ,
  DMA_START,
  DMA_TO_RAM,
  EDU_ID,
  IRQ_DMA,
  IRQ_FACT,
  Reg,
  STATUS_IRQ_FACT,
} from '../src/index.ts';

const harnesses: DeviceHarness<typeof edu.state>[] = [];
const open = (memory = '64K') => {
  const h = new DeviceHarness(edu, { options: { memory }, ramSize: 64 * 1024 });
  harnesses.push(h);
  return h;
};
const track = (h: DeviceHarness<typeof edu.state>) => {
  harnesses.push(h);
  return h;
};
afterEach(() => {
  for (const h of harnesses.splice(0)) h.release();
});

/** Programs a DMA transfer the way a driver does: source, destination, count, then the command. */
function startDma(
  h: DeviceHarness<typeof edu.state>,
  src: number,
  dst: number,
  n: number,
  cmd = 0,
) {
  const regs = h.bar(0);
  regs.write64(Reg.DMA_SRC, src);
  regs.write64(Reg.DMA_DST, dst);
  regs.write64(Reg.DMA_COUNT, n);
  regs.write32(Reg.DMA_CMD, DMA_START | cmd);
}

describe('edu device', () => {
  it('identifies itself and inverts the liveness register', () => {
    const h = open();
    expect(h.config.read16(0x00)).toBe(0x1234);
    expect(h.config.read16(0x02)).toBe(0x11e8);
    const regs = h.bar(0);
    expect(regs.read32(Reg.ID)).toBe(EDU_ID);
    regs.write32(Reg.LIVENESS, 0x0f0f0f0f);
    expect(regs.read32(Reg.LIVENESS)).toBe(0xf0f0f0f0);
  });

  it('computes a factorial and raises its interrupt when asked to', () => {
    const h = open();
    const regs = h.bar(0);
    regs.write32(Reg.STATUS, STATUS_IRQ_FACT);
    regs.write32(Reg.FACTORIAL, 10);
    expect(regs.read32(Reg.FACTORIAL)).toBe(3628800);
    expect(regs.read32(Reg.IRQ_STATUS)).toBe(IRQ_FACT);
    expect(h.irqs.intx).toBe(1);
    regs.write32(Reg.IRQ_ACK, IRQ_FACT);
    expect(h.device.irq.intxAsserted).toBe(false);
  });

  it('raises MSI from IRQ_RAISE once MSI is enabled', () => {
    const h = open();
    h.enableMsi();
    h.bar(0).write32(Reg.IRQ_RAISE, 0x40);
    expect(h.irqs.msi).toEqual([1]);
    expect(h.bar(0).read32(Reg.IRQ_STATUS)).toBe(0x40);
  });

  it('copies guest RAM into its buffer and back by DMA, with an interrupt', async () => {
    const h = open();
    h.enableBusMaster();
    h.ram.set([1, 2, 3, 4, 5, 6, 7, 8], 0x1000);
    startDma(h, 0x1000, DMA_BUFFER + 16, 8);
    await h.settled();
    expect([...h.state.buffer.subarray(16, 24)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    startDma(h, DMA_BUFFER + 16, 0x3000, 8, DMA_TO_RAM | DMA_IRQ);
    await h.settled();
    expect([...h.ram.subarray(0x3000, 0x3008)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(h.bar(0).read32(Reg.DMA_CMD) & DMA_START).toBe(0);
    expect(h.bar(0).read32(Reg.IRQ_STATUS)).toBe(IRQ_DMA);
    expect(h.irqs.intx).toBe(1);
  });

  it('refuses DMA without bus mastering, and DMA outside guest RAM', async () => {
    const h = open();
    startDma(h, 0x1000, DMA_BUFFER, 8);
    await h.settled();
    expect(h.logs.join('\n')).toMatch(/bus mastering is disabled/);
    h.enableBusMaster();
    startDma(h, 64 * 1024 - 4, DMA_BUFFER, 8);
    await h.settled();
    expect(h.logs.at(-1)).toMatch(/outside mapped memory/);
    expect(h.bar(0).read32(Reg.DMA_CMD) & DMA_START).toBe(0);
  });

  it('serves BAR 2 from its device memory', () => {
    const h = open('64K');
    expect(h.bar(2).size).toBe(64 * 1024);
    h.bar(2).write32(0x100, 0xcafef00d);
    const memory = h.device.memories.get('memory')!;
    expect(memory.bytes(0x100, 4)).toEqual(Uint8Array.of(0x0d, 0xf0, 0xfe, 0xca));
  });

  it('migrates its registers, DMA buffer and device memory to a second instance', () => {
    const h = open();
    const regs = h.bar(0);
    regs.write32(Reg.LIVENESS, 7);
    regs.write32(Reg.FACTORIAL, 5);
    h.state.buffer.fill(0xab, 0, 100);
    for (let page = 0; page < 16; page += 3) h.bar(2).write32(page * 4096 + 8, page + 1);
    const dst = track(h.migrate({ chunk: 1000 }));
    expect(h.differences(dst)).toEqual([]);
    dst.run();
    expect(dst.bar(0).read32(Reg.LIVENESS)).toBe(~7 >>> 0);
    expect(dst.bar(0).read32(Reg.FACTORIAL)).toBe(120);
    expect(dst.bar(2).read32(9 * 4096 + 8)).toBe(10);
  });

  it('finishes at the destination a DMA started while the source was stopped', async () => {
    const h = open();
    h.enableBusMaster();
    h.ram.fill(0x5a, 0x2000, 0x2010);
    h.stop();
    startDma(h, 0x2000, DMA_BUFFER, 16, DMA_IRQ);
    const dst = track(h.migrate());
    expect(dst.bar(0).read32(Reg.DMA_CMD) & DMA_START).toBe(DMA_START);
    dst.run();
    await dst.settled();
    expect(dst.state.buffer.subarray(0, 16).every(b => b === 0x5a)).toBe(true);
    expect(dst.irqs.intx).toBe(1);
    expect(h.irqs.intx).toBe(0);
  });
});

describe('edu device, pre-copy', () => {
  it('sends memory written while it runs as dirty pages; the copy matches', () => {
    const h = open('64K');
    h.bar(2).write32(0x10, 1);
    const dst = track(
      h.migrate({
        chunk: 4096,
        whileRunning: () => {
          h.bar(2).write32(0x10, 2);
          h.bar(2).write32(5 * 4096, 3);
          h.bar(0).write32(Reg.LIVENESS, 4);
        },
      }),
    );
    expect(h.running).toBe(false);
    expect(h.differences(dst)).toEqual([]);
    expect(dst.bar(2).read32(0x10)).toBe(2);
    expect(dst.bar(2).read32(5 * 4096)).toBe(3);
    expect(dst.bar(0).read32(Reg.LIVENESS)).toBe(~4 >>> 0);
  });
});
