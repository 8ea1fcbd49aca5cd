// virtio-blk through a real `vfio-user-server --device virtio-blk --disk FILE`: a driver playing
// the guest (VirtioBlkDriver: split queue in mapped client RAM, posted notify writes, MSI-X
// eventfds) against Node reading and writing the same file itself (FileHandle, the same
// offsets, the same number in flight), both in this run. 4 KiB random reads and writes with 32
// in flight (IOPS), 1 MiB sequential reads with 8 in flight (MB/s). Writes are not flushed in
// either (both end in the page cache); the file is written in full first, so reads hit it too.
import { open, type FileHandle } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, VirtioBlkDriver } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { dir, fmt } from './common.js';

const SECTOR = 512;
const SMALL = 4096;
const LARGE = 1 << 20;
const diskMiB = Number(process.env.BENCH_BLK_MIB ?? 64);
const ops = Number(process.env.BENCH_BLK_OPS ?? 20000);
const disk = join(dir, 'blk.img');

/** An I/O: its kind, byte offset and length. */
interface Io {
  write: boolean;
  offset: number;
  len: number;
}

/** Fills the image with non-zero bytes, so neither side reads holes. */
function makeImage(): void {
  const b = Buffer.alloc(diskMiB << 20);
  for (let i = 0; i < b.length; i += SMALL) b.writeUInt32LE(i, i);
  writeFileSync(disk, b);
}

function randomIos(n: number, write: boolean): Io[] {
  const blocks = (diskMiB << 20) / SMALL;
  return Array.from({ length: n }, () => ({
    write,
    offset: Math.floor(Math.random() * blocks) * SMALL,
    len: SMALL,
  }));
}

function sequentialIos(passes: number): Io[] {
  const n = (diskMiB << 20) / LARGE;
  return Array.from({ length: passes * n }, (_, i) => ({
    write: false,
    offset: (i % n) * LARGE,
    len: LARGE,
  }));
}

/** Runs `ios` in order with `depth` of them in flight; returns seconds taken. */
async function run(ios: Io[], depth: number, one: (io: Io) => Promise<void>): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < ios.length) await one(ios[next++]);
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: depth }, worker));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function viaNode(fh: FileHandle): (io: Io) => Promise<void> {
  const buf = Buffer.alloc(LARGE);
  return async io => {
    const done = io.write
      ? (await fh.write(buf, 0, io.len, io.offset)).bytesWritten
      : (await fh.read(buf, 0, io.len, io.offset)).bytesRead;
    if (done !== io.len) throw new Error(`short I/O at ${io.offset}: ${done} bytes`);
  };
}

function viaDevice(d: VirtioBlkDriver): (io: Io) => Promise<void> {
  const data = new Uint8Array(SMALL).fill(0x5a);
  return async io => {
    const sector = io.offset / SECTOR;
    const r = io.write
      ? await d.request(0, VirtioBlkDriver.Type.OUT, sector, { data: data.subarray(0, io.len) })
      : await d.request(0, VirtioBlkDriver.Type.IN, sector, { readLen: io.len });
    if (r.status !== 0) throw new Error(`request at ${io.offset}: status ${r.status}`);
  };
}

const flows: { name: string; depth: number; ios: () => Io[]; unit: 'IOPS' | 'MB/s' }[] = [
  { name: '4K randread', depth: 32, ios: () => randomIos(ops, false), unit: 'IOPS' },
  { name: '4K randwrite', depth: 32, ios: () => randomIos(ops, true), unit: 'IOPS' },
  { name: '1M seqread', depth: 8, ios: () => sequentialIos(2), unit: 'MB/s' },
];

function rate(ios: Io[], secs: number, unit: 'IOPS' | 'MB/s'): number {
  if (unit === 'IOPS') return ios.length / secs;
  return ios.reduce((n, io) => n + io.len, 0) / 1e6 / secs;
}

makeImage();
const server = await startServer(join(dir, 'blk.sock'), [
  ...['--device', 'virtio-blk', '--disk', disk, '--log-level', 'error'],
]);
const client = await VfioUserClient.connect(server.socket);
const driver = await VirtioBlkDriver.start(client, { queueSize: 128, maxData: LARGE });
const fh = await open(disk, 'r+');
const node = viaNode(fh);
const device = viaDevice(driver);
console.log(
  `virtio-blk (${diskMiB} MiB image, ${ops} random I/Os per flow, ` +
    `${process.env.BENCH_PINNED ? 'all on CPU 1' : 'unpinned'}): device vs Node on the file`,
);
console.log('flow'.padEnd(13), 'depth'.padStart(5), 'device'.padStart(9), 'node'.padStart(9), 'x');
for (const f of flows) {
  const ios = f.ios();
  await run(ios.slice(0, 2000), f.depth, node); // warm-up of both paths (JIT, page cache)
  await run(ios.slice(0, 2000), f.depth, device);
  const nodeRate = rate(ios, await run(ios, f.depth, node), f.unit);
  const devRate = rate(ios, await run(ios, f.depth, device), f.unit);
  console.log(
    f.name.padEnd(13),
    String(f.depth).padStart(5),
    fmt(devRate, 0).padStart(9),
    fmt(nodeRate, 0).padStart(9),
    fmt(devRate / nodeRate, 2),
    f.unit,
  );
}
if (driver.unexpected !== 0) throw new Error(`${driver.unexpected} unexpected completions`);
driver.close();
await fh.close();
client.close();
await server.stop();
