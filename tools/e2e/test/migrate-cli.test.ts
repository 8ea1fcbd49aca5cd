// vfu-migrate as a user runs it, between real server processes: the report and its NDJSON
// form, device identity, a destination with a device of its own, every way a side can fail to
// answer, bad options, and Ctrl-C.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync, spawn } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { Reg as Edu } from '@vfu/device-edu';
import { tempDir, until, control } from './helpers.ts';

const req = createRequire(import.meta.url);
const migrateBin = req.resolve('@vfu/vfu-migrate/bin/vfu-migrate.mjs');
const tmp = tempDir();
afterAll(() => tmp.cleanup());
const run = (args: string[]) =>
  spawnSync(process.execPath, [migrateBin, ...args], { encoding: 'utf8', timeout: 30_000 });
const migrate = (from: ServerProcess, to: ServerProcess, ...more: string[]) =>
  run(['--source', from.socket, '--destination', to.socket, ...more]);

/** A migration server (keeps its device when the driver goes) with a control socket. */
const server = (name: string, ...args: string[]) =>
  startServer(tmp.path(`${name}.sock`), [
    '--on-disconnect',
    'keep',
    '--control',
    tmp.path(`${name}.ctl`),
    ...args,
  ]);
const ctl = (s: ServerProcess) => s.socket.replace(/\.sock$/, '.ctl');
const status = async (s: ServerProcess) => (await control(ctl(s), { get: 'migration' })).migration;

/** What edu's liveness register reads on a server (a client comes and goes). */
async function liveness(s: ServerProcess): Promise<number> {
  const c = await VfioUserClient.connect(s.socket);
  const v = await c.read32(0, Edu.LIVENESS);
  c.close();
  await until(async () => !(await control(ctl(s), { get: 'client' })).connected, 'client gone');
  return v;
}

function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(1);
  return lines[0];
}

/** NDJSON: every line an event; the last one the report. */
function events(stdout: string): Record<string, any>[] {
  return stdout
    .trimEnd()
    .split('\n')
    .map(l => JSON.parse(l));
}

