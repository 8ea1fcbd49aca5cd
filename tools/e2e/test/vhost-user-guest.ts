// Real QEMU processes with a vhost-user-blk-pci disk served by vhost-user-server (a separate
// process), booting the test guest (Debian's kernel, its virtio_pci and virtio_blk modules,
// busybox) with an init script given by the test; QMP for migration.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  cpio,
  guestFiles,
  qemuBinary,
  startListening,
  type ServerProcess,
} from '@vfu/qemu-harness';

/** vhost-user-server as a process: its output in a file, as startServer keeps it. */
export type Backend = ServerProcess;

/** Starts vhost-user-server; resolves once it listens (its line printed, its socket there). */
export function startBackend(socket: string, args: string[]): Promise<Backend> {
  const bin = createRequire(import.meta.url).resolve(
    '@vfu/vhost-user-server/bin/vhost-user-server.mjs',
  );
  return startListening(bin, socket, ['--socket', socket, ...args]);
}

const MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'virtio_blk',
];

/** An initramfs with busybox, the virtio modules and `init` (a busybox sh script). */
export function initrd(path: string, init: string): void {
  const files = guestFiles();
  const D = 0o40755;
  const X = 0o100755;
  const F = 0o100644;
  const prologue = [
    '#!/bin/busybox sh',
    '/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin',
    '/bin/busybox --install -s',
    'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev',
    'say() { echo "VFU $*"; }',
    `for m in ${MODULES.join(' ')}; do insmod /lib/modules/$m.ko || say insmod-failed $m; done`,
    'i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done',
    // Block n of pass p: the line "blkNNNNN passPP" 256 times (4 KiB); the host builds the same.
    'blk() { yes "blk$(printf %05d $1) pass$(printf %02d $2)" | head -c 4096; }',
  ].join('\n');
  writeFileSync(
    path,
    cpio([
      ...['bin', 'lib', 'lib/modules', 'proc', 'sys', 'dev', 'tmp'].map(name => ({
        name,
        mode: D,
      })),
      { name: 'init', mode: X, data: Buffer.from(`${prologue}\n${init}\npoweroff -f\n`) },
      { name: 'bin/busybox', mode: X, data: readFileSync(join(files, 'busybox')) },
      ...MODULES.map(m => ({
        name: `lib/modules/${m}.ko`,
        mode: F,
        data: readFileSync(join(files, 'modules', `${m}.ko`)),
      })),
    ]),
  );
}

/** The 4 KiB block the guest's blk() writes. */
export const block = (n: number, pass: number) =>
  Buffer.from(
    `blk${String(n).padStart(5, '0')} pass${String(pass).padStart(2, '0')}\n`.repeat(256),
  );

export interface Guest {
  proc: ChildProcess;
  qmp: Qmp;
  /** Every "VFU key values" line so far, by key. */
  lines: Map<string, string[]>;
  console: () => string;
  /** Resolves when the guest prints "VFU key ...". */
  line(key: string): Promise<string[]>;
  exited: Promise<number | null>;
  quit(): Promise<void>;
}

/** QEMU under TCG with the vhost-user disk at `socket`; `incoming` makes it a destination. */
export async function startGuest(
  dir: string,
  name: string,
  socket: string,
  initrdPath: string,
  incoming?: string,
): Promise<Guest> {
  const files = guestFiles();
  const qmpPath = join(dir, `${name}.qmp`);
  const args = [
    ...['-machine', 'q35,memory-backend=mem', '-accel', 'tcg', '-m', '256M'],
    ...['-object', 'memory-backend-memfd,id=mem,size=256M,share=on'],
    ...['-nodefaults', '-display', 'none', '-serial', 'stdio', '-no-reboot'],
    ...['-kernel', join(files, 'vmlinuz'), '-initrd', initrdPath],
    // No zeroing of pages on allocation: a page the guest's CPU zeroes is dirty to QEMU anyway,
    // which would hide a page the back-end writes without logging it.
    ...['-append', 'console=ttyS0 panic=-1 loglevel=3 init_on_alloc=0 init_on_free=0'],
    ...['-qmp', `unix:${qmpPath},server=on,wait=off`],
    ...['-chardev', `socket,id=vhu0,path=${socket}`],
    ...['-device', 'vhost-user-blk-pci,chardev=vhu0,num-queues=1,addr=6.0'],
    ...(incoming ? ['-incoming', incoming] : []),
  ];
  const proc = spawn(qemuBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let pending = '';
  const lines = new Map<string, string[]>();
  const waiters = new Map<string, ((v: string[]) => void)[]>();
  const handle = (line: string) => {
    const m = /VFU (\S+)\s*(.*)$/.exec(line.trim());
    if (!m) return;
    const v = m[2] ? m[2].split(/\s+/) : [];
    lines.set(m[1], v);
    for (const w of waiters.get(m[1])?.splice(0) ?? []) w(v);
  };
  proc.stdout!.on('data', d => {
    out += d;
    if (process.env.VFU_SHOW_GUEST) process.stdout.write(`[${name}] ${d}`);
    const ls = (pending + d).split('\n');
    pending = ls.pop() ?? '';
    for (const l of ls) handle(l);
  });
  proc.stderr!.on('data', d => {
    out += d;
  });
  const exited = new Promise<number | null>(r => proc.once('exit', c => r(c)));
  const qmp = await Qmp.open(qmpPath, exited);
  return {
    proc,
    qmp,
    lines,
    console: () => out,
    line: key =>
      lines.has(key)
        ? Promise.resolve(lines.get(key)!)
        : new Promise(r => waiters.set(key, [...(waiters.get(key) ?? []), r])),
    exited,
    async quit() {
      if (proc.exitCode === null && proc.signalCode === null) {
        await qmp.execute('quit').catch(() => {});
        const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      qmp.close();
    },
  };
}

/** QMP: capabilities negotiated, then one command at a time. */
export class Qmp {
  #waiting: ((o: Record<string, unknown>) => void)[] = [];
  readonly events: string[] = [];
  private constructor(readonly sock: Socket) {
    let buf = '';
    sock.on('data', d => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        const o = JSON.parse(line) as Record<string, unknown>;
        if ('event' in o) this.events.push(String(o.event));
        else if (!('QMP' in o)) this.#waiting.shift()?.(o);
      }
    });
  }

  /** Connects once QEMU has created the socket (it does so before the guest starts). */
  static async open(path: string, exited: Promise<unknown>): Promise<Qmp> {
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    for (;;) {
      if (gone) throw new Error('QEMU exited before its QMP socket answered');
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.execute('qmp_capabilities');
        return q;
      } catch {
        await new Promise(r => setTimeout(r, 50));
      }
    }
  }

  execute(cmd: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.#waiting.push(o =>
        'error' in o
          ? reject(new Error(`QMP ${cmd}: ${JSON.stringify(o.error)}`))
          : resolve(o.return as Record<string, unknown>),
      );
      this.sock.write(
        `${JSON.stringify({ execute: cmd, ...(args ? { arguments: args } : {}) })}\n`,
      );
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
