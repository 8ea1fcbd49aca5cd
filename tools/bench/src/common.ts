import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const dir = mkdtempSync(join(tmpdir(), 'vfu-bench-'));
const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'c');

/** Compiles the C floor programs (cc -O2) into the bench's temporary directory. */
export function buildC(): { stub: string; client: string; membw: string } {
  const out = {
    stub: join(dir, 'stub-server'),
    client: join(dir, 'client'),
    membw: join(dir, 'membw'),
  };
  execFileSync('cc', ['-O2', '-o', out.stub, join(src, 'stub-server.c')]);
  execFileSync('cc', ['-O2', '-o', out.client, join(src, 'client.c')]);
  execFileSync('cc', ['-O2', '-o', out.membw, join(src, 'membw.c')]);
  return out;
}

/** C memcmp (in 256 KiB blocks) and memcpy of `bytes`, best of three, in ms (c/membw.c). */
export function memoryBandwidth(bin: string, bytes: number): { cmpMs: number; cpyMs: number } {
  const [cmpMs, cpyMs] = execFileSync(bin, [String(bytes)], { encoding: 'utf8' })
    .trim()
    .split(' ')
    .map(Number);
  return { cmpMs, cpyMs };
}

export async function startStub(bin: string, socket: string): Promise<ChildProcess> {
  const p = spawn(bin, [socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((res, rej) => {
    p.stdout!.once('data', () => res());
    p.once('exit', c => rej(new Error(`stub exited ${c}`)));
  });
  return p;
}

/** C client modes (see c/client.c): round trips, posted writes, WRITE_MULTI, a pipeline. */
export type ClientMode = 'read' | 'post' | 'multi' | 'mixed';

/**
 * Runs the C client: median/p99 µs (read mode), operations per second, bytes, seconds. It exits
 * non-zero (and this throws) if any reply is missing or an error: no lost connection goes unseen.
 */
export function cClient(
  bin: string,
  socket: string,
  n: number,
  count: number,
  region: number,
  mode: ClientMode = 'read',
  offset = 0,
) {
  const [median, p99, perSec, bytes, secs, p90] = execFileSync(
    bin,
    [socket, String(n), String(count), String(region), mode, String(offset)],
    { encoding: 'utf8' },
  )
    .trim()
    .split(' ')
    .map(Number);
  return { median, p90, p99, perSec, bytes, secs };
}

export function stats(lat: number[], totalMs: number) {
  const s = [...lat].sort((a, b) => a - b);
  return {
    median: s[s.length >> 1],
    p90: s[Math.floor(s.length * 0.9)],
    p99: s[Math.floor(s.length * 0.99)],
    perSec: lat.length / (totalMs / 1000),
  };
}

export const fmt = (x: number, d = 1) => x.toFixed(d);

/** Resident memory of a process in MiB (VmRSS). */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/**
 * CPU time a process has used so far, in ms (user + system, all its threads; /proc/PID/stat,
 * in clock ticks of 10 ms).
 */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start with the state, field 3.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
