// Migration between hosts and to files, over real sockets: `vfu-migrate send` and `receive`
// (in this process, and as commands) over TCP and TLS, every device model, v2 and v1; a TCP
// proxy that delays, cuts or corrupts the wire at chosen points; snapshots saved, inspected and
// restored.
import { describe, it, expect, afterEach, beforeAll } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import {
  send,
  receive,
  save,
  restore,
  inspectFile,
  memoryWorkload,
  type ReceiveReport,
  type ReceiveOptions,
  type SendOptions,
} from '@vfu/vfu-migrate';
import { S } from '@vfu/fsm';
import { Errno } from '@vfu/protocol';
import { Reg as Edu } from '@vfu/device-edu';
import { Reg as Tpl } from '@vfu/device-template';
import { tempDir, control, until } from './helpers.ts';
import { tcpProxy, type Fault } from './tcp-proxy.ts';

const tmp = tempDir('vfu-remote-');
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

const SECRET = Buffer.from('a shared secret of some length');

interface Side {
  proc: ServerProcess;
  client: VfioUserClient;
  ctl: string;
}

let n = 0;
async function side(role: string, device: string, extra: string[] = []): Promise<Side> {
  const id = `${role}${++n}`;
  const ctl = tmp.path(`${id}.ctl`);
  const args = ['--device', device, '--on-disconnect', 'keep', '--control', ctl, ...extra];
  const proc = await startServer(tmp.path(`${id}.sock`), args);
  servers.push(proc);
  const client = await VfioUserClient.connect(proc.socket);
  clients.push(client);
  return { proc, client, ctl };
}

const CFG_CMD = 0x04;

/** Each model's distinctive state, set on a source; its check on a destination. */
const models: Record<
  string,
  {
    extra?: () => string[];
    set(c: VfioUserClient): Promise<void>;
    /** `c` holds what `ref` holds. */
    check(c: VfioUserClient, ref: VfioUserClient): Promise<void>;
  }
> = {
  edu: {
    extra: () => ['--memory', '1M'],
    set: async c => {
      await c.write32(0, Edu.LIVENESS, 0x1234);
      const mem = await c.mapRegion(2);
      // At byte 64 of a page: the workload (memoryWorkload) writes its first 8 bytes.
      for (let p = 0; p < mem.length / 4096; p += 5)
        mem.bytes(p * 4096 + 64, 4).set([p & 0xff, 7, 7, 7]);
      mem.release();
    },
    check: async (c, ref) => {
      expect(await c.read32(0, Edu.LIVENESS)).toBe(~0x1234 >>> 0);
      const mem = Buffer.from(await c.regionRead(2, 0, 1 << 20));
      expect(mem.subarray(5 * 4096 + 64, 5 * 4096 + 68)).toEqual(Buffer.from([5, 7, 7, 7]));
      expect(mem.equals(Buffer.from(await ref.regionRead(2, 0, 1 << 20)))).toBe(true);
    },
  },
  template: {
    set: c => c.write32(0, Tpl.SCRATCH, 0x5eed),
    check: async c => expect(await c.read32(0, Tpl.SCRATCH)).toBe(0x5eed),
  },
  'gpio-idio16': {
    set: c => c.write8(2, 0, 0xa5),
    check: async c => expect(await c.read8(2, 0)).toBe(0xa5),
  },
  'virtio-blk': {
    extra: () => ['--disk', tmp.path('disk.img'), '--size', '1M'],
    set: async () => {},
    check: async () => {},
  },
};

/** Sets a model's state and the PCI command register (config space moves too). */
async function dirty(model: string, c: VfioUserClient): Promise<void> {
  await c.config.write16(CFG_CMD, 0x6);
  await models[model].set(c);
}

/** The destination holds what the source held: the model's registers, config, declared state. */
async function sameDevice(model: string, src: Side, dst: Side): Promise<void> {
  expect(await dst.client.getState()).toBe(S.RUNNING);
  expect(await dst.client.config.read16(CFG_CMD)).toBe(0x6);
  await models[model].check(dst.client, src.client);
  const [a, b] = [
    await control(src.ctl, { get: 'state' }),
    await control(dst.ctl, { get: 'state' }),
  ];
  expect(b.state).toEqual(a.state);
}

