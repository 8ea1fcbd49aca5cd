// Hostile clients and faults against a real server process: after each, the server serves on,
// no fd leaks (counted in its /proc/PID/fd), memory stays bounded, and migrated state is either
// complete at the destination or untouched at the source.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import {
  connectUnix,
  MessageSocket,
  memfdCreate,
  eventfdCreate,
  peerHasReadAll,
  truncate,
  type OwnedFd,
} from '@vfu/native';
import { encode, encodeVersion, Errno, featureData, HEADER_SIZE } from '@vfu/protocol';
import { S } from '@vfu/fsm';
import { Reg as Edu } from '@vfu/device-edu';
import {
  tempDir,
  until,
  readToEnd,
  clientGone,
  stopProcess,
  ControlConnection,
} from './helpers.ts';

// Live sessions (VFU_FUZZ_RUNS is the codec's count).
const RUNS = Number(process.env.VFU_FUZZ_SESSIONS ?? 60);
const tmp = tempDir();
let server: ServerProcess;
const ctl = tmp.path('edu.ctl');
/** Kept open: a connection a query would open and close would skew the fd counts. */
let control: ControlConnection;
beforeAll(async () => {
  server = await startServer(tmp.path('edu.sock'), [
    '--device',
    'edu',
    '--memory',
    '1M',
    '--on-disconnect',
    'keep',
    '--control',
    ctl,
  ]);
  control = await ControlConnection.open(ctl);
});
afterAll(async () => {
  control?.close();
  await server.stop();
  tmp.cleanup();
});

