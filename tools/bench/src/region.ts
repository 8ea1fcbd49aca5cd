// Region accesses: round trips one at a time, posted (NO_REPLY) writes back to back,
// REGION_WRITE_MULTI and a pipeline of answered writes and reads, each by the C client against
// the C stub server (the floor) and against our server in the same run; round trips by our
// client too.
import { join } from 'node:path';
import { startServer } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import {
  buildC,
  startStub,
  cClient,
  stats,
  fmt,
  dir,
  rssMiB,
  median,
  type ClientMode,
} from './common.js';

const N = Number(process.env.BENCH_N ?? 20000),
  WARM = 2000;
/** Posted-write batch sizes; BENCH_POSTED=1k,100k skips the 10M batch (~5-10 s at our end). */
const POSTED = (process.env.BENCH_POSTED ?? '1k,100k,10M').split(',');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const countOf = (s: string) =>
  Number.parseFloat(s) * (s.endsWith('M') ? 1e6 : s.endsWith('k') ? 1e3 : 1);

async function ours(socket: string, write = false) {
  const c = await VfioUserClient.connect(socket);
  const op = write ? () => c.write32(0, 4, 7) : () => c.read32(0, 0);
  for (let i = 0; i < WARM; i++) await op();
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await op();
    lat.push((performance.now() - t) * 1000);
  }
  const r = stats(lat, performance.now() - t0);
  c.close();
  return r;
}

const c = buildC();
const stubSock = join(dir, 'stub.sock');
const stub = await startStub(c.stub, stubSock);
const server = await startServer(join(dir, 'ours.sock'), [
  '--device',
  'template',
  '--log-level',
  'error',
]);
const pid = server.proc.pid!;
const rssStart = rssMiB(pid);
cClient(c.client, stubSock, WARM, 4, 0);
cClient(c.client, server.socket, WARM, 4, 0);

const rows: [string, { median: number; p90: number; p99: number; perSec: number }][] = [];
rows.push(['C client  -> C stub server (floor)', cClient(c.client, stubSock, N, 4, 0)]);
rows.push(['C client  -> our server', cClient(c.client, server.socket, N, 4, 0)]);
rows.push(['our client -> C stub server', await ours(stubSock)]);
rows.push(['our client -> our server (read)', await ours(server.socket)]);
rows.push(['our client -> our server (write)', await ours(server.socket, true)]);

/**
 * Median rate over ROUNDS runs of one C client mode, at the stub and at our server, after one
 * unmeasured run of 20k at each (JIT warm-up: a guest's doorbells hit a server long running).
 */
function rates(mode: ClientMode, n: number, count: number, rounds = ROUNDS) {
  for (const sock of [stubSock, server.socket]) cClient(c.client, sock, 20000, count, 0, mode, 4);
  const run = (sock: string) =>
    median(
      Array.from({ length: rounds }, () => cClient(c.client, sock, n, count, 0, mode, 4).perSec),
    );
  return { floor: run(stubSock), ours: run(server.socket) };
}
const flows: [string, string, { floor: number; ours: number }][] = [];
for (const b of POSTED) {
  const n = countOf(b);
  flows.push([
    `posted 4-byte REGION_WRITE, ${b}`,
    'writes/s',
    rates('post', n, 4, n >= 1e7 ? 1 : ROUNDS),
  ]);
}
flows.push(['REGION_WRITE_MULTI x8, 20k', 'writes/s', rates('multi', 20000, 4)]);
flows.push(['write+read pipeline, 64 deep, 100k', 'msgs/s', rates('mixed', 100000, 4)]);
const rssEnd = rssMiB(pid);
// The server still answers on a fresh connection: none of the above took it down.
cClient(c.client, server.socket, 10, 4, 0);
stub.kill();
await server.stop();

const floor = rows[0][1].median;
const pinned = process.env.BENCH_PINNED;
const pinning = pinned ? `every process on CPU ${pinned}` : 'unpinned';
console.log(
  `region round trips: 4-byte REGION_READ/WRITE, ${N} each after ${WARM} warm-up, one at a time, ` +
    pinning,
);
console.log(
  'pairing'.padEnd(36),
  'median µs'.padStart(10),
  'p90 µs'.padStart(9),
  'p99 µs'.padStart(9),
  'trips/s'.padStart(9),
  'x floor'.padStart(8),
);
for (const [name, r] of rows)
  console.log(
    name.padEnd(36),
    fmt(r.median, 2).padStart(10),
    fmt(r.p90, 2).padStart(9),
    fmt(r.p99, 2).padStart(9),
    fmt(r.perSec, 0).padStart(9),
    fmt(r.median / floor, 2).padStart(8),
  );
console.log(
  `\nC client, back to back (median of ${ROUNDS} rounds; 10M: one round); ` +
    "ours / floor = share of the C stub's rate",
);
console.log(
  'flow'.padEnd(36),
  'unit'.padEnd(9),
  'C stub'.padStart(12),
  'ours'.padStart(12),
  'ours/floor'.padStart(11),
);
for (const [name, unit, r] of flows)
  console.log(
    name.padEnd(36),
    unit.padEnd(9),
    fmt(r.floor, 0).padStart(12),
    fmt(r.ours, 0).padStart(12),
    fmt(r.ours / r.floor, 3).padStart(11),
  );
console.log(
  `our server's RSS: ${fmt(rssStart)} MiB before, ${fmt(rssEnd)} MiB after; ` +
    'connections lost: 0 (every client run got its final reply)',
);