/** A destination half listening on a free port of localhost; `port` once it listens. */
async function listening(
  dst: Side,
  o: Partial<ReceiveOptions> = {},
): Promise<{ port: number; done: Promise<ReceiveReport>; refused: string[] }> {
  const refused: string[] = [];
  let port = 0;
  const done = receive({
    destination: dst.client,
    listen: { host: '127.0.0.1', port: 0 },
    secret: SECRET,
    timeoutMs: 15_000,
    onListening: a => {
      port = a.port;
    },
    onRefused: (_, why) => refused.push(why),
    ...o,
  });
  await until(() => port, 'the destination half listening');
  return { port, done, refused };
}

const sendTo = (src: Side, port: number, o: Partial<SendOptions> = {}) =>
  send(src.client, { to: { host: '127.0.0.1', port }, secret: SECRET, timeoutMs: 15_000, ...o });

describe.each(['v2', 'v1'] as const)('every device model over %s', protocol => {
  for (const model of Object.keys(models)) {
    it(`${model}: send/receive over TCP, then save, inspect, restore`, async () => {
      const extra = models[model].extra?.() ?? [];
      const [src, dst] = [await side('src', model, extra), await side('dst', model, extra)];
      await dirty(model, src.client);
      // Pre-copy rounds with the source dirtying its memory; progress shows on both ends.
      const wl = await memoryWorkload(src.client, 16);
      const seen: string[] = [];
      const rx = await listening(dst, { onProgress: p => seen.push(p.phase) });
      const [rep, got] = await Promise.all([
        sendTo(src, rx.port, {
          protocol,
          workload: wl.round,
          maxIterations: 3,
          downtimeLimitMs: 0,
        }),
        rx.done,
      ]);
      wl.close();
      if (protocol === 'v2') expect(rep.iterations).toBe(3); // limit 0: never fits before that
      expect(seen).toContain('precopy');
      expect(seen.at(-1)).toBe('resume');
      expect(rep, rep.error).toMatchObject({
        outcome: 'completed',
        source: { state: 'STOP' },
        destination: { state: 'RUNNING' },
      });
      expect(got, got.error).toMatchObject({ outcome: 'completed', holder: 'destination' });
      expect(got.source?.outcome).toBe('completed');
      expect(got.bytes).toBe(rep.bytes);
      await sameDevice(model, src, dst);

      // The destination's device, now running the state, is saved and restored elsewhere.
      const file = tmp.path(`${model}-${protocol}.vfus`);
      const saved = await save(dst.client, file, { protocol });
      expect(saved, saved.error).toMatchObject({ outcome: 'completed', source: { state: 'STOP' } });
      const info = await inspectFile(file);
      expect(info.problem).toBeUndefined();
      expect(info.header?.deviceId).toBe(model);
      expect(info.bytes).toBe(saved.bytes);
      const third = await side('third', model, extra);
      const back = await restore(third.client, file, protocol === 'v2' ? 'v1' : 'v2');
      expect(back, back.error).toMatchObject({
        outcome: 'completed',
        destination: { state: 'RUNNING' },
      });
      await sameDevice(model, dst, third);
    });
  }
});

