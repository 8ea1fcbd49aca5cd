// The real QEMU 11 attaches to our server (edu) and drives it through qtest.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Qemu, startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { Reg, EDU_ID, DMA_BUFFER, DMA_START, DMA_TO_RAM, DMA_IRQ, IRQ_DMA } from '@vfu/device-edu';
import { writeFileSync } from 'node:fs';
import { tempDir, until, clientGone } from './helpers.ts';

const DEV = 4; // PCI slot 00:04.0
const BAR0 = 0xfd000000,
  BAR2 = 0xe0000000;

async function program(q: Qemu): Promise<void> {
  const t = q.qtest;
  await t.cfgWrite32(DEV, 0x10, BAR0);
  await t.cfgWrite32(DEV, 0x18, BAR2);
  await t.cfgWrite32(DEV, 0x1c, 0);
  await t.cfgWrite16(DEV, 0x04, 0x0006); // memory decoding + bus master
}

describe('QEMU attaches to the edu device', () => {
  const tmp = tempDir();
  const ctl = tmp.path('edu.ctl');
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServer(tmp.path('edu.sock'), [
      '--device',
      'edu',
      '--memory',
      '1M',
      '--trace',
      '--control',
      ctl,
    ]);
  });
  afterAll(async () => {
    await server?.stop();
    tmp.cleanup();
  });

  // Mapped BAR pages are written without any message.
  it('ids, registers, INTx, DMA both ways, mapped BAR pages', async () => {
    const q = await Qemu.start({ devices: [{ socket: server.socket, addr: `${DEV}.0` }] });
    try {
      const t = q.qtest;
      expect(await t.cfgRead32(DEV, 0x00)).toBe(0x11e81234);
      expect(await t.cfgRead8(DEV, 0x08)).toBe(0x10); // revision
      expect((await t.cfgRead32(DEV, 0x08)) >>> 8).toBe(0x00ff00); // class
      expect(await t.cfgRead8(DEV, 0x3d)).toBe(1); // INTA#
      expect((await t.cfgRead32(DEV, 0x18)) & 0xf).toBe(0b1100); // 64-bit prefetchable
      await program(q);
      expect(await t.cfgRead32(DEV, 0x10)).toBe(BAR0);

      expect(await t.readl(BAR0 + Reg.ID)).toBe(EDU_ID);
      // BAR 2 is mapped by QEMU: these accesses must not become messages. (Done before any INTx:
      // QEMU's vfio-pci turns BAR mmaps off while INTx is pending and for ~1 s after.)
      const count = () =>
        (server.output().match(/REGION_(READ|WRITE) cmd.*region=2 /g) ?? []).length;
      const before = count();
      await t.writel(BAR2 + 0x1000, 0xcafef00d);
      expect(await t.readl(BAR2 + 0x1000)).toBe(0xcafef00d);
      expect(count()).toBe(before);
      await t.writel(BAR0 + Reg.LIVENESS, 0x12345678);
      expect(await t.readl(BAR0 + Reg.LIVENESS)).toBe(~0x12345678 >>> 0);
      await t.writel(BAR0 + Reg.FACTORIAL, 10);
      expect(
        await until(async () => ((await t.readl(BAR0 + Reg.STATUS)) & 1) === 0, 'factorial'),
      ).toBe(true);
      expect(await t.readl(BAR0 + Reg.FACTORIAL)).toBe(3628800);

      // Interrupts reach QEMU: the INTx line of the device rises at the IOAPIC.
      await t.cmd('irq_intercept_in ioapic');
      await t.writel(BAR0 + Reg.IRQ_RAISE, 0x40);
      expect(await t.irq(/^IRQ raise \d+/)).toMatch(/^IRQ raise \d+$/);
      expect(await t.readl(BAR0 + Reg.IRQ_STATUS)).toBe(0x40);
      await t.writel(BAR0 + Reg.IRQ_ACK, 0x40);
      expect(await t.readl(BAR0 + Reg.IRQ_STATUS)).toBe(0);

      // DMA guest RAM -> device buffer -> other guest RAM.
      const data = Buffer.from('vfio-user DMA through guest RAM!');
      await t.memWrite(0x100000, data);
      await t.writeq(BAR0 + Reg.DMA_SRC, 0x100000);
      await t.writeq(BAR0 + Reg.DMA_DST, DMA_BUFFER + 64);
      await t.writeq(BAR0 + Reg.DMA_COUNT, data.length);
      await t.writel(BAR0 + Reg.DMA_CMD, DMA_START);
      await until(
        async () => ((await t.readl(BAR0 + Reg.DMA_CMD)) & DMA_START) === 0,
        'DMA to device',
      );
      await t.writeq(BAR0 + Reg.DMA_SRC, DMA_BUFFER + 64);
      await t.writeq(BAR0 + Reg.DMA_DST, 0x200000);
      await t.writel(BAR0 + Reg.DMA_CMD, DMA_START | DMA_TO_RAM | DMA_IRQ);
      await until(
        async () => ((await t.readl(BAR0 + Reg.DMA_CMD)) & DMA_START) === 0,
        'DMA to RAM',
      );
      expect((await t.memRead(0x200000, data.length)).toString()).toBe(data.toString());
      expect(await t.readl(BAR0 + Reg.IRQ_STATUS)).toBe(IRQ_DMA);
    } catch (e) {
      console.error(q.stderr(), server.output().slice(-3000));
      writeFileSync(tmp.path('../vfu-e2e-edu-server.log'), server.output());
      throw e;
    } finally {
      await q.quit();
    }

    // The device memory the mapped write changed is the server's own: a client reads it by message.
    await clientGone(ctl, 1);
    expect(server.output()).toMatch(/client disconnected/);
    const c = await VfioUserClient.connect(server.socket);
    expect(await c.read32(2, 0x1000)).toBe(0xcafef00d);
    c.close();
  });

  // QEMU 11.1.3 speaks the spec's layout.
  it("reaches QEMU's fd-less memory through DMA_READ and DMA_WRITE", async () => {
    const q = await Qemu.start({ devices: [{ socket: server.socket, addr: `${DEV}.0` }] });
    try {
      const t = q.qtest;
      await program(q);
      // QEMU maps its BIOS (read-only) and our own BAR 2 (as a peer-to-peer alias) without fds:
      // the device reaches them only by asking QEMU.
      const BIOS = 0xfffffff0;
      const go = async (src: number, dst: number, cmd: number) => {
        await t.writeq(BAR0 + Reg.DMA_SRC, src);
        await t.writeq(BAR0 + Reg.DMA_DST, dst);
        await t.writeq(BAR0 + Reg.DMA_COUNT, 16);
        await t.writel(BAR0 + Reg.DMA_CMD, cmd);
        await until(async () => ((await t.readl(BAR0 + Reg.DMA_CMD)) & DMA_START) === 0, 'DMA');
      };
      const before = server.output().length;
      await go(BIOS, DMA_BUFFER, DMA_START);
      await go(DMA_BUFFER, BAR2 + 0x2000, DMA_START | DMA_TO_RAM);
      const bios = await t.memRead(BIOS, 16);
      expect(bios.some(b => b !== 0)).toBe(true);
      expect((await t.memRead(BAR2 + 0x2000, 16)).equals(bios)).toBe(true);
      const trace = server.output().slice(before);
      // 16 bytes of data after a 16-byte echo
      expect(trace).toMatch(/<- #\d+ DMA_READ reply size=32/);
      expect(trace).toMatch(/<- #\d+ DMA_WRITE reply size=16/);
      expect(trace).not.toMatch(/error=/);
    } catch (e) {
      console.error(q.stderr());
      throw e;
    } finally {
      await q.quit();
    }
    await clientGone(ctl, 3);
    expect((server.output().match(/client disconnected/g) ?? []).length).toBeGreaterThanOrEqual(3);
  });

  it('serves the next QEMU after one quits', async () => {
    for (let i = 0; i < 2; i++) {
      const q = await Qemu.start({ devices: [{ socket: server.socket, addr: `${DEV}.0` }] });
      try {
        expect(await q.qtest.cfgRead32(DEV, 0x00)).toBe(0x11e81234);
        await program(q);
        expect(await q.qtest.readl(BAR0)).toBe(EDU_ID);
      } finally {
        await q.quit();
      }
      await clientGone(ctl, 4 + i);
      expect((server.output().match(/client disconnected/g) ?? []).length).toBeGreaterThanOrEqual(
        4 + i,
      );
    }
  });
});
