// A guest's view: one real QEMU (qtest accelerator) with two edu devices, ours over
// vfio-user-pci and QEMU's built-in `-device edu`, each programmed at its own BAR 0. The same
// qtest loops run against both: MMIO read latency (`readl` of the ID register, one at a time)
// and the doorbell rate (`writel` of the liveness register, pipelined: qtest answers each
// write in order, so a batch in flight is how fast QEMU gets writes to the device). The ratio
// ours / built-in is what a guest pays for the device living in another process. A `readl` of
// guest RAM is qtest's own cost, reported beside (neither device is involved in it).
import { join } from 'node:path';
import { Qemu, startServer, type Qtest } from '@vfu/qemu-harness';
import { dir, fmt, median } from './common.js';

/** edu's registers (QEMU docs/specs/edu.rst): the ID register and the liveness check. */
const ID = 0x00,
  LIVENESS = 0x04;
const OURS = { slot: 4, bar0: 0xfd000000 },
  BUILTIN = { slot: 5, bar0: 0xfe000000 };
const RAM = 0x100000;
const reads = Number(process.env.BENCH_GUEST_READS ?? 2000);
const writes = Number(process.env.BENCH_GUEST_WRITES ?? 20000);
const ROUNDS = 3;

/** Programs BAR 0 and turns on memory decoding (the firmware's part, done through qtest). */
async function program(t: Qtest, dev: { slot: number; bar0: number }): Promise<void> {
  await t.cfgWrite32(dev.slot, 0x10, dev.bar0);
  await t.cfgWrite16(dev.slot, 0x04, 0x0002);
}

/** Median µs of `n` MMIO reads at `addr`, one after the other. */
async function readLatency(t: Qtest, addr: number, n: number): Promise<number> {
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await t.readl(addr);
    lat.push((performance.now() - s) * 1000);
  }
  return median(lat);
}

/** Writes per second to `addr`, `n` of them with up to `depth` in flight. */
async function writeRate(t: Qtest, addr: number, n: number, depth = 256): Promise<number> {
  const s = performance.now();
  for (let done = 0; done < n; ) {
    const batch: Promise<void>[] = [];
    for (let i = 0; i < depth && done < n; i++, done++) batch.push(t.writel(addr, done));
    await Promise.all(batch);
  }
  return n / ((performance.now() - s) / 1000);
}

/** One read and one write measurement against the device at `bar0`. */
async function measure(t: Qtest, bar0: number): Promise<{ readUs: number; writesPerSec: number }> {
  const readUs = await readLatency(t, bar0 + ID, reads);
  const writesPerSec = await writeRate(t, bar0 + LIVENESS, writes);
  return { readUs, writesPerSec };
}

const server = await startServer(join(dir, 'guest-edu.sock'), [
  '--device',
  'edu',
  '--log-level',
  'error',
]);
const q = await Qemu.start({
  devices: [{ socket: server.socket, addr: `${OURS.slot}.0` }],
  extraArgs: ['-device', `edu,addr=${BUILTIN.slot}.0`],
});
try {
  const t = q.qtest;
  await program(t, OURS);
  await program(t, BUILTIN);
  for (const dev of [OURS, BUILTIN]) {
    const id = await t.readl(dev.bar0 + ID);
    if (id >>> 16 !== 0x0100)
      throw new Error(`slot ${dev.slot}: not edu (ID 0x${id.toString(16)})`);
    await t.writel(dev.bar0 + LIVENESS, 0x1234);
    const back = await t.readl(dev.bar0 + LIVENESS);
    if (back !== ~0x1234 >>> 0)
      throw new Error(`slot ${dev.slot}: liveness reads 0x${back.toString(16)}`);
  }
  const ours: { readUs: number; writesPerSec: number }[] = [],
    builtin: typeof ours = [],
    ram: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    ours.push(await measure(t, OURS.bar0));
    builtin.push(await measure(t, BUILTIN.bar0));
    ram.push(await readLatency(t, RAM, reads));
  }
  const pick = (xs: typeof ours, k: 'readUs' | 'writesPerSec') => median(xs.map(x => x[k]));
  const o = { read: pick(ours, 'readUs'), write: pick(ours, 'writesPerSec') },
    b = { read: pick(builtin, 'readUs'), write: pick(builtin, 'writesPerSec') };
  console.log(
    `a guest's view (QEMU qtest, ${reads} reads / ${writes} writes, median of ${ROUNDS} ` +
      `rounds; qtest's own readl of guest RAM: ${fmt(median(ram), 1)} µs)`,
  );
  const q0 = median(ram);
  const row = (name: string, read: string, beyond: string, write: string) =>
    console.log(name.padEnd(22), read.padStart(9), beyond.padStart(13), write.padStart(10));
  row('edu', 'readl µs', 'beyond qtest', 'writel/s');
  row('ours (vfio-user-pci)', fmt(o.read), fmt(o.read - q0), fmt(o.write, 0));
  row('built-in (-device edu)', fmt(b.read), fmt(b.read - q0), fmt(b.write, 0));
  row('ours / built-in', fmt(o.read / b.read, 2), '', fmt(o.write / b.write, 2));
} finally {
  await q.quit();
  await server.stop();
}
