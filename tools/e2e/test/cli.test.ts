// vfio-user-server as a user runs it: options, exit codes, the listening line, its sockets'
// lives (--socket and --control alike), the control socket's limits, signals and logging.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createRequire } from 'node:module';
import { startServer } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { tempDir, until, control, clientGone } from './helpers.ts';

const req = createRequire(import.meta.url);
const serverBin = req.resolve('@vfu/vfio-user-server/bin/vfio-user-server.mjs');
const migrateBin = req.resolve('@vfu/vfu-migrate/bin/vfu-migrate.mjs');
const tmp = tempDir();
afterAll(() => tmp.cleanup());
const run = (bin: string, args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });

/** The exit code (or signal) of a process, once it has exited. */
const exited = (p: ChildProcess): Promise<number | string | null> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve(p.exitCode ?? p.signalCode)
    : new Promise(r => p.once('exit', (code, sig) => r(code ?? sig)));

/** stderr as lines, with the exactly-one-line rule checked. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(1);
  return lines[0];
}

describe('vfio-user-server options', () => {
  it('bad options: one line saying what was given, exit code 2, nothing created', () => {
    const sock = tmp.path('bad.sock');
    for (const [args, says] of [
      [['--bogus'], /Unknown option '--bogus'/],
      [['--device', 'nope'], /unknown device "nope"; choose one of: edu, gpio-idio16, template/],
      [['--device', 'template', '--memory', '4M'], /--memory does not apply to device template/],
      [['--log-level', 'loud'], /--log-level must be error or warn or info or debug; got "loud"/],
      [['--log-format', 'xml'], /--log-format must be text or json; got "xml"/],
      [['--on-disconnect', 'maybe'], /--on-disconnect must be reset or keep; got "maybe"/],
      [['--memory', '3M'], /cannot build edu --memory 3M: .*not a power of two/],
      [['--memory', '0'], /cannot build edu --memory 0: a size of zero \("0"\)/],
      [['--memory', '12Q'], /--memory 12Q: not a size: "12Q" \(examples: .*1T\)/],
      [['--memory', '99999999999999999999'], /is too large a size/],
      [['--socket', ''], /--socket needs a value/],
      [['--control', sock], /--control and --socket are the same path/],
    ] as const) {
      const r = run(serverBin, ['--socket', sock, ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(oneLine(r.stderr)).toMatch(says);
      expect(r.stdout).toBe('');
      expect(existsSync(sock)).toBe(false);
    }
    const help = run(serverBin, ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--memory VALUE/);
  });

  it('sizes take K, M, G and T', async () => {
    const s = await startServer(tmp.path('tera.sock'), ['--device', 'edu', '--memory', '1T']);
    try {
      const c = await VfioUserClient.connect(s.socket);
      expect((await c.regionInfo(2)).size).toBe(2 ** 40); // a sparse memfd: nothing allocated
      c.close();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('both commands answer --version', () => {
    for (const [bin, name] of [
      [serverBin, 'vfio-user-server'],
      [migrateBin, 'vfu-migrate'],
    ]) {
      const r = run(bin, ['--version']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+\\n$`));
    }
  });
});

describe('vfio-user-server sockets', () => {
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
    expect(oneLine(second.stderr)).toMatch(/in use by another server/);
    expect(await s.stop()).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('replaces sockets left behind by a dead server, the control socket too', async () => {
    const sock = tmp.path('stale.sock'),
      ctl = tmp.path('stale.ctl');
    const args = ['--socket', sock, '--control', ctl, '--device', 'template'];
    const p = spawn(process.execPath, [serverBin, ...args], { stdio: 'ignore' });
    await until(() => existsSync(sock) && existsSync(ctl), 'sockets');
    p.kill('SIGKILL');
    await exited(p);
    expect(existsSync(sock) && existsSync(ctl)).toBe(true);
    const s = await startServer(sock, ['--control', ctl, '--device', 'template']);
    expect(await control(ctl, { get: 'state' })).toMatchObject({ ok: true });
    await s.stop();
  });

  it('--control is checked like --socket, before anything listens', async () => {
    const a = await startServer(tmp.path('ca.sock'), ['--control', tmp.path('ca.ctl')]);
    const sock = tmp.path('cb.sock');
    const file = tmp.path('precious.txt');
    writeFileSync(file, 'keep me');
    for (const [ctl, says] of [
      [file, /control socket .*precious.txt exists and is not a socket; not replacing it/],
      [a.socket, /control socket .*ca.sock is in use by another server/],
      [tmp.path('ca.ctl'), /control socket .*ca.ctl is in use by another server/],
      [tmp.path('nodir/x.ctl'), /control socket .*x.ctl: directory .*nodir does not exist/],
      [tmp.path(`${'d'.repeat(120)}.ctl`), /a UNIX socket path holds at most 107/],
    ] as const) {
      const r = run(serverBin, ['--socket', sock, '--control', ctl]);
      expect(r.status, ctl).toBe(1);
      expect(oneLine(r.stderr)).toMatch(says);
      expect(r.stdout).toBe(''); // no listening line
      expect(existsSync(sock)).toBe(false); // nothing listened
    }
    expect(readFileSync(file, 'utf8')).toBe('keep me');
    // The other server lost nothing: its device socket and its control socket both answer.
    const c = await VfioUserClient.connect(a.socket);
    c.close();
    expect(await control(tmp.path('ca.ctl'), { get: 'state' })).toMatchObject({ ok: true });
    await a.stop();
  });
});

/** Sends raw text on a control socket; resolves with what came back when the server closed. */
function rawControl(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let got = '';
    s.setEncoding('utf8');
    s.on('data', d => {
      got += d;
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
    s.write(text);
  });
}

