import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import type { VfioUserClient } from '@vfu/client';

/** A fresh directory for sockets; removed by the returned cleanup. */
export function tempDir(prefix = 'vfu-e2e-'): {
  dir: string;
  path: (n: string) => string;
  cleanup: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    path: n => join(dir, n),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

export async function until<T>(fn: () => T | Promise<T>, what: string, ms = 5000): Promise<T> {
  const t = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** One request on a server's control socket (--control): a JSON line out, a JSON line back. */
export function control(path: string, req: object): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    s.on('data', d => {
      buf += d;
      if (!buf.includes('\n')) return;
      s.end();
      resolve(JSON.parse(buf));
    });
    s.on('error', reject);
    s.write(`${JSON.stringify(req)}\n`);
  });
}

/** Reads a save session's stream (MIG_DATA_READ) until the device says it has no more. */
export async function readToEnd(c: VfioUserClient): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for (let d = await c.migDataRead(1 << 20); d.length; d = await c.migDataRead(1 << 20)) {
    parts.push(d);
  }
  return Buffer.concat(parts);
}
