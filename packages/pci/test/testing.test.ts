import { afterEach, describe, expect, it } from 'vitest';
import { bar, defineDevice, msix, registers, u32 } from '@vfu/pci';
import { DeviceHarness } from '@vfu/pci/testing';

// A device that raises the MSI-X vector written to its doorbell.
const vectors = defineDevice({
  id: 'vectors',
  version: 1,
  description: 'raises the MSI-X vector written to offset 0',
  pci: { vendor: 0x1b36, device: 0x0102, classCode: 0xff0000 },
  capabilities: () => [msix({ vectors: 3, bar: 1 })],
  state: { last: u32 },
  bars: dev => ({
    0: bar(
      'mem32',
      registers(4096, dev.state, [
        {
          offset: 0,
          width: 4,
          read: s => s.last,
          write: (s, v) => {
            s.last = Number(v);
            dev.irq.raise(Number(v));
          },
        },
      ]),
    ),
  }),
});

const harnesses: DeviceHarness<typeof vectors.state>[] = [];
const open = () => {
  const h = new DeviceHarness(vectors);
  harnesses.push(h);
  return h;
};
afterEach(() => {
  for (const h of harnesses.splice(0)) h.release();
});

describe('DeviceHarness', () => {
  it('counts MSI-X deliveries per vector once the table is unmasked', () => {
    const h = open();
    h.bar(0).write32(0, 2);
    expect(h.irqs.msix).toEqual([0, 0, 0]);
    h.enableMsix();
    h.bar(0).write32(0, 2);
    h.bar(0).write32(0, 0);
    expect(h.irqs.msix).toEqual([1, 0, 1]);
    expect(h.irqs.intx).toBe(0);
  });

  it('migrates to a second instance that delivers on its own counters', () => {
    const h = open();
    h.enableMsix();
    h.bar(0).write32(0, 1);
    const dst = h.migrate({ chunk: 100 });
    harnesses.push(dst);
    expect(h.differences(dst)).toEqual([]);
    expect(dst.bar(0).read32(0)).toBe(1);
    dst.run();
    dst.bar(0).write32(0, 2);
    expect(dst.irqs.msix).toEqual([0, 0, 1]);
    expect(h.irqs.msix).toEqual([0, 1, 0]);
  });

  it('refuses accesses outside a region and devices without what is asked for', () => {
    const h = open();
    expect(() => h.bar(0).read(4095, 2)).toThrow(/outside 4096 bytes/);
    expect(() => h.config.write32(-4, 0)).toThrow(RangeError);
    expect(() => h.enableMsi()).toThrow(/no msi capability/);
    expect(() => h.rom()).toThrow(/no expansion ROM/);
    expect(() => h.control('x', 1)).toThrow(/no control x/);
    expect(() => new DeviceHarness(vectors, { ramSize: 1000 })).toThrow(/multiple of 4096/);
  });

  it('puts guest RAM at ramBase: DMA below it is refused', async () => {
    const h = new DeviceHarness(vectors, { ramBase: 0x10000, ramSize: 8192 });
    harnesses.push(h);
    h.enableBusMaster();
    await h.device.context.dma.write(0x10ff0, Uint8Array.of(9, 8, 7));
    expect([...h.ram.subarray(0xff0, 0xff3)]).toEqual([9, 8, 7]);
    await expect(h.device.context.dma.read(0xfff0, 4)).rejects.toThrow(/outside mapped memory/);
  });
});
