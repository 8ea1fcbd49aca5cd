import { afterEach, describe, expect, it } from 'vitest';
import { DeviceHarness } from '@vfu/pci/testing';
import gpio, { IRQ_HIGH, IRQ_LOW, IRQ_PENDING, Reg } from '../src/index.ts';

const harnesses: DeviceHarness<typeof gpio.state>[] = [];
const open = () => {
  const h = new DeviceHarness(gpio);
  harnesses.push(h);
  return h;
};
afterEach(() => {
  for (const h of harnesses.splice(0)) h.release();
});

describe('gpio-idio16 device', () => {
  it('is the ACCES card with its registers in I/O BAR 2', () => {
    const h = open();
    expect(h.config.read16(0x00)).toBe(0x494f);
    expect(h.config.read16(0x02)).toBe(0x0dc8);
    expect(h.config.read32(0x18) & 1).toBe(1);
    expect(h.bar(2).size).toBe(8);
  });

  it('drives the 16 outputs through two byte registers', () => {
    const io = open().bar(2);
    io.write8(Reg.OUT0_7, 0x34);
    io.write8(Reg.OUT8_15, 0x12);
    expect(io.read8(Reg.OUT0_7)).toBe(0x34);
    expect(io.read8(Reg.OUT8_15)).toBe(0x12);
  });

  it('interrupts on an input change only while enabled; a write to IN0_7 clears it', () => {
    const h = open();
    const io = h.bar(2);
    h.control('inputs', 0x0001);
    expect(h.irqs.intx).toBe(0);
    expect(io.read8(Reg.IN0_7)).toBe(0x01);
    io.read8(Reg.IRQ_CTL); // reading enables the interrupt
    h.control('inputs', 0x0101);
    expect(io.read8(Reg.IRQ_STATUS)).toBe(IRQ_PENDING | IRQ_HIGH);
    expect(h.irqs.intx).toBe(1);
    io.write8(Reg.IN0_7, 0);
    expect(io.read8(Reg.IRQ_STATUS)).toBe(0);
    expect(h.device.irq.intxAsserted).toBe(false);
    io.write8(Reg.IRQ_CTL, 0); // writing disables it
    h.control('inputs', 0x0000);
    expect(io.read8(Reg.IRQ_STATUS)).toBe(0);
  });

  it('holds an input change while stopped and interrupts when it runs', () => {
    const h = open();
    h.bar(2).read8(Reg.IRQ_CTL);
    h.stop();
    h.control('inputs', 0x0002);
    expect(h.irqs.intx).toBe(0);
    h.run();
    expect(h.bar(2).read8(Reg.IRQ_STATUS)).toBe(IRQ_PENDING | IRQ_LOW);
    expect(h.irqs.intx).toBe(1);
  });

  it('migrates outputs, inputs and the interrupt enable', () => {
    const h = open();
    const io = h.bar(2);
    io.write8(Reg.OUT0_7, 0xa5);
    io.read8(Reg.IRQ_CTL);
    h.control('inputs', 0x8000);
    io.write8(Reg.IN0_7, 0); // the driver acknowledged the change
    const dst = h.migrate({ chunk: 3 });
    harnesses.push(dst);
    expect(h.differences(dst)).toEqual([]);
    dst.run();
    expect(dst.bar(2).read8(Reg.OUT0_7)).toBe(0xa5);
    expect(dst.bar(2).read8(Reg.IN8_15)).toBe(0x80);
    dst.control('inputs', 0x0000);
    expect(dst.irqs.intx).toBe(1);
  });

  it('migrates a pending status with its INTx line still asserted', () => {
    const h = open();
    h.bar(2).read8(Reg.IRQ_CTL);
    h.control('inputs', 0x0004);
    expect(h.config.read16(0x06) & 0x08).toBe(0x08);
    const dst = h.migrate();
    harnesses.push(dst);
    expect(h.differences(dst)).toEqual([]);
    expect(dst.device.irq.intxAsserted).toBe(true);
    expect(dst.config.read16(0x06) & 0x08).toBe(0x08); // STATUS.INTERRUPT
    expect(dst.irqs.intx).toBe(0);
    dst.run(); // the line is still up: the destination signals it
    expect(dst.irqs.intx).toBe(1);
    expect(dst.bar(2).read8(Reg.IRQ_STATUS)).toBe(IRQ_PENDING | IRQ_LOW);
    dst.bar(2).write8(Reg.IN0_7, 0); // the driver acknowledges it there
    expect(dst.device.irq.intxAsserted).toBe(false);
    expect(dst.config.read16(0x06) & 0x08).toBe(0);
  });

  it('an input change while stopped is reported at the destination of a migration', () => {
    const h = open();
    h.bar(2).read8(Reg.IRQ_CTL);
    h.stop();
    h.control('inputs', 0x0100);
    h.control('inputs', 0x0101);
    const dst = h.migrate();
    harnesses.push(dst);
    expect(dst.bar(2).read8(Reg.IRQ_STATUS)).toBe(0);
    dst.run();
    expect(dst.bar(2).read8(Reg.IRQ_STATUS)).toBe(IRQ_PENDING | IRQ_LOW | IRQ_HIGH);
    expect(dst.irqs.intx).toBe(1);
    expect(dst.device.irq.intxAsserted).toBe(true);
  });
});
