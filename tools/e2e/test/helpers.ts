import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll } from 'vitest';
import type { VfioUserClient } from '@vfu/client';
import { SoakServer } from '../soak/server.ts';

/**
 * pnpm's store for the workspace at `root`. pnpm keeps a store on the project's own file system,
 * so a project in the temporary directory (perhaps a tmpfs) would otherwise look in another one.
 */
export function workspaceStore(root: string): string {
  const path = execFileSync('pnpm', ['store', 'path'], { cwd: root, encoding: 'utf8' });
  return dirname(path.trim()); // the path ends in the store's layout version, as `v11`
}

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

/**
 * A live edu server (SoakServer) for the enclosing describe block, in a temporary directory:
 * started before its tests, stopped and the directory removed after them.
 */
export function soakServerForSuite(): {
  readonly server: SoakServer;
  tmp: ReturnType<typeof tempDir>;
} {
  const tmp = tempDir();
  let server: SoakServer | undefined;
  beforeAll(async () => {
    server = await SoakServer.start(tmp.path('edu.sock'));
  });
  afterAll(async () => {
    await server?.stop();
    tmp.cleanup();
  });
  return {
    tmp,
    get server() {
      if (!server) throw new Error('the suite server has not started');
      return server;
    },
  };
}

/**
 * Writes an out-of-tree device model (`vfio-user-server --device FILE`) into `dir` as `name`,
 * where it sees @vfu/pci as an installed package would (a link to the workspace's); its path.
 */
export function writeModel(dir: string, name: string, source: string): string {
  const pci = dirname(dirname(createRequire(import.meta.url).resolve('@vfu/pci')));
  mkdirSync(join(dir, 'node_modules/@vfu'), { recursive: true });
  symlinkSync(pci, join(dir, 'node_modules/@vfu/pci'));
  writeFileSync(join(dir, name), source);
  return join(dir, name);
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/**
 * A bounded poll: calls `fn` every `every` ms until it returns something truthy (returned), or
 * fails naming `what` after `ms`. What `fn` polls must be a real signal (a reply, a state, a
 * file, a process's state), never a log line.
 */
export async function until<T>(
  fn: () => T | Promise<T>,
  what: string,
  ms = 5000,
  every = 10,
): Promise<NonNullable<T>> {
  const t = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

/** The state letter of process `pid` in /proc/PID/stat (R running, S sleeping, T stopped...). */
const procState = (pid: number) =>
  readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];

/** Stops a process (SIGSTOP) and waits until the kernel reports it stopped. */
export async function stopProcess(proc: ChildProcess): Promise<void> {
  proc.kill('SIGSTOP');
  await until(() => procState(proc.pid!) === 'T', `process ${proc.pid} to stop`);
}

/** One request on a server's control socket (--control): a JSON line out, a JSON line back. */
export async function control(path: string, req: object): Promise<Record<string, any>> {
  const c = await ControlConnection.open(path);
  try {
    return await c.request(req);
  } finally {
    c.close();
  }
}

/**
 * A control-socket connection for one or many requests, answered in order. Kept open, it
 * leaves no connection closing in the server while a test counts the server's fds.
 */
export class ControlConnection {
  #buf = '';
  #failed: Error | null = null;
  readonly #waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.#received(d));
    socket.on('error', e => this.#fail(e));
    socket.on('close', () => this.#fail(new Error('the control connection closed')));
  }

  static open(path: string): Promise<ControlConnection> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => {
        s.off('error', reject);
        resolve(new ControlConnection(s));
      });
      s.once('error', reject);
    });
  }

  #received(d: string): void {
    const lines = (this.#buf + d).split('\n');
    this.#buf = lines.pop() ?? '';
    for (const line of lines) this.#waiting.shift()?.resolve(line);
  }

  #fail(e: Error): void {
    this.#failed ??= e;
    for (const w of this.#waiting.splice(0)) w.reject(e);
  }

  /** One request; its reply. */
  request(req: object): Promise<Record<string, any>> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve: line => resolve(JSON.parse(line)), reject });
      this.socket.write(`${JSON.stringify(req)}\n`);
    });
  }

  close(): void {
    this.socket.end();
  }
}

/**
 * Waits until the server behind control socket `ctl` has no client and has served at least
 * `sessions` (its disconnect handled: fds released, device reset or kept).
 */
export async function clientGone(ctl: string | ControlConnection, sessions = 0): Promise<void> {
  const ask = (req: object) => (typeof ctl === 'string' ? control(ctl, req) : ctl.request(req));
  await until(async () => {
    const r = await ask({ get: 'client' });
    return !r.connected && r.sessions >= sessions;
  }, `no client after ${sessions} sessions`);
}

/** Reads a save session's stream (MIG_DATA_READ) until the device says it has no more. */
export async function readToEnd(c: VfioUserClient): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for (let d = await c.migDataRead(1 << 20); d.length; d = await c.migDataRead(1 << 20)) {
    parts.push(d);
  }
  return Buffer.concat(parts);
}
