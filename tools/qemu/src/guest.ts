// Boots a small Linux guest (Debian's kernel, its own drivers, busybox) under QEMU with our
// devices attached, and talks with its /init over the serial console.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuBinary, type VfioUserDevice } from './qemu.js';

const here = dirname(fileURLToPath(import.meta.url));

/** Kernel, modules and busybox, fetched once (guest/fetch.sh). */
export function guestFiles(): string {
  return execFileSync('bash', [join(here, '..', 'guest', 'fetch.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

/** A newc cpio archive (what the kernel unpacks as initramfs); no cpio binary needed. */
export function cpio(files: { name: string; mode: number; data?: Uint8Array }[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  for (const f of [...files, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = 'data' in f && f.data ? Buffer.from(f.data) : Buffer.alloc(0);
    const name = Buffer.from(`${f.name}\0`);
    const fields = [ino++, f.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    const head = Buffer.from(`070701${fields.map(v => v.toString(16).padStart(8, '0')).join('')}`);
    parts.push(head, name, pad(head.length + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

export interface GuestRun {
  lines: Map<string, string[]>;
  console: string;
  code: number | null;
  accel: 'kvm' | 'tcg';
  notes: string[];
}

export interface BootOptions {
  /** The init script, a file in tools/qemu/guest (default `init`). */
  init?: string;
  /** Modules put in the initramfs (names in the fetched modules directory). */
  modules?: string[];
  /** More kernel command line (the init reads /proc/cmdline). */
  append?: string;
}

/**
 * Boots the guest with `devices`, answering each "VFU wait-<what>" line through `on`, and
 * resolves with every "VFU key values" line once the guest powers off (or `ms` passes).
 */
export async function bootGuest(
  devices: VfioUserDevice[],
  on: (what: string) => Promise<void>,
  ms = 90_000,
  opts: BootOptions = {},
): Promise<GuestRun> {
  // KVM when it works, TCG otherwise. /dev/kvm can exist and still not run this kernel (here it
  // is kvm_pvm, under which Debian's kernel hangs silently), so a KVM boot that
  // prints nothing within KVM_GRACE_MS is abandoned for TCG. VFU_GUEST_ACCEL=tcg|kvm forces one.
  const want = process.env.VFU_GUEST_ACCEL;
  const notes: string[] = [];
  if (want !== 'tcg' && (want === 'kvm' || existsSync('/dev/kvm'))) {
    const r = await boot(devices, on, ms, 'kvm', opts);
    if (r) return { ...r, notes };
    notes.push(`KVM: no kernel output within ${KVM_GRACE_MS} ms; booted under TCG instead`);
  }
  const r = await boot(devices, on, ms, 'tcg', opts);
  return { ...r!, notes };
}

const KVM_GRACE_MS = 10_000;

/** One boot; with KVM, null if the kernel shows no sign of life within the grace period. */
async function boot(
  devices: VfioUserDevice[],
  on: (what: string) => Promise<void>,
  ms: number,
  accel: 'kvm' | 'tcg',
  opts: BootOptions,
): Promise<Omit<GuestRun, 'notes'> | null> {
  const files = guestFiles();
  const dir = mkdtempSync(join(tmpdir(), 'vfu-guest-'));
  const D = 0o40755,
    X = 0o100755,
    F = 0o100644;
  const initrd = cpio([
    ...['bin', 'lib', 'lib/modules', 'proc', 'sys', 'dev', 'tmp'].map(name => ({ name, mode: D })),
    { name: 'init', mode: X, data: readFileSync(join(here, '..', 'guest', opts.init ?? 'init')) },
    { name: 'bin/busybox', mode: X, data: readFileSync(join(files, 'busybox')) },
    ...(opts.modules ?? ['gpio-pci-idio-16', 'uio', 'uio_pci_generic']).map(m => ({
      name: `lib/modules/${m}.ko`,
      mode: F,
      data: readFileSync(join(files, 'modules', `${m}.ko`)),
    })),
  ]);
  writeFileSync(join(dir, 'initrd'), initrd);
  const args = [
    '-machine',
    'q35,memory-backend=mem',
    '-accel',
    accel,
    '-m',
    '256M',
    '-object',
    'memory-backend-memfd,id=mem,size=256M,share=on',
    '-nodefaults',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    join(files, 'vmlinuz'),
    '-initrd',
    join(dir, 'initrd'),
    '-append',
    `console=ttyS0 panic=-1 loglevel=3${opts.append ? ` ${opts.append}` : ''}`,
    ...devices.flatMap((d, i) => [
      '-device',
      JSON.stringify({
        driver: 'vfio-user-pci',
        id: d.id ?? `vfu${i}`,
        addr: d.addr,
        socket: { path: d.socket, type: 'unix' },
      }),
    ]),
  ];
  const proc = spawn(qemuBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '',
    pending = '';
  const lines = new Map<string, string[]>();
  const done = new Promise<number | null>(resolve => proc.once('exit', c => resolve(c)));
  const handle = (line: string) => {
    const m = /^VFU (\S+)\s*(.*)$/.exec(line.trim());
    if (!m) return;
    lines.set(m[1], m[2] ? m[2].split(/\s+/) : []);
    if (m[1].startsWith('wait-'))
      void on(m[1].slice(5)).catch(e => {
        out += `\n[host] ${m[1]} failed: ${e}\n`;
      });
  };
  proc.stdout!.on('data', d => {
    out += d;
    const lines = (pending + d).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) handle(line);
  });
  proc.stderr!.on('data', d => {
    out += d;
  });
  const timer = setTimeout(() => {
    out += `\n[host] no power-off within ${ms} ms\n`;
    proc.kill('SIGKILL');
  }, ms);
  let silent = false;
  const grace =
    accel === 'kvm'
      ? setTimeout(() => {
          if (!/Linux version|VFU |\[\s*\d+\.\d+\]/.test(out)) {
            silent = true;
            proc.kill('SIGKILL');
          }
        }, KVM_GRACE_MS)
      : null;
  const code = await done;
  clearTimeout(timer);
  if (grace) clearTimeout(grace);
  rmSync(dir, { recursive: true, force: true });
  if (silent) return null;
  return { lines, console: out, code, accel };
}