const fds = () => readdirSync(`/proc/${server.proc.pid}/fd`).length;
const rssMiB = () =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.proc.pid}/status`, 'utf8'))![1]) / 1024;
/** The server has no client: the last one's going handled (fds released). */
const idle = () => clientGone(control);
let baseline = 0;
async function healthy(): Promise<void> {
  expect(server.proc.exitCode).toBeNull();
  await idle();
  await until(() => fds() === baseline, `server fds back to ${baseline} (now ${fds()})`);
  const c = await VfioUserClient.connect(server.socket);
  expect(await c.read32(0, Edu.ID)).toBe(0x010000ed);
  c.close();
  await idle();
}

/** A raw connection that has negotiated, for sending anything. */
function raw(): { ms: MessageSocket; fd: OwnedFd; drain: () => number } {
  const fd = connectUnix(server.socket),
    ms = new MessageSocket(fd.fd);
  ms.send(encodeVersion(0, false, 0, 0, '{}'));
  const buf = Buffer.alloc(1 << 20);
  // A server may close a connection whose stream can no longer be framed: a reset is an answer.
  return {
    fd,
    ms,
    drain: () => {
      let n = 0;
      try {
        for (;;) {
          const r = ms.recv(buf);
          if (!r || r.bytes === 0) break;
          n += r.bytes;
          r.fds.forEach(f => f.close());
        }
      } catch {
        /* closed by the server */
      }
      return n;
    },
  };
}

describe('hostile clients', () => {
  beforeAll(async () => {
    await idle();
    baseline = fds();
  });

  it('fuzz: mutated sessions leave the server serving, without leaks', async () => {
    const seeds = [
      encode.getInfo(1),
      encode.getRegionInfo(1, 2, 64),
      encode.regionRead(1, { region: 0, offset: 0, count: 4 }),
      encode.regionWrite(1, { region: 0, offset: 4, count: 4, data: Uint8Array.of(1, 2, 3, 4) }),
      encode.setIrqs(1, { flags: 0x21, index: 0, start: 0, count: 1 }),
      encode.dmaMap(1, { flags: 3, offset: 0, address: 0, size: 0x1000 }),
      encode.dmaUnmap(1, { flags: 2, address: 0, size: 0 }),
      encode.feature(1, (1 << 17) | 2, featureData.migDeviceState(S.PRE_COPY)),
      encode.feature(1, (1 << 17) | 2, featureData.migDeviceState(S.RUNNING)),
      encode.migDataRead(1, 4096),
      encode.regionWrite(1, { region: 9, offset: 0, count: 4, data: Uint8Array.of(3, 0, 0, 0) }),
      encode.regionRead(1, { region: 9, offset: 16, count: 8 }),
      encode.reset(1),
      encode.feature(1, (1 << 17) | 6, featureData.loggingStart(4096, [])),
      encode.feature(1, (1 << 16) | 8, featureData.loggingReport(0, 0x10000, 4096), 48),
    ];
    const msg = fc.tuple(
      fc.nat(seeds.length - 1),
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
      fc.boolean(),
    );
    let sent = 0;
    await fc
      .assert(
        fc.asyncProperty(fc.array(msg, { minLength: 1, maxLength: 40 }), async session => {
          const { ms, fd, drain } = raw();
          for (const [i, flips, withFd] of session) {
            const m = Uint8Array.from(seeds[i]);
            // keep msg_size mostly sane
            for (const [at, v] of flips)
              m[HEADER_SIZE > at % m.length ? (at % m.length) & 3 : at % m.length] = v;
            const mem = withFd ? memfdCreate('fuzz', 4096) : null;
            try {
              ms.send(m, mem ? [mem.fd] : []);
            } catch {
              break;
            } // the server may have closed a broken stream
            mem?.close();
            sent++;
            drain();
          }
          drain();
          fd.close();
          // The next session starts at an idle server (else it would be refused: EBUSY).
          await idle();
          expect(server.proc.exitCode).toBeNull();
        }),
        { numRuns: RUNS },
      )
      .catch(e => {
        console.error(
          'SERVER',
          server.proc.exitCode,
          server.proc.signalCode,
          server.output().slice(-3000),
        );
        throw e;
      });
    expect(sent).toBeGreaterThan(RUNS);
    await healthy();
  });

  // The server stops reading it; the next client works.
  it('a client that never reads replies is throttled; memory stays bounded', async () => {
    const { ms, fd } = raw();
    const before = rssMiB();
    const req = encode.regionRead(1, { region: 2, offset: 0, count: 1 << 20 });
    // All requests wait in the socket (19 KiB) while the server is stopped: it then reads them
    // in one read and executes, in that same turn of its event loop, all it will before its
    // replies back up. A control request is answered after that turn.
    await stopProcess(server.proc);
    let sent = 0;
    for (let i = 0; i < 600; i++) {
      if (ms.send(req) === 0) break;
      sent++;
    }
    server.proc.kill('SIGCONT');
    expect(sent).toBe(600);
    await until(() => peerHasReadAll(fd.fd), 'the server to read the requests');
    expect(await control.request({ get: 'client' })).toMatchObject({ connected: true });
    expect(rssMiB() - before).toBeLessThan(200); // ~600 MiB of replies were asked for
    fd.close();
    await healthy();
  });

  it('closes fds where none belong; refuses a 4 GiB header unread', async () => {
    const { ms, fd, drain } = raw();
    const e = [eventfdCreate(), eventfdCreate(), eventfdCreate()];
    ms.send(
      encode.regionRead(2, { region: 0, offset: 0, count: 4 }),
      e.map(x => x.fd),
    );
    e.forEach(x => x.close());
    const h = Buffer.alloc(HEADER_SIZE);
    h.writeUInt16LE(3, 0);
    h.writeUInt16LE(9, 2);
    h.writeUInt32LE(0xffffffff, 4);
    ms.send(h);
    try {
      // The error reply to the read, and the refusal of the header, arrive in their own time.
      await until(() => drain() > 0, 'a reply to the fds-carrying read');
    } finally {
      fd.close();
    }
    await healthy();
  });
});

describe('memory the server hands out', () => {
  // A client holding the fd of a memory the server maps could otherwise shrink it under the
  // server's mapping, whose next access would kill the server (SIGBUS).
  it('cannot be shrunk or grown by a client: BAR memory and the v1 data window', async () => {
    const c = await VfioUserClient.connect(server.socket);
    try {
      for (const region of [2, 9]) {
        const info = await c.regionInfo(region);
        const fd = info.fd!;
        expect(() => truncate(fd.fd, 0), `region ${region}`).toThrow(/EPERM/);
        expect(() => truncate(fd.fd, 2 * info.size), `region ${region}`).toThrow(/EPERM/);
        fd.close();
      }
      await c.write32(2, 0, 0x5eed);
      expect(await c.read32(2, 0)).toBe(0x5eed);
    } finally {
      c.close();
    }
    await idle();
    await healthy();
  });
});

describe('faults', () => {
  beforeAll(async () => {
    await idle();
    baseline = fds();
  });

  it("a client disconnecting after each step of QEMU's attach sequence leaks nothing", async () => {
    const steps = async (c: VfioUserClient, k: number) => {
      const all: (() => Promise<unknown>)[] = [
        () => c.addRam(0, 1 << 20),
        () =>
          c.dmaMap({
            flags: 1,
            offset: 0,
            address: 0xfffc0000,
            size: 0x40000,
          }) /* BIOS, no fd, as QEMU maps it */,
        () => c.deviceInfo(),
        () => c.regionInfo(0),
        () => c.regionInfo(2).then(r => r.fd?.close()),
        () => c.regionInfo(7),
        () => c.irqInfo(0),
        () => c.regionRead(7, 0, 256),
        () => c.bindIrqs(0),
        () => c.bindIrqs(3),
        () => c.unmaskIntx(),
        () => c.config.write16(4, 6),
        () => c.reset(),
        () => c.dmaUnmap(0, 0, { all: true }),
        () => c.addRam(0x100000, 1 << 20),
      ];
      for (const s of all.slice(0, k)) await s();
      return all.length;
    };
    const c0 = await VfioUserClient.connect(server.socket);
    let n: number;
    try {
      n = await steps(c0, 99);
    } finally {
      c0.close();
    }
    await idle();
    for (let k = 0; k <= n; k++) {
      const c = await VfioUserClient.connect(server.socket);
      try {
        await steps(c, k);
      } finally {
        c.close();
      }
      await idle();
      await until(() => fds() === baseline, `fds after step ${k}`);
    }
    await healthy();
  });

  // Migrated away only once its state was handed over.
  it('a driver vanishing at any step: source running, or migrated away', async () => {
    const plan = async (c: VfioUserClient, k: number) => {
      const all: (() => Promise<unknown>)[] = [
        () => c.setState(S.PRE_COPY),
        () => c.migDataRead(1 << 16),
        () => c.precopyInfo(),
        () => c.dataSize(),
        () => c.setState(S.STOP_COPY),
        () => c.migDataRead(1 << 16),
        () => readToEnd(c),
        () => c.setState(S.STOP),
      ];
      for (const s of all.slice(0, k)) await s();
      return all.length;
    };
    for (let k = 0; k <= 8; k++) {
      const c = await VfioUserClient.connect(server.socket);
      await c.write32(0, Edu.LIVENESS, 1000 + k);
      await plan(c, k);
      c.close();
      await idle();
      const d = await VfioUserClient.connect(server.socket);
      const handedOver = k === 8; // STOP_COPY read to its end, then STOP
      expect(await d.getState()).toBe(handedOver ? S.STOP : S.RUNNING);
      expect(await d.read32(0, Edu.LIVENESS)).toBe(~(1000 + k) >>> 0);
      if (handedOver) {
        await expect(d.setState(S.RUNNING)).rejects.toMatchObject({ errno: Errno.EPERM });
        await d.reset();
      }
      d.close();
      await idle();
    }
    await healthy();
  });

  // Nothing half-applied.
  it('a destination whose driver vanishes mid-resume keeps its own state', async () => {
    const a = await startServer(tmp.path('src-f.sock'), ['--device', 'edu', '--memory', '1M']);
    try {
      const src = await VfioUserClient.connect(a.socket);
      await src.write32(0, Edu.LIVENESS, 5);
      await src.setState(S.STOP_COPY);
      const chunk = await src.migDataRead(200000);
      src.close();
      const d = await VfioUserClient.connect(server.socket);
      await d.write32(0, Edu.LIVENESS, 77);
      await d.setState(S.RESUMING);
      await d.migDataWrite(chunk); // part of a stream, then the driver dies
      d.close();
      await idle();
      const e = await VfioUserClient.connect(server.socket);
      expect(await e.getState()).toBe(S.RUNNING);
      expect(await e.read32(0, Edu.LIVENESS)).toBe(~77 >>> 0);
      e.close();
      await healthy();
    } finally {
      await a.stop();
    }
  });

  it('out of fds: uninstallable fds are reported (EFAULT), the server survives', async () => {
    let hasPrlimit = true;
    try {
      execFileSync('prlimit', ['--version']);
    } catch {
      hasPrlimit = false;
    }
    // util-linux's prlimit is on Debian machines; without it nothing can lower the limit.
    if (!hasPrlimit) return;
    const [soft, hard] = execFileSync(
      'prlimit',
      [`--pid=${server.proc.pid}`, '--nofile', '--raw', '--noheadings', '--output=SOFT,HARD'],
      { encoding: 'utf8' },
    )
      .trim()
      .split(/\s+/);
    execFileSync('prlimit', [`--pid=${server.proc.pid}`, `--nofile=${fds() + 6}:${hard}`]);
    try {
      const c = await VfioUserClient.connect(server.socket);
      let refused = 0;
      for (let i = 0; i < 12; i++) {
        const m = memfdCreate('x', 4096);
        await c
          .dmaMap({ flags: 3, offset: 0, address: 0x10000 * (i + 1), size: 4096 }, m.fd)
          .catch(() => {
            refused++;
          });
        m.close();
      }
      expect(refused).toBeGreaterThan(0);
      expect(server.output()).toMatch(/file descriptors were lost \(MSG_CTRUNC\)|EMFILE/);
      expect(await c.read32(0, Edu.ID)).toBe(0x010000ed);
      c.close();
    } finally {
      execFileSync('prlimit', [`--pid=${server.proc.pid}`, `--nofile=${soft}:${hard}`]);
    }
    await healthy();
  });
});
