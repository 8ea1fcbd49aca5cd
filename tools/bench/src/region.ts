// Region read round trips: our client against our server, beside a C client and a C stub
// server doing the same framing over the same kind of socket (the floor), all in one run.
import { join } from 'node:path';
import { startServer } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { buildC, startStub, cClient, stats, fmt, dir } from './common.js';

const N = Number(process.env.BENCH_N ?? 20000),
  WARM = 2000;

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
cClient(c.client, stubSock, WARM, 4, 0);
const rows: [string, { median: number; p99: number; perSec: number }][] = [];
rows.push(['C client  -> C stub server (floor)', cClient(c.client, stubSock, N, 4, 0)]);
rows.push(['C client  -> our server', cClient(c.client, server.socket, N, 4, 0)]);
rows.push(['our client -> C stub server', await ours(stubSock)]);
rows.push(['our client -> our server (read)', await ours(server.socket)]);
rows.push(['our client -> our server (write)', await ours(server.socket, true)]);
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
  'p99 µs'.padStart(9),
  'trips/s'.padStart(9),
  'x floor'.padStart(8),
);
for (const [name, r] of rows)
  console.log(
    name.padEnd(36),
    fmt(r.median, 2).padStart(10),
    fmt(r.p99, 2).padStart(9),
    fmt(r.perSec, 0).padStart(9),
    fmt(r.median / floor, 2).padStart(8),
  );
