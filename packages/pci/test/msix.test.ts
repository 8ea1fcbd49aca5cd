import { describe, it, expect } from 'vitest';
import { defineDevice, PciDevice, msix, bar, registers } from '@vfu/pci';
import { eventfdCreate, eventfdRead, dupFd } from '@vfu/native';
import { Irq, IrqSetFlag as I } from '@vfu/protocol';

describe('MSI-X', () => {
  const def = defineDevice({
    id: 'x',
    version: 1,
    description: '',
    pci: { vendor: 1, device: 2, classCode: 0 },
    state: {},
    capabilities: () => [msix({ vectors: 4, bar: 1 })],
    bars: () => ({ 0: bar('mem32', registers(4096, {}, [])) }),
  });

  it('puts table and PBA in a BAR; a masked vector pends, and fires on unmask', () => {
    const d = new PciDevice(def);
    expect(d.bars[1]?.size).toBe(8192);
    expect(d.irq.count(Irq.MSIX)).toBe(4);
    const fds = [eventfdCreate(), eventfdCreate(), eventfdCreate(), eventfdCreate()];
    d.irq.set(
      { argsz: 20, flags: I.DATA_EVENTFD | I.ACTION_TRIGGER, index: Irq.MSIX, start: 0, count: 4 },
      fds.map(f => dupFd(f.fd)),
    ); // the kit owns (and closes) its copies
    const cap = d.caps.msix!;
    d.config.write(cap + 2, Uint8Array.of(0x00, 0x80)); // MSI-X enable
    const table = d.region(1)!;
    const ctrl = (v: number, masked: boolean) =>
      table.write(v * 16 + 12, Uint8Array.of(masked ? 1 : 0, 0, 0, 0));
    ctrl(2, false);
    d.irq.raise(2);
    expect(eventfdRead(fds[2].fd)).toBe(1n);
    ctrl(1, true); // masked at the table
    d.irq.raise(1);
    expect(eventfdRead(fds[1].fd)).toBeNull();
    const pba = new Uint8Array(1);
    table.read(4096, pba);
    expect(pba[0]).toBe(0b10);
    ctrl(1, false);
    expect(eventfdRead(fds[1].fd)).toBe(1n);
    table.read(4096, pba);
    expect(pba[0]).toBe(0);
    d.config.write(cap + 2, Uint8Array.of(0x00, 0xc0)); // function mask
    ctrl(3, false);
    d.irq.raise(3);
    expect(eventfdRead(fds[3].fd)).toBeNull();
    d.config.write(cap + 2, Uint8Array.of(0x00, 0x80));
    expect(eventfdRead(fds[3].fd)).toBe(1n);
    d.irq.releaseAll();
    fds.forEach(f => f.close());
  });

  it('reset puts the table back to power-on and forgets masks; the eventfds stay', () => {
    const d = new PciDevice(def);
    const fd = eventfdCreate();
    const trigger = { argsz: 20, index: Irq.MSIX, start: 0, count: 1 };
    const flags = I.DATA_EVENTFD | I.ACTION_TRIGGER;
    d.irq.set({ ...trigger, flags }, [dupFd(fd.fd)]);
    const cap = d.caps.msix!;
    const table = d.region(1)!;
    const entry = new Uint8Array(16);
    table.read(0, entry);
    expect(entry[12]).toBe(1); // power-on: the mask bit reads set
    d.config.write(cap + 2, Uint8Array.of(0x00, 0x80)); // MSI-X enable
    // QEMU emulates the table and never writes the device's: an unwritten vector delivers.
    d.irq.raise(0);
    expect(eventfdRead(fd.fd)).toBe(1n);
    table.write(0, Uint8Array.of(0x00, 0x10, 0xe0, 0xfe, 0, 0, 0, 0, 0x22, 0x40, 0, 0, 1, 0, 0, 0));
    d.irq.raise(0); // masked by the client: it pends
    expect(eventfdRead(fd.fd)).toBeNull();
    d.reset();
    table.read(0, entry);
    expect([...entry]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    const pba = new Uint8Array(1);
    table.read(4096, pba);
    expect(pba[0]).toBe(0); // what pended before reset is gone
    d.config.write(cap + 2, Uint8Array.of(0x00, 0x80));
    expect(eventfdRead(fd.fd)).toBeNull();
    d.irq.raise(0);
    expect(eventfdRead(fd.fd)).toBe(1n); // the eventfd bound before reset still delivers
    d.irq.releaseAll();
    fd.close();
  });

  it('a stopped device signals nothing; what it raised goes out when it runs, once', () => {
    const d = new PciDevice(def);
    const fd = eventfdCreate();
    const flags = I.DATA_EVENTFD | I.ACTION_TRIGGER;
    d.irq.set({ argsz: 20, flags, index: Irq.MSIX, start: 0, count: 1 }, [dupFd(fd.fd)]);
    d.config.write(d.caps.msix! + 2, Uint8Array.of(0x00, 0x80)); // MSI-X enable
    d.setRunning(false);
    d.irq.raise(0);
    expect(eventfdRead(fd.fd)).toBeNull();
    const pba = new Uint8Array(1);
    d.region(1)!.read(4096, pba);
    expect(pba[0]).toBe(1); // pending, as a masked vector would be
    d.setRunning(true);
    expect(eventfdRead(fd.fd)).toBe(1n);
    d.setRunning(false);
    d.setRunning(true);
    expect(eventfdRead(fd.fd)).toBeNull();
    d.irq.releaseAll();
    fd.close();
  });
});