describe('faults on the wire', () => {
  async function rig(fault: Fault | null, signal?: AbortSignal) {
    const [src, dst] = [
      await side('src', 'edu', ['--memory', '1M']),
      await side('dst', 'edu', ['--memory', '1M']),
    ];
    await dirty('edu', src.client);
    const fresh = await dst.client.read32(0, Edu.LIVENESS); // what a reset device reads
    await dst.client.write32(0, Edu.LIVENESS, 5); // the destination's own state, before
    const rx = await listening(dst, { signal });
    const proxy = await tcpProxy(rx.port, fault);
    return { src, dst, rx, proxy, fresh };
  }

  /** A cut before the switchover: source RUNNING with its state, destination reset, reusable. */
  async function recovered(
    r: Awaited<ReturnType<typeof rig>>,
    rep: { source: { state: string } },
    touched = true,
  ) {
    expect(rep.source.state).toBe('RUNNING');
    expect(await r.src.client.getState()).toBe(S.RUNNING);
    expect(await r.src.client.read32(0, Edu.LIVENESS)).toBe(~0x1234 >>> 0);
    expect(await r.dst.client.getState()).toBe(S.RUNNING);
    // Reset (fresh), or untouched with its own state when the cut came before it was asked.
    expect(await r.dst.client.read32(0, Edu.LIVENESS)).toBe(touched ? r.fresh : ~5 >>> 0);
    // Reusable: the same destination takes the migration again.
    const again = await listening(r.dst);
    const [rep2, got2] = await Promise.all([sendTo(r.src, again.port), again.done]);
    expect(rep2.outcome, rep2.error).toBe('completed');
    expect(got2.outcome).toBe('completed');
    await sameDevice('edu', r.src, r.dst);
  }

  it('a delayed wire (every chunk held) still migrates', async () => {
    const r = await rig({ dir: 'up', kind: 'delay', at: 4096, delayMs: 5 });
    const [rep, got] = await Promise.all([sendTo(r.src, r.proxy.port), r.rx.done]);
    expect(r.proxy.fired()).toBe(true);
    expect(rep.outcome, rep.error).toBe('completed');
    expect(got.outcome).toBe('completed');
    await sameDevice('edu', r.src, r.dst);
    await r.proxy.close();
  });

  for (const at of [40, 700, 100_000, 600_000]) {
    it(`a cut at byte ${at} (before the switchover) leaves the source running`, async () => {
      const stop = new AbortController();
      const r = await rig({ dir: 'up', kind: 'cut', at }, stop.signal);
      const rep = await sendTo(r.src, r.proxy.port);
      expect(r.proxy.fired()).toBe(true);
      expect(rep.outcome).toBe('failed');
      if (at > 100) {
        expect(await r.rx.done).toMatchObject({ outcome: 'failed', holder: 'source' });
      } else {
        // Cut in the handshake: the destination half was never touched, and listens on.
        await until(() => r.rx.refused.length, 'the refusal');
        stop.abort('test over');
        expect(await r.rx.done).toMatchObject({ outcome: 'cancelled', holder: 'source' });
      }
      await recovered(r, rep, at > 100);
      await r.proxy.close();
    });
  }

  it('corrupted stream bytes are refused by the stream checks; the source runs on', async () => {
    const r = await rig({ dir: 'up', kind: 'corrupt', at: 300_000, xor: 0x04 });
    const [rep, got] = await Promise.all([sendTo(r.src, r.proxy.port), r.rx.done]);
    expect(r.proxy.fired()).toBe(true);
    expect(rep.outcome).toBe('failed');
    expect(rep.error).toMatch(/the destination gave up: the destination refused the stream/);
    expect(got).toMatchObject({ outcome: 'failed', holder: 'source' });
    expect(r.dst.proc.output()).toMatch(/checksum mismatch/);
    await recovered(r, rep);
    await r.proxy.close();
  });

  it('a corrupted control message breaks the wire: refused, the source runs on', async () => {
    // The first frame (HELLO) with its reserved field set: the destination half refuses it.
    const r = await rig({ dir: 'up', kind: 'corrupt', at: 3, xor: 0x01 });
    const rep = await sendTo(r.src, r.proxy.port);
    expect(rep.outcome).toBe('failed');
    await until(() => r.rx.refused.length, 'the refusal');
    expect(r.rx.refused[0]).toMatch(/reserved bits set in a HELLO frame/);
    // Still listening: a clean connection migrates.
    const [rep2, got] = await Promise.all([sendTo(r.src, r.rx.port), r.rx.done]);
    expect(rep2.outcome, rep2.error).toBe('completed');
    expect(got.outcome).toBe('completed');
    await r.proxy.close();
  });

  const SWITCHOVER = Buffer.from([7, 0, 0, 0, 2, 0, 0, 0, 0x7b, 0x7d]);

  it('a cut as the switchover goes: the source stays stopped, the destination reset', async () => {
    const r = await rig({ dir: 'up', kind: 'cut', match: SWITCHOVER });
    const [rep, got] = await Promise.all([sendTo(r.src, r.proxy.port), r.rx.done]);
    expect(r.proxy.fired()).toBe(true);
    expect(rep.outcome).toBe('failed');
    expect(rep.error).toMatch(/no answer to the switchover.*the source stays stopped/);
    expect(rep.source.state).toBe('STOP');
    expect(rep.destination.state).toMatch(/unknown/);
    expect(got).toMatchObject({ outcome: 'failed', holder: 'source' });
    expect(got.error).toMatch(/before the switchover.*stay with the source/);
    expect(await r.dst.client.read32(0, Edu.LIVENESS)).toBe(r.fresh);
    // Nobody runs the device; the operator, knowing the destination does not, resumes the source.
    r.src.client.close();
    clients.splice(clients.indexOf(r.src.client), 1);
    await until(async () => (await control(r.src.ctl, { get: 'migration' })).migration, 'status');
    expect((await control(r.src.ctl, { get: 'migration' })).migration).toMatchObject({
      state: 'STOP',
      migratedAway: true,
    });
    await control(r.src.ctl, { do: 'resume' });
    const again = await VfioUserClient.connect(r.src.proc.socket);
    clients.push(again);
    expect(await again.getState()).toBe(S.RUNNING);
    expect(await again.read32(0, Edu.LIVENESS)).toBe(~0x1234 >>> 0);
    await r.proxy.close();
  });

  it('a cut after the destination ran: it holds the device, the source stays stopped', async () => {
    const r = await rig({ dir: 'down', kind: 'cut', match: Buffer.from('"step":"switchover"') });
    const [rep, got] = await Promise.all([sendTo(r.src, r.proxy.port), r.rx.done]);
    expect(r.proxy.fired()).toBe(true);
    expect(got).toMatchObject({ outcome: 'completed', holder: 'destination' });
    expect(got.error).toMatch(/this destination runs the device; the source stays stopped/);
    expect(rep.outcome).toBe('failed');
    expect(rep.source.state).toBe('STOP');
    await sameDevice('edu', r.src, r.dst);
    // Exactly one copy runs: the source, once its client goes, refuses to run (migrated away).
    r.src.client.close();
    clients.splice(clients.indexOf(r.src.client), 1);
    const again = await VfioUserClient.connect(r.src.proc.socket);
    clients.push(again);
    expect(await again.getState()).toBe(S.STOP);
    await expect(again.setState(S.RUNNING)).rejects.toMatchObject({ errno: Errno.EPERM });
    await r.proxy.close();
  });
});

