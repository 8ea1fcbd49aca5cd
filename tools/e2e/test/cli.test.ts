// The two commands as a user runs them: options, exit codes, the listening line, the socket's
// life, and vfu-migrate's report.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer } from '@vfu/qemu-harness';
import { tempDir, until } from './helpers.ts';

const req = createRequire(import.meta.url);
const serverBin = req.resolve('@vfu/vfio-user-server/bin/vfio-user-server.mjs');
const migrateBin = req.resolve('@vfu/vfu-migrate/bin/vfu-migrate.mjs');
const tmp = tempDir();
afterAll(() => tmp.cleanup());
const run = (bin: string, args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });

describe('vfio-user-server', () => {
  it('bad options: a clear message, the usage, exit code 2', () => {
    for (const args of [
      ['--bogus'],
      ['--device', 'nope'],
      ['--device', 'template', '--memory', '4M'],
      ['--log-level', 'loud'],
      ['--device', 'edu', '--memory', '3M', '--socket', tmp.path('x.sock')],
    ]) {
      const r = run(serverBin, args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/vfio-user-server: /);
    }
    expect(run(serverBin, ['--device', 'nope']).stderr).toMatch(
      /unknown device "nope"; choose one of: edu, gpio-idio16, template/,
    );
    expect(
      run(serverBin, ['--device', 'edu', '--memory', '3M', '--socket', tmp.path('y.sock')]).stderr,
    ).toMatch(/power of two/);
    const help = run(serverBin, ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--memory VALUE/);
  });

  // The listening line carries the -device argument for QEMU.
  it('prints the listening line, refuses a socket in use, cleans up on SIGTERM', async () => {
    const sock = tmp.path('live.sock');
    const s = await startServer(sock, ['--device', 'template']);
    expect(s.output()).toContain(
      `listening on ${sock}; attach QEMU with: -device ` +
        `'{"driver":"vfio-user-pci","socket":{"path":"${sock}","type":"unix"}}'`,
    );
    const second = run(serverBin, ['--socket', sock]);
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/in use by another server/);
    expect(await s.stop()).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('replaces a socket file left behind by a dead server', async () => {
    const sock = tmp.path('stale.sock');
    const p = spawn(process.execPath, [serverBin, '--socket', sock, '--device', 'template'], {
      stdio: 'ignore',
    });
    await until(() => existsSync(sock), 'socket');
    p.kill('SIGKILL');
    await until(() => p.signalCode !== null, 'dead');
    expect(existsSync(sock)).toBe(true);
    const s = await startServer(sock, ['--device', 'template']);
    await s.stop();
  });
});

describe('vfu-migrate', () => {
  it('migrates between two servers and prints a JSON report; exit 0', async () => {
    const a = await startServer(tmp.path('ma.sock'), [
      '--device',
      'edu',
      '--on-disconnect',
      'keep',
    ]);
    const b = await startServer(tmp.path('mb.sock'), [
      '--device',
      'edu',
      '--on-disconnect',
      'keep',
    ]);
    try {
      // There and back: after the first migration the device runs on b, and a is migrated away.
      for (const [protocol, from, to] of [
        ['v2', a, b],
        ['v1', b, a],
      ] as const) {
        const r = run(migrateBin, [
          '--source',
          from.socket,
          '--destination',
          to.socket,
          '--protocol',
          protocol,
          '--workload',
          '--json',
        ]);
        expect(r.status, r.stderr).toBe(0);
        const rep = JSON.parse(r.stdout);
        expect(rep).toMatchObject({
          outcome: 'completed',
          protocol,
          source: { state: 'STOP' },
          destination: { state: 'RUNNING' },
        });
        expect(rep.bytes).toBeGreaterThan(1 << 20);
      }
      // A migration out of a device that was migrated away is refused: it must not run again.
      const refused = run(migrateBin, ['--source', b.socket, '--destination', a.socket]);
      expect(refused.status).toBe(1);
      expect(refused.stdout).toMatch(/migrated away/);
      const cancelled = run(migrateBin, [
        '--source',
        a.socket,
        '--destination',
        b.socket,
        '--cancel-after',
        '1',
      ]);
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

  it('bad options exit 2; an unreachable server exits 1 with the reason', () => {
    expect(run(migrateBin, ['--source', 'x']).status).toBe(2);
    expect(
      run(migrateBin, ['--source', 'a', '--destination', 'b', '--protocol', 'v3']).status,
    ).toBe(2);
    const r = run(migrateBin, [
      '--source',
      tmp.path('none.sock'),
      '--destination',
      tmp.path('none2.sock'),
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot connect: .*ENOENT/);
  });
});
