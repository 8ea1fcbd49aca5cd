// A real vfio-user-server process for soak runs: started from the built command, watched through
// /proc (RSS, open fds) and its exit status, with only the tail of its output kept (a long run
// logs a line per session).
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { VfioUserClient } from '@vfu/client';
import { EDU_ID, Reg } from '@vfu/device-edu';

const TAIL = 16 * 1024;
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

export class SoakServer {
  #tail = '';
  #exit: string | null = null;
  baselineFds = 0;

  private constructor(
    readonly proc: ChildProcess,
    readonly socket: string,
  ) {
    const keep = (d: Buffer) => {
      this.#tail = (this.#tail + d.toString()).slice(-TAIL);
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    proc.once('exit', (code, signal) => {
      this.#exit = signal ? `killed by ${signal}` : `exited with code ${code}`;
    });
  }

  /** Starts `vfio-user-server --device edu` on `socket` and waits until it accepts clients. */
  static async start(socket: string, args: string[] = []): Promise<SoakServer> {
    const bin = createRequire(import.meta.url).resolve(
      '@vfu/vfio-user-server/bin/vfio-user-server.mjs',
    );
    const argv = [bin, '--socket', socket, '--device', 'edu', '--memory', '1M', ...args];
    const s = new SoakServer(spawn(process.execPath, argv, { stdio: 'pipe' }), socket);
    try {
      await s.#ready();
    } catch (e) {
      s.proc.kill('SIGKILL');
      throw e;
    }
    return s;
  }

  async #ready(): Promise<void> {
    // The listening line is the command's promise that it is ready (its last fd is open).
    for (let t = Date.now(); !this.listening; await sleep(10)) {
      if (this.exit) throw new Error(`server ${this.exit} before listening: ${this.tail}`);
      if (Date.now() - t > 30_000) throw new Error(`server did not listen: ${this.tail}`);
    }
    this.baselineFds = this.fds();
    await this.check();
    await this.idle();
  }

  /** How the process ended, or null while it runs. */
  get exit(): string | null {
    return this.#exit;
  }
  get listening(): boolean {
    return existsSync(this.socket) && / listening on /.test(this.#tail);
  }
  get tail(): string {
    return this.#tail;
  }
  fds(): number {
    return readdirSync(`/proc/${this.proc.pid}/fd`).length;
  }
  /** What each open fd of the server is (for a leak's report). */
  fdTargets(): string {
    const dir = `/proc/${this.proc.pid}/fd`;
    return readdirSync(dir)
      .map(fd => {
        try {
          return `${fd}->${readlinkSync(`${dir}/${fd}`)}`;
        } catch {
          return `${fd}->?`;
        }
      })
      .join(' ');
  }
  rssKiB(): number {
    const status = readFileSync(`/proc/${this.proc.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  }

  /**
   * Waits until the server has let its last client go: its open-fd count is back to where it
   * was with no client (bounded; a count that never comes back is a leak or a hang).
   */
  async idle(ms = 10_000): Promise<void> {
    const target = this.baselineFds;
    for (let t = Date.now(); ; await sleep(1)) {
      if (this.exit) throw new Error(`server ${this.exit}: ${this.tail}`);
      const n = this.fds();
      if (n === target) return;
      if (Date.now() - t > ms)
        throw new Error(
          `server fds stayed at ${n}, not ${target}, for ${ms} ms: ${this.fdTargets()}\n` +
            `server output: ${this.tail.slice(-4000)}`,
        );
    }
  }

  /** A well-behaved client negotiates and reads edu's ID register (bounded by its timeout). */
  async check(): Promise<void> {
    const c = await VfioUserClient.connect(this.socket, { timeoutMs: 10_000 });
    try {
      const id = await c.read32(0, Reg.ID);
      if (id !== EDU_ID) throw new Error(`edu ID read 0x${id.toString(16)}`);
    } finally {
      c.close();
    }
  }

  async stop(): Promise<void> {
    if (this.exit) return;
    const gone = new Promise(r => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await gone;
  }
}