describe('who may push a state into a listening destination', () => {
  it('a half without the secret, or another, is refused; the destination untouched', async () => {
    const [src, dst] = [await side('src', 'edu'), await side('dst', 'edu')];
    await dirty('edu', src.client);
    await dst.client.write32(0, Edu.LIVENESS, 9);
    const rx = await listening(dst);
    const none = await sendTo(src, rx.port, { secret: undefined });
    expect(none.outcome).toBe('failed');
    expect(none.error).toMatch(/the source does not prove the shared secret/);
    const other = await sendTo(src, rx.port, { secret: Buffer.from('another secret of a length') });
    expect(other.error).toMatch(/does not prove the shared secret/);
    expect(rx.refused).toHaveLength(2);
    expect(await dst.client.read32(0, Edu.LIVENESS)).toBe(~9 >>> 0);
    expect(await src.client.getState()).toBe(S.RUNNING);
    const [ok, got] = await Promise.all([sendTo(src, rx.port), rx.done]);
    expect(ok.outcome, ok.error).toBe('completed');
    expect(got.outcome).toBe('completed');
  });

  describe('TLS', () => {
    const certs = (name: string) => {
      const [cert, key] = [tmp.path(`${name}.crt`), tmp.path(`${name}.key`)];
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '2',
          '-subj',
          `/CN=${name}`,
          '-addext',
          'subjectAltName=IP:127.0.0.1,DNS:localhost',
        ],
        { stdio: 'ignore' },
      );
      return { cert, key };
    };
    let ours: { cert: string; key: string }, stranger: { cert: string; key: string };
    beforeAll(() => {
      ours = certs('ours');
      stranger = certs('stranger');
    });

    it("certificates the CA signed migrate; a stranger's certificate is refused", async () => {
      const [src, dst] = [await side('src', 'template'), await side('dst', 'template')];
      await dirty('template', src.client);
      const tls = { ...ours, ca: ours.cert };
      const rx = await listening(dst, { tls, secret: undefined });
      const bad = await sendTo(src, rx.port, {
        tls: { ...stranger, ca: ours.cert },
        secret: undefined,
      });
      expect(bad.outcome).toBe('failed');
      await until(() => rx.refused.length, 'the TLS refusal');
      expect(rx.refused[0]).toMatch(/^TLS: /);
      const anon = await sendTo(src, rx.port, { tls: { ca: ours.cert }, secret: undefined });
      expect(anon.outcome).toBe('failed');
      expect(await src.client.getState()).toBe(S.RUNNING);
      const [rep, got] = await Promise.all([
        sendTo(src, rx.port, { tls, secret: undefined }),
        rx.done,
      ]);
      expect(rep.outcome, rep.error).toBe('completed');
      expect(got.outcome).toBe('completed');
      await sameDevice('template', src, dst);
    });
  });
});