describe('vfio-user-server control socket', () => {
  it('bounds the line length and range-checks control values', async () => {
    const ctl = tmp.path('gpio.ctl');
    const s = await startServer(tmp.path('gpio.sock'), [
      '--device',
      'gpio-idio16',
      '--control',
      ctl,
    ]);
    try {
      const reply = JSON.parse(await rawControl(ctl, 'x'.repeat(5000)));
      expect(reply).toEqual({ ok: false, error: 'request line longer than 4096 characters' });
      for (const value of [1e20, -1, 1.5, 65536, '8', null])
        expect((await control(ctl, { set: 'inputs', value })).ok, String(value)).toBe(false);
      expect(await control(ctl, { set: 'inputs', value: 1e20 })).toMatchObject({
        error: '"value" must be an integer from 0 to 4294967295; got 100000000000000000000',
      });
      expect(await control(ctl, { set: 'inputs', value: 65536 })).toMatchObject({
        error: 'inputs takes 16 bits, 0 to 65535 (0xffff); got 65536',
      });
      expect(await control(ctl, { set: 'inputs', value: 0xa5 })).toEqual({ ok: true });
      expect((await control(ctl, { get: 'state' })).state.inputs).toBe(0xa5);
      expect(await control(ctl, { set: 'toString', value: 1 })).toMatchObject({ ok: false });
    } finally {
      await s.stop();
    }
  });
});

describe('vfio-user-server signals', () => {
  it('SIGHUP, SIGQUIT, SIGTERM and SIGINT each remove both sockets', async () => {
    for (const sig of ['SIGHUP', 'SIGQUIT', 'SIGTERM', 'SIGINT'] as const) {
      const sock = tmp.path(`${sig}.sock`),
        ctl = tmp.path(`${sig}.ctl`);
      const s = await startServer(sock, ['--device', 'template', '--control', ctl]);
      s.proc.kill(sig);
      expect(await exited(s.proc), sig).toBe(0);
      expect(existsSync(sock), sig).toBe(false);
      expect(existsSync(ctl), sig).toBe(false);
    }
  });

  it('SIGUSR1 opens no debugger', async () => {
    const ctl = tmp.path('usr1.ctl');
    const s = await startServer(tmp.path('usr1.sock'), ['--device', 'template', '--control', ctl]);
    s.proc.kill('SIGUSR1');
    // The signal is pending before the server reads the first request, so its handler runs in
    // the event-loop turn that answers it at the latest; the second answer comes after that.
    expect(await control(ctl, { get: 'state' })).toMatchObject({ ok: true });
    expect(await control(ctl, { get: 'state' })).toMatchObject({ ok: true });
    expect(s.output()).toMatch(/SIGUSR1 ignored/);
    expect(s.output()).not.toMatch(/Debugger listening/);
    expect(await s.stop()).toBe(0);
  });
});

describe('vfio-user-server logging', () => {
  const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN |INFO |DEBUG|TRACE) /;

  /** A server at `args`, one client session through it; its log lines once the client left. */
  async function session(name: string, args: string[]): Promise<string[]> {
    const ctl = tmp.path(`${name}.ctl`);
    const s = await startServer(tmp.path(`${name}.sock`), [...args, '--control', ctl]);
    try {
      const c = await VfioUserClient.connect(s.socket);
      c.close();
      await clientGone(ctl, 1);
    } finally {
      await s.stop();
    }
    return s
      .output()
      .split('\n')
      .filter(l => l && !l.startsWith('vfio-user-server: '));
  }

  it('--log-level debug adds debug lines; every line has a timestamp and a level', async () => {
    const info = await session('info', []);
    const debug = await session('debug', ['--log-level', 'debug']);
    for (const l of [...info, ...debug]) expect(l).toMatch(ISO);
    expect(info.some(l => / DEBUG /.test(l))).toBe(false);
    expect(debug.filter(l => / DEBUG /.test(l)).join('\n')).toMatch(/client negotiated/);
    const warn = await session('warn', ['--log-level', 'warn']);
    expect(warn.filter(l => / INFO /.test(l))).toEqual([]);
  });

  it('--log-format json: one object a line, with time, level and message', async () => {
    const lines = await session('json', ['--log-format', 'json', '--log-level', 'debug']);
    expect(lines.length).toBeGreaterThan(2);
    for (const l of lines) {
      const r = JSON.parse(l);
      expect(r).toMatchObject({ level: expect.any(String), msg: expect.any(String) });
      expect(new Date(r.time).getTime()).toBeGreaterThan(0);
    }
    expect(lines.map(l => JSON.parse(l).level)).toContain('debug');
  });
});