describe('vfu-migrate', () => {
  it('migrates there and back; --json streams progress events, then the report', async () => {
    const a = await server('ma'),
      b = await server('mb');
    try {
      // There and back: after the first migration the device runs on b, and a is migrated away.
      for (const [protocol, from, to] of [
        ['v2', a, b],
        ['v1', b, a],
      ] as const) {
        const r = migrate(from, to, '--protocol', protocol, '--workload', '--json');
        expect(r.status, r.stderr).toBe(0);
        const ev = events(r.stdout);
        const rep = ev.at(-1)!;
        expect(ev.slice(0, -1).length).toBeGreaterThan(0);
        for (const e of ev.slice(0, -1))
          expect(e).toMatchObject({ event: 'progress', phase: expect.any(String) });
        expect(rep).toMatchObject({
          event: 'report',
          outcome: 'completed',
          protocol,
          source: { state: 'STOP' },
          destination: { state: 'RUNNING' },
        });
        expect(rep.bytes).toBeGreaterThan(1 << 20);
        for (const k of ['downtimeMs', 'stopCopyMs', 'resumeMs', 'totalMs'])
          expect(String(rep[k]), k).toMatch(/^\d+(\.\d)?$/);
        expect(String(rep.throughputGiBps)).toMatch(/^\d+(\.\d{1,3})?$/);
      }
      // A migration out of a device that was migrated away is refused: it must not run again.
      const refused = migrate(b, a);
      expect(refused.status).toBe(1);
      expect(refused.stdout).toMatch(/migrated away/);
      const cancelled = migrate(a, b, '--cancel-after', '1');
      expect(cancelled.status).toBe(1);
      expect(cancelled.stdout).toMatch(
        /migration cancelled \(v2\): cancelled after 1 pre-copy iterations/,
      );
      expect(cancelled.stdout).toMatch(/devices\s+source RUNNING, destination RUNNING/);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('refuses another device (edu 1M into edu 2M), saying why', async () => {
    const a = await server('id1', '--memory', '1M'),
      b = await server('id2', '--memory', '2M');
    try {
      for (const protocol of ['v2', 'v1']) {
        const r = migrate(a, b, '--protocol', protocol);
        expect(r.status).toBe(1);
        expect(r.stdout).toContain(
          'the destination refused the state: not the same edu device: BAR2 is mem64 ' +
            'prefetchable 1 MiB in the stream but mem64 prefetchable 2 MiB on this device',
        );
        expect(r.stdout).toMatch(/devices\s+source RUNNING, destination RUNNING/);
      }
      // Logged before the refusal was sent, so in the log once vfu-migrate has exited.
      expect(b.output()).toMatch(/ WARN {2}migration: refused: not the same edu device: BAR2/);
      expect(await status(b)).toMatchObject({ state: 'RUNNING', used: false });
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('refuses a virtio-blk of another capacity (virtio config is in the identity)', async () => {
    const a = await server(
      'vb1',
      '--device',
      'virtio-blk',
      '--disk',
      tmp.path('1.img'),
      '--size',
      '1M',
    );
    const b = await server(
      'vb2',
      '--device',
      'virtio-blk',
      '--disk',
      tmp.path('2.img'),
      '--size',
      '2M',
    );
    try {
      const r = migrate(a, b);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(
        /the destination refused the state: not the same virtio-blk device: virtio config is /,
      );
      expect(r.stdout).toMatch(/devices\s+source RUNNING, destination RUNNING/);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('refuses a destination running a used device of its own unless --force', async () => {
    const a = await server('fa'),
      b = await server('fb');
    try {
      expect(await status(b)).toMatchObject({ state: 'RUNNING', used: false });
      // b's device is used (a register written), then reset: fresh again.
      const c = await VfioUserClient.connect(b.socket);
      await c.write32(0, Edu.LIVENESS, 42);
      expect(await status(b)).toMatchObject({ used: true });
      await c.reset();
      expect(await status(b)).toMatchObject({ used: false });
      // Config space alone counts too: a guest enabled the device in its Command register.
      await c.config.write16(4, 0x6);
      expect(await status(b)).toMatchObject({ used: true });
      await c.reset();
      expect(await status(b)).toMatchObject({ used: false });
      await c.write32(0, Edu.LIVENESS, 42);
      c.close();
      await until(async () => !(await control(ctl(b), { get: 'client' })).connected, 'c to go');
      const r = migrate(a, b);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(
        /the destination is running a device of its own .*overwrite that state: use --force/,
      );
      expect(r.stdout).toMatch(/devices\s+source RUNNING, destination RUNNING/);
      expect(await liveness(b)).toBe(~42 >>> 0); // b's own state, untouched
      // restore and receive refuse it too, before touching it.
      const file = tmp.path('fa.state');
      const saved = run(['save', '--source', a.socket, '--file', file, '--resume']);
      expect(saved.status, saved.stderr).toBe(0);
      const restored = run(['restore', '--destination', b.socket, '--file', file]);
      expect(restored.status).toBe(1);
      expect(oneLine(restored.stderr)).toMatch(
        /^vfu-migrate: restore: the destination is running a device of its own .*use --force/,
      );
      const listen = ['--listen', '127.0.0.1:0', '--insecure'];
      const received = run(['receive', '--destination', b.socket, ...listen]);
      expect(received.status).toBe(1);
      expect(oneLine(received.stderr)).toMatch(/^vfu-migrate: receive: the destination is running/);
      expect(await liveness(b)).toBe(~42 >>> 0); // b's own state, still untouched
      const forced = migrate(a, b, '--force');
      expect(forced.status, forced.stdout).toBe(0);
      expect(await liveness(b)).toBe(0); // a's state (nothing written there yet)
      const c2 = await VfioUserClient.connect(b.socket);
      await c2.write32(0, Edu.LIVENESS, 7); // used again
      c2.close();
      await until(async () => !(await control(ctl(b), { get: 'client' })).connected, 'c2 to go');
      const forcedRestore = run(['restore', '--destination', b.socket, '--file', file, '--force']);
      expect(forcedRestore.status, forcedRestore.stderr).toBe(0);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('vfu-migrate never hangs', () => {
  it('a side unreachable or mute: one line naming it, exit 1', async () => {
    const a = await server('ha');
    // A listener that takes connections and never answers (a wedged server).
    const mute = createServer(() => {});
    const mutePath = tmp.path('mute.sock');
    await new Promise<void>(r => mute.listen(mutePath, r));
    const busy = await server('hb');
    const holder = await VfioUserClient.connect(busy.socket);
    try {
      for (const [args, says] of [
        [
          ['--source', a.socket, '--destination', mutePath, '--connect-timeout', '300'],
          new RegExp(
            '^vfu-migrate: cannot connect to the destination .*mute\\.sock: ' +
              'no answer to the vfio-user negotiation within 300 ms$',
          ),
        ],
        [
          ['--source', tmp.path('none.sock'), '--destination', a.socket],
          /^vfu-migrate: cannot connect to the source .*none\.sock: no such socket/,
        ],
        [
          ['--source', a.socket, '--destination', busy.socket],
          /^vfu-migrate: cannot connect to the destination .*hb\.sock: the server already has a/,
        ],
      ] as const) {
        const r = run([...args]);
        expect(r.status, r.stderr).toBe(1);
        expect(oneLine(r.stderr)).toMatch(says);
      }
      // The source was let go each time: it takes a client and still runs.
      expect(await status(a)).toMatchObject({ state: 'RUNNING', migratedAway: false });
      const c = await VfioUserClient.connect(a.socket);
      c.close();
    } finally {
      holder.close();
      mute.close();
      await a.stop();
      await busy.stop();
    }
  });

  it('the same socket twice, or a bad number: one line, exit 2', () => {
    const s = tmp.path('same.sock');
    const link = tmp.path('link.sock');
    symlinkSync(s, link);
    createServer().listen(s).unref(); // a socket file to stat (the symlink leads to it)
    const cases = [
      [['--source', s, '--destination', s], /the same socket/],
      [['--source', s, '--destination', link], /the same socket/],
      [['--source', 'x'], /--source and --destination are required/],
      [['--protocol', 'v3'], /--protocol must be v1 or v2; got "v3"/],
      [['--max-iterations', '1.5'], /--max-iterations takes a whole number .*; got "1\.5"/],
      [['--max-iterations', '0'], /--max-iterations takes a whole number from 1 /],
      [['--cancel-after', '1e20'], /--cancel-after takes a whole number .*; got "1e20"/],
      [['--cancel-after', '-3'], /Option '--cancel-after' argument is ambiguous \(--help/],
      [['--downtime-limit', 'soon'], /--downtime-limit takes a whole number .*; got "soon"/],
      [['--connect-timeout', '5'], /--connect-timeout takes a whole number from 100 /],
      [['--bogus'], /Unknown option '--bogus'/],
    ] as const;
    for (const [args, says] of cases as readonly (readonly [readonly string[], RegExp])[]) {
      const full = args.includes('--source')
        ? args
        : ['--source', 'p', '--destination', 'q', ...args];
      const r = run([...full]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(oneLine(r.stderr)).toMatch(says);
    }
  });

  it('Ctrl-C: one line, exit 130, both devices left as a failure leaves them', async () => {
    const a = await server('ia', '--memory', '16M'),
      b = await server('ib', '--memory', '16M');
    try {
      // --downtime-limit 0: pre-copy goes on until --max-iterations, far beyond this test.
      const args = ['--source', a.socket, '--destination', b.socket, '--json'];
      const p = spawn(
        process.execPath,
        [migrateBin, ...args, '--downtime-limit', '0', '--max-iterations', '1000000'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '',
        err = '';
      p.stdout.on('data', d => {
        out += d;
      });
      p.stderr.on('data', d => {
        err += d;
      });
      const code = new Promise(r => p.once('exit', c => r(c)));
      await until(() => /"event":"progress"/.test(out), 'pre-copy to run', 20_000);
      p.kill('SIGINT');
      expect(await code).toBe(130);
      expect(oneLine(err)).toBe(
        'vfu-migrate: interrupted (SIGINT): migration abandoned; ' +
          'source RUNNING, destination RUNNING',
      );
      expect(events(out).at(-1)).toMatchObject({
        event: 'report',
        outcome: 'cancelled',
        error: 'interrupted (SIGINT)',
      });
      expect(await status(a)).toMatchObject({ state: 'RUNNING', migratedAway: false });
      expect(await status(b)).toMatchObject({ state: 'RUNNING' });
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
