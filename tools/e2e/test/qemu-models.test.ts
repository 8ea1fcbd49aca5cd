// The real QEMU attaches to the gpio-idio16 and template models and drives them through qtest.
import { describe, it, expect, afterAll } from 'vitest';
import { Qemu, startServer } from '@vfu/qemu-harness';
import { Reg as Gpio } from '@vfu/device-gpio-idio16';
import { Reg as Tpl, TEMPLATE_ID } from '@vfu/device-template';
import { tempDir, until } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('QEMU drives the other device models', () => {
  it('gpio-idio16: ids, I/O BAR 2 through ports, outputs, IRQ control', async () => {
    const server = await startServer(tmp.path('gpio.sock'), ['--device', 'gpio-idio16', '--trace']);
    const q = await Qemu.start({ devices: [{ socket: server.socket, addr: '5.0' }] });
    try {
      const t = q.qtest,
        IO = 0xc000;
      expect(await t.cfgRead32(5, 0)).toBe(0x0dc8494f);
      expect(await t.cfgRead8(5, 0x3d)).toBe(1);
      expect((await t.cfgRead32(5, 0x18)) & 1).toBe(1); // BAR 2 is an I/O BAR
      await t.cfgWrite32(5, 0x18, IO);
      await t.cfgWrite16(5, 4, 1); // I/O decoding
      await t.outb(IO + Gpio.OUT0_7, 0x5a);
      await t.outb(IO + Gpio.OUT8_15, 0xa5);
      expect([await t.inb(IO + Gpio.OUT0_7), await t.inb(IO + Gpio.OUT8_15)]).toEqual([0x5a, 0xa5]);
      expect(await t.inb(IO + Gpio.IN0_7)).toBe(0);
      await t.inb(IO + Gpio.IRQ_CTL); // enables the interrupt, as the driver does
      expect(await t.inb(IO + Gpio.IRQ_STATUS)).toBe(0);
      expect(server.output()).toMatch(
        /REGION_WRITE cmd size=17 region=2 offset=0x0 count=1 data=5a/,
      );
    } catch (e) {
      console.error(q.stderr());
      throw e;
    } finally {
      await q.quit();
      await server.stop();
    }
  });

  it('template: BAR 0 registers, doorbell INTx at the IOAPIC, W1C status', async () => {
    const server = await startServer(tmp.path('tpl.sock'), ['--device', 'template']);
    const q = await Qemu.start({ devices: [{ socket: server.socket, addr: '6.0' }] });
    try {
      const t = q.qtest,
        BAR0 = 0xfe000000;
      expect(await t.cfgRead32(6, 0)).toBe(0x01011b36);
      await t.cfgWrite32(6, 0x10, BAR0);
      await t.cfgWrite16(6, 4, 2);
      expect(await t.readl(BAR0 + Tpl.ID)).toBe(TEMPLATE_ID);
      await t.writel(BAR0 + Tpl.SCRATCH, 0xfeedbeef);
      expect(await t.readl(BAR0 + Tpl.SCRATCH)).toBe(0xfeedbeef);
      await t.cmd('irq_intercept_in ioapic');
      await t.writel(BAR0 + Tpl.DOORBELL, 1);
      expect(await t.irq()).toMatch(/^IRQ raise \d+$/);
      expect(await until(async () => (await t.readl(BAR0 + Tpl.RINGS)) === 1, 'ring')).toBe(true);
      await t.writel(BAR0 + Tpl.IRQ_STATUS, 1);
      expect(await t.readl(BAR0 + Tpl.IRQ_STATUS)).toBe(0);
    } catch (e) {
      console.error(q.stderr());
      throw e;
    } finally {
      await q.quit();
      await server.stop();
    }
  });
});
