// The main job: QEMU attaches to an emulated edu device and drives it; then a device under load
// is live-migrated between two servers, and the report is printed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qemu, startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate, memoryWorkload, describe } from '@vfu/vfu-migrate';
import { Reg, EDU_ID, DMA_BUFFER, DMA_START, DMA_TO_RAM } from '@vfu/device-edu';

const say = (s: string) => process.stdout.write(`${s}\n`);
const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

export async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'vfu-demo-'));
  const servers: ServerProcess[] = [];
  try {
    say('== 1. QEMU attaches to the edu device over vfio-user ==');
    const edu = await startServer(join(dir, 'edu.sock'), ['--device', 'edu', '--memory', '16M']);
    servers.push(edu);
    say(edu.output().trim());
    const q = await Qemu.start({ devices: [{ socket: edu.socket, addr: '4.0' }] });
    try {
      const t = q.qtest,
        BAR0 = 0xfd000000;
      say(`QEMU sees vendor:device ${hex(await t.cfgRead32(4, 0))} at 00:04.0`);
      await t.cfgWrite32(4, 0x10, BAR0);
      await t.cfgWrite16(4, 4, 6);
      say(`edu id register ${hex(await t.readl(BAR0 + Reg.ID))} (expected ${hex(EDU_ID)})`);
      await t.writel(BAR0 + Reg.FACTORIAL, 12);
      await new Promise(r => setTimeout(r, 20));
      say(`factorial(12) computed by the device: ${await t.readl(BAR0 + Reg.FACTORIAL)}`);
      await t.memWrite(0x100000, Buffer.from('hello from guest RAM'));
      await t.writeq(BAR0 + Reg.DMA_SRC, 0x100000);
      await t.writeq(BAR0 + Reg.DMA_DST, DMA_BUFFER);
      await t.writeq(BAR0 + Reg.DMA_COUNT, 20);
      await t.writel(BAR0 + Reg.DMA_CMD, DMA_START);
      await new Promise(r => setTimeout(r, 20));
      await t.writeq(BAR0 + Reg.DMA_SRC, DMA_BUFFER);
      await t.writeq(BAR0 + Reg.DMA_DST, 0x200000);
      await t.writel(BAR0 + Reg.DMA_CMD, DMA_START | DMA_TO_RAM);
      await new Promise(r => setTimeout(r, 20));
      say(`DMA guest RAM -> device -> guest RAM: "${(await t.memRead(0x200000, 20)).toString()}"`);
      await t.cmd('irq_intercept_in ioapic');
      await t.writel(BAR0 + Reg.IRQ_RAISE, 1);
      say(`interrupt seen by QEMU: ${await t.irq()}`);
    } finally {
      await q.quit();
    }

    say('\n== 2. Live migration of an edu device under load (v2 protocol) ==');
    const src = await startServer(join(dir, 'src.sock'), [
      '--device',
      'edu',
      '--memory',
      '64M',
      '--on-disconnect',
      'keep',
    ]);
    const dst = await startServer(join(dir, 'dst.sock'), [
      '--device',
      'edu',
      '--memory',
      '64M',
      '--on-disconnect',
      'keep',
    ]);
    servers.push(src, dst);
    const a = await VfioUserClient.connect(src.socket),
      b = await VfioUserClient.connect(dst.socket);
    await a.write32(0, Reg.LIVENESS, 0x600dcafe);
    const wl = await memoryWorkload(a, 256);
    const rep = await migrate(a, b, { workload: wl.round, downtimeLimitMs: 50, maxIterations: 5 });
    wl.close();
    say(describe(rep));
    const same =
      (await a.read32(0, Reg.LIVENESS)) === (await b.read32(0, Reg.LIVENESS)) &&
      Buffer.compare(
        Buffer.from(await a.regionRead(2, 0, 1 << 20)),
        Buffer.from(await b.regionRead(2, 0, 1 << 20)),
      ) === 0;
    say(`destination registers and device memory equal the source's: ${same ? 'yes' : 'NO'}`);
    a.close();
    b.close();
    return rep.outcome === 'completed' && same ? 0 : 1;
  } catch (e) {
    process.stderr.write(`demo failed: ${(e as Error).stack}\n`);
    for (const s of servers) process.stderr.write(s.output());
    return 1;
  } finally {
    await Promise.all(servers.map(s => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
