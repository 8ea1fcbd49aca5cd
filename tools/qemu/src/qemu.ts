// Runs the real QEMU (qtest accelerator, memfd-shared RAM, QMP) with vfio-user-pci devices, and
// speaks qtest's line protocol and QMP to it. For tests and the demo.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const hexOf = (data: Uint8Array) => Buffer.from(data).toString('hex');

/** The QEMU binary: $QEMU, or provisioned once by provision.sh. */
export function qemuBinary(): string {
  if (process.env.QEMU) return process.env.QEMU;
  const script = join(here, '..', 'provision.sh');
  return execFileSync('bash', [script], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface VfioUserDevice {
  socket: string;
  addr: string;
  id?: string;
}
export interface QemuOptions {
  devices: VfioUserDevice[];
  memory?: string;
  extraArgs?: string[];
}

async function waitFor(
  path: string,
  ms: number,
  proc: ChildProcess,
  stderr: () => string,
): Promise<void> {
  const t = Date.now();
  while (!existsSync(path)) {
    if (proc.exitCode !== null)
      throw new Error(`QEMU exited (${proc.exitCode}) before it listened: ${stderr()}`);
    if (Date.now() - t > ms)
      throw new Error(`QEMU did not create ${path} within ${ms} ms: ${stderr()}`);
    await new Promise(r => setTimeout(r, 20));
  }
}

/** Calls `onLine` for each newline-terminated line arriving on `sock`. */
function onLines(sock: Socket, onLine: (line: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    const lines = (buf + d).split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
}

/** A line-oriented qtest session; asynchronous `IRQ raise/lower N` lines are collected apart. */
export class Qtest {
  #waiting: ((line: string) => void)[] = [];
  readonly irqs: string[] = [];
  #irqWaiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  constructor(readonly sock: Socket) {
    onLines(sock, line => {
      if (line.startsWith('IRQ ')) {
        this.irqs.push(line);
        const woken = this.#irqWaiters.filter(w => w.re.test(line));
        this.#irqWaiters = this.#irqWaiters.filter(w => !woken.includes(w));
        for (const w of woken) w.resolve(line);
      } else this.#waiting.shift()?.(line);
    });
  }
  /** Sends one command; resolves with its reply ("OK ..."), rejects on "FAIL". */
  cmd(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#waiting.push(l =>
        l.startsWith('OK') ? resolve(l) : reject(new Error(`qtest "${line}": ${l}`)),
      );
      this.sock.write(`${line}\n`);
    });
  }
  async readl(a: number) {
    return Number((await this.cmd(`readl 0x${a.toString(16)}`)).split(' ')[1]);
  }
  async readq(a: number) {
    return BigInt((await this.cmd(`readq 0x${a.toString(16)}`)).split(' ')[1]);
  }
  async writel(a: number, v: number) {
    await this.cmd(`writel 0x${a.toString(16)} 0x${(v >>> 0).toString(16)}`);
  }
  async writeq(a: number, v: number | bigint) {
    await this.cmd(`writeq 0x${a.toString(16)} 0x${v.toString(16)}`);
  }
  async inb(p: number) {
    return Number((await this.cmd(`inb 0x${p.toString(16)}`)).split(' ')[1]);
  }
  async outb(p: number, v: number) {
    await this.cmd(`outb 0x${p.toString(16)} 0x${v.toString(16)}`);
  }
  async inl(p: number) {
    return Number((await this.cmd(`inl 0x${p.toString(16)}`)).split(' ')[1]);
  }
  async outl(p: number, v: number) {
    await this.cmd(`outl 0x${p.toString(16)} 0x${(v >>> 0).toString(16)}`);
  }
  /** Guest memory: bytes at `a`. */
  async memRead(a: number, n: number): Promise<Buffer> {
    return Buffer.from(
      (await this.cmd(`read 0x${a.toString(16)} 0x${n.toString(16)}`)).split(' ')[1].slice(2),
      'hex',
    );
  }
  async memWrite(a: number, data: Uint8Array): Promise<void> {
    await this.cmd(`write 0x${a.toString(16)} 0x${data.length.toString(16)} 0x${hexOf(data)}`);
  }
  /** Resolves on the first IRQ line matching `re` (already seen ones count). */
  irq(re = /^IRQ raise/, ms = 5000): Promise<string> {
    const seen = this.irqs.find(l => re.test(l));
    if (seen) {
      this.irqs.splice(this.irqs.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(new Error(`no ${re} from qtest within ${ms} ms (seen: ${this.irqs.join('; ')})`)),
        ms,
      );
      this.#irqWaiters.push({
        re,
        resolve: l => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  }

  // PCI configuration space through the legacy 0xcf8/0xcfc ports (bus 0).
  #addr(dev: number, fn: number, off: number) {
    return (0x80000000 | (dev << 11) | (fn << 8) | (off & 0xfc)) >>> 0;
  }
  async cfgRead32(dev: number, off: number, fn = 0) {
    await this.outl(0xcf8, this.#addr(dev, fn, off));
    return (await this.inl(0xcfc)) >>> 0;
  }
  async cfgRead16(dev: number, off: number, fn = 0) {
    await this.outl(0xcf8, this.#addr(dev, fn, off));
    return Number((await this.cmd(`inw 0x${(0xcfc + (off & 2)).toString(16)}`)).split(' ')[1]);
  }
  async cfgRead8(dev: number, off: number, fn = 0) {
    await this.outl(0xcf8, this.#addr(dev, fn, off));
    return this.inb(0xcfc + (off & 3));
  }
  async cfgWrite32(dev: number, off: number, v: number, fn = 0) {
    await this.outl(0xcf8, this.#addr(dev, fn, off));
    await this.outl(0xcfc, v);
  }
  async cfgWrite16(dev: number, off: number, v: number, fn = 0) {
    await this.outl(0xcf8, this.#addr(dev, fn, off));
    await this.cmd(`outw 0x${(0xcfc + (off & 2)).toString(16)} 0x${v.toString(16)}`);
  }
}

/** Minimal QMP: capabilities negotiation, then `execute`. */
export class Qmp {
  #waiting: ((o: Record<string, unknown>) => void)[] = [];
  readonly events: Record<string, unknown>[] = [];
  constructor(readonly sock: Socket) {
    onLines(sock, raw => {
      const line = raw.trim();
      if (!line) return;
      const o = JSON.parse(line) as Record<string, unknown>;
      if ('event' in o || 'QMP' in o) this.events.push(o);
      else this.#waiting.shift()?.(o);
    });
  }
  execute(cmd: string, args?: Record<string, unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#waiting.push(o =>
        'error' in o
          ? reject(new Error(`QMP ${cmd}: ${JSON.stringify(o.error)}`))
          : resolve(o.return),
      );
      this.sock.write(
        `${JSON.stringify({ execute: cmd, ...(args ? { arguments: args } : {}) })}\n`,
      );
    });
  }
}

const connectOnce = (path: string) =>
  new Promise<Socket>((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });

/**
 * QEMU creates a socket file (bind) a moment before it listens: a connect in between is
 * refused. Retry refusals until `ms` have passed; anything else fails at once.
 */
async function connectUnix(path: string, ms = 15000): Promise<Socket> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await connectOnce(path);
    } catch (e) {
      const refused = (e as NodeJS.ErrnoException).code === 'ECONNREFUSED';
      if (!refused || Date.now() > deadline) throw e;
      await new Promise(r => setTimeout(r, 20));
    }
  }
}

