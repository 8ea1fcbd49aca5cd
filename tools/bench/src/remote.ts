// Migration between hosts and to files, measured on one machine: edu with device memory moved
// by `send`/`receive` over TCP on localhost, saved to a file and restored from it (v2 and v1).
// Each against a baseline moving the same number of bytes in the same run: a plain TCP copy
// (1 MiB writes into a socket, the peer discarding them) and a plain file copy (1 MiB writes
// and fsync, and reading the file back); the one-host migration over UNIX sockets for reference.
import { createServer, connect } from 'node:net';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate, receive, send, save, restore, type Report } from '@vfu/vfu-migrate';
import { fmt, dir } from './common.js';

const sizes = (process.env.BENCH_REMOTE_SIZES ?? process.env.BENCH_SIZES ?? '64M,1G').split(',');
const protocols = (process.env.BENCH_PROTOCOLS ?? 'v2,v1').split(',') as ('v1' | 'v2')[];
const gibps = (bytes: number, ms: number) => bytes / 2 ** 30 / (ms / 1000);

/** GiB/s of `bytes` written in 1 MiB pieces into a localhost TCP socket and discarded. */
async function tcpCopy(bytes: number): Promise<number> {
  let got = 0;
  let done: () => void = () => {};
  const all = new Promise<void>(r => {
    done = r;
  });
  const server = createServer(s =>
    s.on('data', d => {
      got += d.length;
      if (got >= bytes) done();
    }),
  );
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r));
  const s = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise(r => s.once('connect', r));
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const t = performance.now();
  for (let sent = 0; sent < bytes; sent += chunk.length)
    if (!s.write(chunk)) await new Promise(r => s.once('drain', r));
  await all;
  const ms = performance.now() - t;
  s.destroy();
  server.close();
  return gibps(bytes, ms);
}

/**
 * GiB/s writing `bytes` to a new file in 1 MiB pieces until they are on disk (fsync), as a
 * snapshot is when `save` returns; and reading the file back.
 */
async function fileCopy(bytes: number): Promise<{ write: number; read: number }> {
  const path = join(dir, 'baseline.bin');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  let t = performance.now();
  const w = await open(path, 'w');
  for (let n = 0; n < bytes; n += chunk.length) await w.write(chunk);
  await w.sync();
  await w.close();
  const write = gibps(bytes, performance.now() - t);
  t = performance.now();
  const r = await open(path, 'r');
  while ((await r.read(chunk, 0, chunk.length, null)).bytesRead);
  await r.close();
  const read = gibps(bytes, performance.now() - t);
  await rm(path);
  return { write, read };
}

let k = 0;
async function pair(
  size: string,
): Promise<[ServerProcess, ServerProcess, VfioUserClient, VfioUserClient]> {
  const args = [
    '--device',
    'edu',
    '--memory',
    size,
    '--on-disconnect',
    'keep',
    '--log-level',
    'error',
  ];
  const a = await startServer(join(dir, `ra${k}.sock`), args);
  const b = await startServer(join(dir, `rb${k++}.sock`), args);
  return [a, b, await VfioUserClient.connect(a.socket), await VfioUserClient.connect(b.socket)];
}

function ok(r: Report | { outcome: string; error?: string }): void {
  if (r.outcome !== 'completed') throw new Error(r.error);
}

/** The data phase over TCP: both halves in this process, the wire a localhost connection. */
async function overTcp(src: VfioUserClient, dst: VfioUserClient, protocol: 'v1' | 'v2') {
  let port = 0;
  const got = receive({
    destination: dst,
    listen: { host: '127.0.0.1', port: 0 },
    secret: Buffer.from('bench secret, sixteen+'),
    onListening: a => {
      port = a.port;
    },
  });
  while (!port) await new Promise(r => setTimeout(r, 5));
  const to = { host: '127.0.0.1', port };
  const rep = await send(src, { to, protocol, secret: Buffer.from('bench secret, sixteen+') });
  ok(rep);
  ok(await got);
  return rep;
}

console.log(
  'migration between hosts and to files (edu, idle): data phase GiB/s; ' +
    'baselines = the same bytes by a plain TCP copy / a plain file write+fsync and read; ' +
    'save = stop to file on disk',
);
const head = ['memory', 'proto', 'path', 'GiB/s', 'baseline', 'x base', 'downtime ms', 'MiB'];
console.log(head.map((h, i) => (i < 3 ? h.padEnd(8) : h.padStart(11))).join(' '));
const row = (cells: string[]) =>
  console.log(cells.map((c, i) => (i < 3 ? c.padEnd(8) : c.padStart(11))).join(' '));

for (const size of sizes) {
  for (const protocol of protocols) {
    const [a, b, src, dst] = await pair(size);
    // A first migration warms both servers (shadow copies, undo buffers): every path below is
    // measured warm.
    ok(await migrate(src, dst, { protocol }));
    await src.setState(2);
    await dst.reset();
    const unix = await migrate(src, dst, { protocol, downtimeLimitMs: 100, maxIterations: 5 });
    ok(unix);
    await src.setState(2); // RUNNING again: the same source moves once more
    await dst.reset();
    const tcp = await overTcp(src, dst, protocol);
    const tcpBase = await tcpCopy(tcp.bytes);
    // The file baseline goes first: right after a large write and fsync this VM's disk is slower
    // for a while, and the baseline should not be the one that pays for it.
    const disk = await fileCopy(tcp.bytes); // a rate: the same order of bytes as the snapshot
    const file = join(dir, `snap${k}.vfus`);
    await src.setState(2);
    const saved = await save(src, file, { protocol });
    ok(saved);
    await dst.reset();
    const back = await restore(dst, file, protocol);
    ok(back);
    // The whole save, from stopping the device to the file renamed on disk (fsync included).
    const durable = gibps(saved.bytes, saved.totalMs);
    const mib = (r: Report) => fmt(r.bytes / 2 ** 20, 0);
    row([
      size,
      protocol,
      'unix',
      fmt(unix.throughputGiBps, 2),
      '-',
      '-',
      fmt(unix.downtimeMs),
      mib(unix),
    ]);
    const x = (r: number, base: number) => fmt(r / base, 2);
    row([
      size,
      protocol,
      'tcp',
      fmt(tcp.throughputGiBps, 2),
      fmt(tcpBase, 2),
      x(tcp.throughputGiBps, tcpBase),
      fmt(tcp.downtimeMs),
      mib(tcp),
    ]);
    row([
      size,
      protocol,
      'save',
      fmt(durable, 2),
      fmt(disk.write, 2),
      x(durable, disk.write),
      fmt(saved.downtimeMs),
      mib(saved),
    ]);
    row([
      size,
      protocol,
      'restore',
      fmt(back.throughputGiBps, 2),
      fmt(disk.read, 2),
      x(back.throughputGiBps, disk.read),
      fmt(back.resumeMs),
      mib(back),
    ]);
    await rm(file);
    src.close();
    dst.close();
    await a.stop();
    await b.stop();
  }
}
