// Migration of edu with device memory, v2 and v1: data-phase throughput and downtime, cold (the
// first migration between two fresh servers), warm (a second one between the same servers) and
// third (the JIT has compiled the per-chunk code by then: see tools/bench/README.md); sparse
// (memory never written), idle (written once, then left alone), mapped (written, then a client
// maps it and writes nothing, as QEMU maps every BAR) and (v2) with a workload dirtying memory
// through its mapping. The floor is the C client pulling the same
// number of bytes from the C stub in 64 KiB and in 1 MiB REGION_READs (vfio-user framing over
// the same socket kind). BENCH_SPREAD=1 puts the servers on CPU 0 and the driver on CPU 1
// (default: all on the CPU run.sh pinned). Downtime is set beside the memory bandwidth: a C
// memcmp of the whole memory against a copy (the final scan for changed pages compares as much).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate, memoryWorkload } from '@vfu/vfu-migrate';
import { buildC, startStub, cClient, fmt, dir, rssMiB, cpuMs, memoryBandwidth } from './common.js';

/** VFIO_DEVICE_STATE_RUNNING (include/uapi/linux/vfio.h). */
const RUNNING = 2;
const sizes = (process.env.BENCH_SIZES ?? '64M,1G').split(',');
const protocols = (process.env.BENCH_PROTOCOLS ?? 'v2,v1').split(',') as ('v1' | 'v2')[];
const spread = process.env.BENCH_SPREAD === '1';
/**
 * The data path between the two servers: 'splice' (vfu-migrate's default: v2 by splice, v1
 * through mappings of both data windows) or 'copy' (messages).
 */
const dataPath = process.env.BENCH_DATA_PATH === 'copy' ? 'copy' : 'splice';
const bytesOf = (s: string) => Number(s.slice(0, -1)) * (s.endsWith('G') ? 2 ** 30 : 2 ** 20);
const c = buildC();
const stubSock = join(dir, 'stub-m.sock');
const stub = await startStub(c.stub, stubSock);
const placement = spread
  ? 'servers on CPU 0, driver on CPU 1'
  : process.env.BENCH_PINNED
    ? `all on CPU ${process.env.BENCH_PINNED}`
    : 'unpinned';
console.log(
  `migration of edu: data phase GiB/s and downtime (${placement}; data path ${dataPath}); ` +
    'floors = C pulling the same bytes in 64 KiB / 1 MiB messages',
);
console.log(
  'memory'.padEnd(7),
  'proto'.padEnd(6),
  'load'.padEnd(9),
  'run'.padEnd(5),
  'GiB/s'.padStart(6),
  '64K fl'.padStart(7),
  'x 64K'.padStart(6),
  '1M fl'.padStart(6),
  'x 1M'.padStart(5),
  'downtime ms'.padStart(12),
  'x cmp'.padStart(6),
  '(stop-copy'.padStart(11),
  'resume)'.padStart(8),
  'rounds'.padStart(7),
  'MiB'.padStart(6),
  'RSS MiB src/dst'.padStart(16),
  'CPU ms src/drv/dst'.padStart(19),
);

/**
 * sparse: memory never written (a memfd's holes, sent as zeros without being read); the others
 * write all of it first, through REGION_WRITEs (seen by the server), as a guest that used it.
 */
const LOADS = ['sparse', 'idle', 'mapped', 'dirtying'];

/** Writes every byte of edu's memory BAR (region 2) in 1 MiB REGION_WRITEs. */
async function fillMemory(c: VfioUserClient, size: number): Promise<void> {
  const chunk = new Uint8Array(1 << 20);
  for (let off = 0; off < size; off += chunk.length) {
    chunk.fill(1 + ((off >> 20) % 255));
    await c.regionWrite(2, off, chunk);
  }
}

async function server(name: string, size: string): Promise<ServerProcess> {
  const args = ['--device', 'edu', '--memory', size, '--on-disconnect', 'keep'];
  const p = await startServer(join(dir, name), [...args, '--log-level', 'error']);
  if (spread) execFileSync('taskset', ['-a', '-p', '-c', '0', String(p.proc.pid)]);
  return p;
}

let k = 0;
for (const size of sizes) {
  const bytes = bytesOf(size);
  const floor = (chunk: number) => {
    const f = cClient(c.client, stubSock, Math.ceil(bytes / chunk), chunk, 0);
    return f.bytes / 2 ** 30 / f.secs;
  };
  const f64 = floor(64 << 10),
    f1m = floor(1 << 20);
  const bw = memoryBandwidth(c.membw, bytes);
  console.log(
    `${size}: C memcmp of the memory ${fmt(bw.cmpMs)} ms, memcpy ${fmt(bw.cpyMs)} ms ` +
      '(x cmp = downtime / memcmp)',
  );
  for (const protocol of protocols)
    for (const load of protocol === 'v2' ? LOADS : LOADS.filter(l => l !== 'dirtying')) {
      const a = await server(`a${k}.sock`, size);
      const b = await server(`b${k++}.sock`, size);
      const src = await VfioUserClient.connect(a.socket),
        dst = await VfioUserClient.connect(b.socket);
      if (load !== 'sparse') await fillMemory(src, bytes);
      // mapped: a client maps the memory (as QEMU maps every BAR) and writes nothing.
      const still = load === 'idle' || load === 'sparse';
      const wl = still ? null : await memoryWorkload(src, load === 'mapped' ? 0 : 1024);
      for (const run of ['cold', 'warm', 'third']) {
        if (run !== 'cold') await src.setState(RUNNING); // the same servers again
        const cpu0 = [cpuMs(a.proc.pid!), cpuMs(process.pid), cpuMs(b.proc.pid!)];
        const r = await migrate(src, dst, {
          protocol,
          dataPath,
          workload: wl?.round,
          downtimeLimitMs: 100,
          maxIterations: 5,
        });
        if (r.outcome !== 'completed') throw new Error(r.error);
        const rss = `${fmt(rssMiB(a.proc.pid!), 0)}/${fmt(rssMiB(b.proc.pid!), 0)}`;
        const cpu1 = [cpuMs(a.proc.pid!), cpuMs(process.pid), cpuMs(b.proc.pid!)];
        const cpu = cpu1.map((t, i) => t - cpu0[i]).join('/');
        console.log(
          size.padEnd(7),
          protocol.padEnd(6),
          load.padEnd(9),
          run.padEnd(5),
          fmt(r.throughputGiBps, 2).padStart(6),
          fmt(f64, 2).padStart(7),
          fmt(r.throughputGiBps / f64, 2).padStart(6),
          fmt(f1m, 2).padStart(6),
          fmt(r.throughputGiBps / f1m, 2).padStart(5),
          fmt(r.downtimeMs).padStart(12),
          fmt(r.downtimeMs / bw.cmpMs, 2).padStart(6),
          fmt(r.stopCopyMs).padStart(11),
          fmt(r.resumeMs).padStart(8),
          String(r.iterations).padStart(7),
          fmt(r.bytes / 2 ** 20, 0).padStart(6),
          rss.padStart(16),
          cpu.padStart(19),
        );
      }
      wl?.close();
      src.close();
      dst.close();
      await a.stop();
      await b.stop();
    }
}
stub.kill();
