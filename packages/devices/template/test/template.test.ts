import { afterEach, describe, expect, it } from 'vitest';
import { DeviceHarness } from '@vfu/pci/testing';
import template, { Reg, TEMPLATE_ID } from '../src/index.ts';

let h: DeviceHarness<typeof template.state>;
const open = () => {
  h = new DeviceHarness(template);
  return h;
};
afterEach(() => h?.release());

describe('template device', () => {
  it('answers with its PCI identity and its ID register', () => {
    const { config } = open();
    expect(config.read16(0x00)).toBe(0x1b36);
    expect(config.read16(0x02)).toBe(0x0101);
    expect(h.bar(0).read32(Reg.ID)).toBe(TEMPLATE_ID);
  });

  it('keeps what is written to SCRATCH; writes to ID are ignored', () => {
    const regs = open().bar(0);
    regs.write32(Reg.SCRATCH, 0xdeadbeef);
    regs.write32(Reg.ID, 0);
    expect(regs.read32(Reg.SCRATCH)).toBe(0xdeadbeef);
    expect(regs.read32(Reg.ID)).toBe(TEMPLATE_ID);
  });

  it('raises INTx on the doorbell; status is write-1-to-clear', () => {
    const regs = open().bar(0);
    regs.write32(Reg.DOORBELL, 1);
    expect(h.irqs.intx).toBe(1);
    expect(regs.read32(Reg.RINGS)).toBe(1);
    expect(regs.read32(Reg.IRQ_STATUS)).toBe(1);
    expect(h.device.irq.intxAsserted).toBe(true);
    regs.write32(Reg.IRQ_STATUS, 1);
    expect(regs.read32(Reg.IRQ_STATUS)).toBe(0);
    expect(h.device.irq.intxAsserted).toBe(false);
  });

  it('delivers INTx again only after the client unmasks it', () => {
    const regs = open().bar(0);
    regs.write32(Reg.DOORBELL, 1);
    regs.write32(Reg.DOORBELL, 1);
    expect(h.irqs.intx).toBe(1);
    h.unmaskIntx();
    expect(h.irqs.intx).toBe(2);
  });

  it('signals MSI vector 0 once MSI is enabled, and no INTx', () => {
    const regs = open().bar(0);
    h.enableMsi();
    regs.write32(Reg.DOORBELL, 1);
    regs.write32(Reg.DOORBELL, 1);
    expect(h.irqs.msi).toEqual([2]);
    expect(h.irqs.intx).toBe(0);
  });

  it('holds a doorbell rung while stopped until it runs again', () => {
    const regs = open().bar(0);
    h.enableMsi();
    h.stop();
    regs.write32(Reg.DOORBELL, 1);
    expect(regs.read32(Reg.RINGS)).toBe(0);
    expect(h.irqs.msi).toEqual([0]);
    h.run();
    expect(regs.read32(Reg.RINGS)).toBe(1);
    expect(h.irqs.msi).toEqual([1]);
  });

  it('migrates to a second instance: registers, config and interrupts carry on', () => {
    const regs = open().bar(0);
    h.enableMsi();
    regs.write32(Reg.SCRATCH, 0x1234);
    regs.write32(Reg.DOORBELL, 1);
    const dst = h.migrate({ chunk: 7 });
    try {
      expect(h.differences(dst)).toEqual([]);
      dst.run();
      const moved = dst.bar(0);
      expect(moved.read32(Reg.SCRATCH)).toBe(0x1234);
      expect(moved.read32(Reg.RINGS)).toBe(1);
      moved.write32(Reg.DOORBELL, 1);
      expect(dst.irqs.msi).toEqual([1]);
      expect(moved.read32(Reg.RINGS)).toBe(2);
    } finally {
      dst.release();
    }
  });

  it('a doorbell rung while stopped is served at the destination of a migration', () => {
    const regs = open().bar(0);
    h.enableMsi();
    h.stop();
    regs.write32(Reg.DOORBELL, 1);
    regs.write32(Reg.DOORBELL, 1);
    const dst = h.migrate();
    try {
      expect(dst.bar(0).read32(Reg.RINGS)).toBe(0);
      dst.run();
      expect(dst.bar(0).read32(Reg.RINGS)).toBe(2);
      expect(dst.irqs.msi).toEqual([2]);
    } finally {
      dst.release();
    }
  });

  it('an INTx raised before a migration is still asserted after it', () => {
    const regs = open().bar(0);
    regs.write32(Reg.DOORBELL, 1);
    expect(h.irqs.intx).toBe(1);
    const dst = h.migrate();
    try {
      expect(h.differences(dst)).toEqual([]);
      expect(dst.device.irq.intxAsserted).toBe(true);
      dst.run();
      expect(dst.irqs.intx).toBe(1);
      dst.bar(0).write32(Reg.IRQ_STATUS, 1);
      expect(dst.device.irq.intxAsserted).toBe(false);
    } finally {
      dst.release();
    }
  });

  it('finds a difference when one instance changes after the migration', () => {
    open();
    const dst = h.migrate();
    try {
      dst.run();
      dst.bar(0).write32(Reg.SCRATCH, 5);
      expect(h.differences(dst)).toEqual(['state.scratch: 0 != 5']);
    } finally {
      dst.release();
    }
  });

  it('reads beyond BAR 0 are refused by the harness, as the server refuses them', () => {
    expect(() => open().bar(0).read32(4096)).toThrow(RangeError);
    expect(() => h.bar(1)).toThrow(/no BAR 1/);
  });
});