export class Qemu {
  private constructor(
    readonly proc: ChildProcess,
    readonly qtest: Qtest,
    readonly qmp: Qmp,
    readonly dir: string,
    readonly stderr: () => string,
  ) {}

  /** Starts QEMU with the given vfio-user devices attached; resolves once qtest and QMP answer. */
  static async start(o: QemuOptions): Promise<Qemu> {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-qemu-'));
    const qt = join(dir, 'qtest.sock'),
      qmp = join(dir, 'qmp.sock');
    const args = [
      '-machine',
      'q35,memory-backend=mem',
      '-accel',
      'qtest',
      '-nodefaults',
      '-display',
      'none',
      '-m',
      o.memory ?? '256M',
      '-object',
      `memory-backend-memfd,id=mem,size=${o.memory ?? '256M'},share=on`,
      '-qtest',
      `unix:${qt},server=on,wait=off`,
      '-qmp',
      `unix:${qmp},server=on,wait=off`,
      ...o.devices.flatMap((d, i) => [
        '-device',
        JSON.stringify({
          driver: 'vfio-user-pci',
          id: d.id ?? `vfu${i}`,
          addr: d.addr,
          socket: { path: d.socket, type: 'unix' },
        }),
      ]),
      ...(o.extraArgs ?? []),
    ];
    const proc = spawn(qemuBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', d => {
      err += d;
    });
    proc.stdout!.on('data', d => {
      err += d;
    });
    const stderr = () => err;
    await waitFor(qt, 15000, proc, stderr);
    await waitFor(qmp, 15000, proc, stderr);
    const qtest = new Qtest(await connectUnix(qt));
    const q = new Qmp(await connectUnix(qmp));
    await q.execute('qmp_capabilities');
    return new Qemu(proc, qtest, q, dir, stderr);
  }

  /** Quits QEMU through QMP (falling back to SIGKILL) and removes its sockets. */
  async quit(): Promise<void> {
    const exited = new Promise<void>(r =>
      this.proc.exitCode !== null ? r() : this.proc.once('exit', () => r()),
    );
    try {
      await Promise.race([this.qmp.execute('quit'), new Promise(r => setTimeout(r, 3000))]);
    } catch {
      /* already going */
    }
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    this.qtest.sock.destroy();
    this.qmp.sock.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
