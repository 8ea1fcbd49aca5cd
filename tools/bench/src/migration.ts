// Migration of edu with device memory: data-phase throughput and downtime, idle and with a
// workload dirtying memory during pre-copy; the floor is the C client pulling the same number
// of bytes from the C stub in 1 MiB REGION_READs (vfio-user framing over the same socket kind).
import { join } from 'node:path';
import { startServer } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate, memoryWorkload } from '@vfu/vfu-migrate';
import { buildC, startStub, cClient, fmt, dir } from './common.js';

const sizes = (process.env.BENCH_SIZES ?? '64M,1G').split(',');
const bytesOf = (s: string) => Number(s.slice(0, -1)) * (s.endsWith('G') ? 2 ** 30 : 2 ** 20);
const c = buildC();
const stubSock = join(dir, 'stub-m.sock');
const stub = await startStub(c.stub, stubSock);
console.log(
  'migration of edu (v2): data phase GiB/s and downtime; ' +
    'floor = C pulling the same bytes in 1 MiB messages',
);
console.log(
  'memory'.padEnd(8),
  'load'.padEnd(9),
  'GiB/s'.padStart(7),
  'floor'.padStart(7),
  'x floor'.padStart(8),
  'downtime ms'.padStart(12),
  '(stop-copy'.padStart(11),
  'resume)'.padStart(8),
  'rounds'.padStart(7),
  'moved MiB'.padStart(10),
);
let k = 0;
for (const size of sizes) {
  const bytes = bytesOf(size);
  const f = cClient(c.client, stubSock, Math.ceil(bytes / 2 ** 20), 1 << 20, 0);
  const floor = f.bytes / 2 ** 30 / f.secs;
  for (const load of ['idle', 'dirtying']) {
    const a = await startServer(join(dir, `a${k}.sock`), [
      '--device',
      'edu',
      '--memory',
      size,
      '--on-disconnect',
      'keep',
      '--log-level',
      'error',
    ]);
    const b = await startServer(join(dir, `b${k++}.sock`), [
      '--device',
      'edu',
      '--memory',
      size,
      '--on-disconnect',
      'keep',
      '--log-level',
      'error',
    ]);
    const src = await VfioUserClient.connect(a.socket),
      dst = await VfioUserClient.connect(b.socket);
    const wl = load === 'dirtying' ? await memoryWorkload(src, 1024) : null;
    const r = await migrate(src, dst, {
      workload: wl?.round,
      downtimeLimitMs: 100,
      maxIterations: 5,
    });
    if (r.outcome !== 'completed') throw new Error(r.error);
    console.log(
      size.padEnd(8),
      load.padEnd(9),
      fmt(r.throughputGiBps, 2).padStart(7),
      fmt(floor, 2).padStart(7),
      fmt(r.throughputGiBps / floor, 2).padStart(8),
      fmt(r.downtimeMs).padStart(12),
      fmt(r.stopCopyMs).padStart(11),
      fmt(r.resumeMs).padStart(8),
      String(r.iterations).padStart(7),
      fmt(r.bytes / 2 ** 20, 0).padStart(10),
    );
    wl?.close();
    src.close();
    dst.close();
    await a.stop();
    await b.stop();
  }
}
stub.kill();