describe('the commands', () => {
  const bin = createRequire(import.meta.url).resolve('@vfu/vfu-migrate/bin/vfu-migrate.mjs');
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>(resolve => {
      const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '',
        err = '';
      p.stdout.on('data', d => {
        out += d;
      });
      p.stderr.on('data', d => {
        err += d;
      });
      p.on('close', code => resolve({ code: code ?? -1, out, err }));
      runs.push({
        get err() {
          return err;
        },
      });
    });
  const runs: { readonly err: string }[] = [];

  it('receive and send as two processes over TCP with a shared secret', async () => {
    const [src, dst] = [await side('src', 'gpio-idio16'), await side('dst', 'gpio-idio16')];
    await dirty('gpio-idio16', src.client);
    src.client.close();
    dst.client.close();
    clients.length = 0;
    const secretFile = tmp.path('secret');
    writeFileSync(secretFile, `${SECRET.toString()}\n`);
    const rx = run([
      'receive',
      '--destination',
      dst.proc.socket,
      '--listen',
      '127.0.0.1:0',
      '--secret-file',
      secretFile,
      '--json',
    ]);
    const port = await until(
      () => /listening on [^\s]+:(\d+)/.exec(runs.at(-1)!.err)?.[1],
      'receive listening',
      30_000,
    );
    const tx = await run([
      'send',
      '--source',
      src.proc.socket,
      '--to',
      `127.0.0.1:${port}`,
      '--secret-file',
      secretFile,
      '--protocol',
      'v1',
    ]);
    expect(tx.code, tx.out + tx.err).toBe(0);
    expect(tx.out).toMatch(/migration completed \(v1\)/);
    const got = await rx;
    expect(got.code, got.err).toBe(0);
    // --json is NDJSON: progress events as the stream arrives, then the report, a line each.
    const events = got.out
      .trimEnd()
      .split('\n')
      .map(l => JSON.parse(l));
    expect(events.at(-1)).toMatchObject({
      event: 'report',
      outcome: 'completed',
      holder: 'destination',
    });
    expect(events.slice(0, -1).length).toBeGreaterThan(0);
    expect(events.slice(0, -1).every(e => e.event === 'progress')).toBe(true);
    const c = await VfioUserClient.connect(dst.proc.socket);
    clients.push(c);
    expect(await c.read8(2, 0)).toBe(0xa5);
  });

  it('save, inspect, restore; a damaged file is named and refused before any device', async () => {
    const [src, dst] = [await side('src', 'edu'), await side('dst', 'edu')];
    await dirty('edu', src.client);
    src.client.close();
    dst.client.close();
    clients.length = 0;
    const file = tmp.path('cli.vfus');
    const saved = await run(['save', '--source', src.proc.socket, '--file', file, '--resume']);
    expect(saved.code, saved.out + saved.err).toBe(0);
    expect(saved.out).toMatch(/devices +source RUNNING, destination file/);
    const again = await run(['save', '--source', src.proc.socket, '--file', file]);
    expect(again.code).toBe(1);
    expect(again.out).toMatch(/exists: remove it or choose another file/);
    const shown = await run(['inspect', file]);
    expect(shown.code, shown.err).toBe(0);
    expect(shown.out).toMatch(/model +edu, state version \d+/);
    expect(shown.out).toMatch(/complete; every checksum good/);
    const bad = tmp.path('bad.vfus');
    const bytes = readFileSync(file);
    bytes[bytes.length >> 1] ^= 0x40;
    writeFileSync(bad, bytes);
    const badShown = await run(['inspect', bad]);
    expect(badShown.code).toBe(1);
    expect(badShown.out).toMatch(/NOT USABLE: checksum mismatch/);
    const refused = await run(['restore', '--destination', dst.proc.socket, '--file', bad]);
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/not a usable snapshot: checksum mismatch/);
    expect(dst.proc.output()).not.toMatch(/checksum mismatch/); // never reached the device
    const ok = await run(['restore', '--destination', dst.proc.socket, '--file', file]);
    expect(ok.code, ok.out + ok.err).toBe(0);
    const c = await VfioUserClient.connect(dst.proc.socket);
    clients.push(c);
    const ref = await VfioUserClient.connect(src.proc.socket);
    clients.push(ref);
    await models.edu.check(c, ref);
    expect(existsSync(`${file}.partial`)).toBe(false);
  });

  it('bad options are one line and exit 2; receive insists on a way to authenticate', async () => {
    const r = await run(['receive', '--destination', '/nowhere', '--listen', '9']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--secret-file, --tls-ca or --insecure/);
    const s = await run(['send', '--source', 'x', '--to', 'host:notaport']);
    expect(s.code).toBe(2);
    expect(s.err).toMatch(/--to: "host:notaport" is not \[HOST:\]PORT/);
  });
});
