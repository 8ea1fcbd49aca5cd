// Live migration between two real server processes, driven like QEMU drives kernel VFIO
// devices: v2 and v1, each device model, with a workload on the source during pre-copy; and
// the failure paths (corrupted or foreign streams, cancel, either side dying).
import { describe, it, expect, afterEach } from 'vitest';
import { startServer, pattern, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { RemoteError } from '@vfu/transport';
import { migrate, memoryWorkload } from '@vfu/vfu-migrate';
import { S } from '@vfu/fsm';
import { Irq, Errno, Feature, FeatureFlag, featureData, setPages, encode } from '@vfu/protocol';
import { Reg as Edu, DMA_BUFFER, DMA_START, DMA_TO_RAM, IRQ_DMA } from '@vfu/device-edu';
import { Reg as Tpl } from '@vfu/device-template';
import { tempDir, until, control, readToEnd, clientGone } from './helpers.ts';

const tmp = tempDir();
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

let n = 0;
async function pair(
  device: string,
  extra: string[] = [],
): Promise<[ServerProcess, ServerProcess, VfioUserClient, VfioUserClient]> {
  const a = await startServer(tmp.path(`src${++n}.sock`), [
    '--device',
    device,
    '--on-disconnect',
    'keep',
    '--control',
    tmp.path(`src${n}.ctl`),
    ...extra,
  ]);
  const b = await startServer(tmp.path(`dst${n}.sock`), [
    '--device',
    device,
    '--on-disconnect',
    'keep',
    ...extra,
  ]);
  servers.push(a, b);
  const ca = await VfioUserClient.connect(a.socket),
    cb = await VfioUserClient.connect(b.socket);
  clients.push(ca, cb);
  return [a, b, ca, cb];
}

const CFG_CMD = 0x04;
async function eduWorkload(c: VfioUserClient): Promise<Uint8Array> {
  await c.config.write16(CFG_CMD, 0x6); // memory + bus master
  const ram = await c.addRam(0x100000, 0x10000);
  ram.bytes.set(Buffer.from('state that moves with the device'), 0);
  await c.write32(0, Edu.LIVENESS, 0xabcdef01);
  await c.write32(0, Edu.FACTORIAL, 6);
  await c.write32(0, Edu.STATUS, 0x80);
  // DMA guest RAM -> device buffer: the buffer is device state.
  await c.write32(0, Edu.DMA_SRC, 0x100000);
  await c.write32(0, Edu.DMA_DST, DMA_BUFFER);
  await c.write32(0, Edu.DMA_COUNT, 32);
  await c.write32(0, Edu.DMA_CMD, DMA_START);
  await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & DMA_START) === 0, 'edu DMA');
  const mem = await c.mapRegion(2);
  for (let p = 0; p < mem.length / 4096; p += 3) mem.bytes(p * 4096, 4).set([p & 0xff, 1, 2, 3]);
  mem.release();
  return ram.bytes;
}

async function eduView(c: VfioUserClient) {
  const regs = await Promise.all(
    [Edu.LIVENESS, Edu.FACTORIAL, Edu.STATUS, Edu.IRQ_STATUS].map(r => c.read32(0, r)),
  );
  // region reads: the same bytes whatever the mapping
  const mem = Buffer.from(await c.regionRead(2, 0, 1 << 20));
  const cfg = Buffer.from(await c.regionRead(7, 0, 64));
  return { regs, mem, cfg };
}

// Between two servers of this process, v2's data goes by splice and v1's through mappings of both
// data windows, unless dataPath says copy.
describe.each([
  { protocol: 'v2', dataPath: 'splice', via: 'splice' },
  { protocol: 'v2', dataPath: 'copy', via: 'messages' },
  { protocol: 'v1', dataPath: 'splice', via: 'mapping' },
  { protocol: 'v1', dataPath: 'copy', via: 'messages' },
] as const)('live migration of edu over $protocol ($dataPath)', ({ protocol, dataPath, via }) => {
  // The destination works afterwards.
  it('moves registers, DMA buffer and memory dirtied in pre-copy', async () => {
    const [, , src, dst] = await pair('edu', ['--memory', '1M']);
    await eduWorkload(src);
    const wl = await memoryWorkload(src, 32);
    const progress: { bytes: number; pending: number; phase: string }[] = [];
    const rep = await migrate(src, dst, {
      protocol,
      dataPath,
      workload: wl.round,
      maxIterations: 3,
      downtimeLimitMs: 1,
      onProgress: p => progress.push({ ...p }),
    });
    wl.close();
    expect(progress.length).toBeGreaterThan(2);
    expect(progress.every((p, i) => i === 0 || p.bytes >= progress[i - 1].bytes)).toBe(true);
    expect(progress.some(p => p.phase === 'precopy' && p.pending > 0)).toBe(true);
    expect(progress.at(-1)!.phase).toBe('resume');
    expect(rep, rep.error).toMatchObject({
      outcome: 'completed',
      source: { state: 'STOP' },
      destination: { state: 'RUNNING' },
      dataPath: via,
    });
    expect(rep.workloadWrites).toBeGreaterThan(0);
    const [a, b] = [await eduView(src), await eduView(dst)];
    expect(b.regs).toEqual(a.regs);
    expect(b.regs[1]).toBe(720);
    expect(Buffer.compare(b.mem, a.mem)).toBe(0);
    expect(b.cfg.readUInt16LE(CFG_CMD)).toBe(0x6);
    // The migrated DMA buffer leaves the destination by DMA into the destination's own RAM, with an
    // interrupt.
    const ram = await dst.addRam(0x100000, 0x10000);
    const irq = await dst.bindIrqs(Irq.INTX);
    await dst.write32(0, Edu.DMA_SRC, DMA_BUFFER);
    await dst.write32(0, Edu.DMA_DST, 0x100000 + 0x8000);
    await dst.write32(0, Edu.DMA_COUNT, 32);
    await dst.write32(0, Edu.DMA_CMD, DMA_START | DMA_TO_RAM | 4);
    await irq.next();
    expect(Buffer.from(ram.bytes.subarray(0x8000, 0x8020)).toString()).toBe(
      'state that moves with the device',
    );
    expect(await dst.read32(0, Edu.IRQ_STATUS)).toBe(IRQ_DMA);
  });
});

// v1's pending_bytes counts the first pass and dirty pages together: the driver must not switch
// over in the middle of the first pass because the rest would fit the downtime limit.
describe.each(['v2', 'v1'] as const)('pre-copy over %s', protocol => {
  it('goes on until the source has sent everything once', async () => {
    const [, , src, dst] = await pair('edu', ['--memory', '4M']);
    const rep = await migrate(src, dst, {
      protocol,
      roundBytes: 1 << 20,
      downtimeLimitMs: 60_000,
    });
    expect(rep.outcome, rep.error).toBe('completed');
    expect(rep.iterations).toBeGreaterThanOrEqual(4);
    expect(rep.precopyBytes).toBeGreaterThan(4 << 20);
    expect(rep.stopCopyBytes).toBeLessThan(1 << 20);
  });
});

describe.each(['v2', 'v1'] as const)('every device model migrates over %s', protocol => {
  it('template: scratch, ring count and pending interrupt status', async () => {
    const [, , src, dst] = await pair('template');
    await src.write32(0, Tpl.SCRATCH, 0x5eed);
    const irq = await src.bindIrqs(Irq.INTX);
    await src.write32(0, Tpl.DOORBELL, 1);
    await irq.next();
    await src.write32(0, Tpl.DOORBELL, 1);
    const rep = await migrate(src, dst, { protocol });
    expect(rep.outcome, rep.error).toBe('completed');
    for (const r of [Tpl.SCRATCH, Tpl.RINGS, Tpl.IRQ_STATUS])
      expect(await dst.read32(0, r)).toBe(await src.read32(0, r));
    expect(await dst.read32(0, Tpl.RINGS)).toBe(2);
  });
  it('gpio-idio16: outputs and interrupt enable', async () => {
    const [, , src, dst] = await pair('gpio-idio16');
    await src.write8(2, 0, 0xa5);
    await src.write8(2, 4, 0x3c);
    await src.read8(2, 2); // enables the input interrupt
    const rep = await migrate(src, dst, { protocol });
    expect(rep.outcome, rep.error).toBe('completed');
    expect([await dst.read8(2, 0), await dst.read8(2, 4)]).toEqual([0xa5, 0x3c]);
  });
});

describe('dirty page logging during pre-copy', () => {
  // v2 DMA_LOGGING_REPORT over a range spanning a hole.
  it('reports the guest pages the device wrote by DMA', async () => {
    const [, , src] = await pair('edu');
    await src.config.write16(CFG_CMD, 0x6);
    await src.addRam(0x100000, 0x10000);
    await src.addRam(0x200000, 0x10000);
    await src.feature(
      FeatureFlag.SET | Feature.DMA_LOGGING_START,
      featureData.loggingStart(4096, [{ iova: 0x100000, length: 0x110000 }]),
    );
    await src.write32(0, Edu.DMA_SRC, DMA_BUFFER);
    await src.write32(0, Edu.DMA_DST, 0x203c00);
    await src.write32(0, Edu.DMA_COUNT, 0x800); // spans two pages
    await src.write32(0, Edu.DMA_CMD, DMA_START | DMA_TO_RAM);
    await until(async () => ((await src.read32(0, Edu.DMA_CMD)) & DMA_START) === 0, 'DMA');
    const len = 0x110000,
      r = await src.feature(
        FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(0x100000, len, 4096),
        8 + 24 + 64,
      );
    expect(setPages(r.data.subarray(24), len / 4096)).toEqual([0x103, 0x104]);
    const again = await src.feature(
      FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
      featureData.loggingReport(0x100000, len, 4096),
      8 + 24 + 64,
    );
    expect(setPages(again.data.subarray(24), len / 4096)).toEqual([]); // read-and-clear
    // A bitmap larger than a message may carry (1 MiB: 32 GiB of pages) is refused, however
    // large the argsz offered; nothing is built, and the session serves on.
    const huge = 2 ** 45;
    await expect(
      src.feature(
        FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(0, huge, 4096),
        0xffff_fff0,
      ),
    ).rejects.toMatchObject({ errno: Errno.EINVAL });
    const after = await src.feature(
      FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
      featureData.loggingReport(0x100000, len, 4096),
      8 + 24 + 64,
    );
    expect(setPages(after.data.subarray(24), len / 4096)).toEqual([]);
    // The bound is max_data_xfer_size itself: a bitmap of exactly that size is sent, one of 8
    // bytes more refused.
    const max = src.serverCaps.maxDataXferSize;
    const report = (pages: number) =>
      src.feature(
        FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(0, pages * 4096, 4096),
        8 + 24 + max + 8,
      );
    expect((await report(max * 8)).data.length).toBe(24 + max);
    await expect(report(max * 8 + 1)).rejects.toMatchObject({ errno: Errno.EINVAL });
  });
});

describe('failures leave both devices usable', () => {
  async function readAll(c: VfioUserClient): Promise<Buffer> {
    await c.setState(S.STOP_COPY);
    return readToEnd(c);
  }

  // Device memory (BAR 2) of `c` filled with pattern(seed), in chunks a message may carry.
  async function fillMemory(c: VfioUserClient, seed: number): Promise<Buffer> {
    const size = (await c.regionInfo(2)).size;
    const bytes = Buffer.from(pattern(size, seed));
    for (let off = 0; off < size; off += 65536)
      await c.regionWrite(2, off, bytes.subarray(off, off + 65536));
    return bytes;
  }

  async function memoryOf(c: VfioUserClient): Promise<Buffer> {
    const size = (await c.regionInfo(2)).size,
      parts: Uint8Array[] = [];
    for (let off = 0; off < size; off += 65536) parts.push(await c.regionRead(2, off, 65536));
    return Buffer.concat(parts);
  }

  // The destination needs a reset. Memory records land in the destination's memory as they
  // are checked: the ones before the corrupted one must be put back.
  it('a bit-flipped stream is refused with EINVAL; the source is untouched', async () => {
    const [, b, src, dst] = await pair('edu', ['--memory', '1M']);
    await src.write32(0, Edu.LIVENESS, 77);
    await fillMemory(src, 3);
    const own = await fillMemory(dst, 4);
    const stream = await readAll(src);
    stream[stream.length >> 1] ^= 0x04; // in a memory record: memory is most of the stream
    await dst.write32(0, Edu.LIVENESS, 5);
    await dst.setState(S.RESUMING);
    // In legal chunks, so that the corruption (not the size check) is what gets caught.
    let refused: unknown = null;
    for (let off = 0; off < stream.length && !refused; off += 65536)
      refused = await dst.migDataWrite(stream.subarray(off, off + 65536)).then(
        () => null,
        e => e,
      );
    expect(refused).toMatchObject({ errno: Errno.EINVAL });
    expect(b.output()).toMatch(/checksum mismatch/);
    expect(await dst.getState()).toBe(S.RESUMING);
    await expect(dst.setState(S.RUNNING)).rejects.toMatchObject({ errno: Errno.EINVAL });
    expect(await dst.getState()).toBe(S.ERROR);
    // only reset leaves ERROR
    await expect(dst.setState(S.RUNNING)).rejects.toBeInstanceOf(RemoteError);
    expect(await dst.read32(0, Edu.LIVENESS)).toBe(~5 >>> 0); // never half-applied
    expect(Buffer.compare(await memoryOf(dst), own)).toBe(0);
    await dst.reset();
    expect(await dst.getState()).toBe(S.RUNNING);
    await src.setState(S.RUNNING);
    expect(await src.read32(0, Edu.LIVENESS)).toBe(~77 >>> 0);
  });

  it('a resume abandoned half-way (DEVICE_RESET) leaves the memory it replaced', async () => {
    const [, , src, dst] = await pair('edu', ['--memory', '1M']);
    await fillMemory(src, 5);
    const own = await fillMemory(dst, 6);
    const stream = await readAll(src);
    await dst.setState(S.RESUMING);
    for (let off = 0; off < stream.length >> 1; off += 65536)
      await dst.migDataWrite(stream.subarray(off, Math.min(off + 65536, stream.length >> 1)));
    await dst.reset();
    expect(await dst.getState()).toBe(S.RUNNING);
    expect(Buffer.compare(await memoryOf(dst), own)).toBe(0);
  });

  it('a resume abandoned half-way (the client leaves) leaves the memory it replaced', async () => {
    // pair() gives the source side a control socket: here it is the one resumed into.
    const [a, , src, dst] = await pair('edu', ['--memory', '1M']);
    await fillMemory(dst, 8);
    const stream = await readAll(dst);
    await dst.setState(S.STOP);
    await dst.setState(S.RUNNING);
    const own = await fillMemory(src, 7);
    await src.setState(S.STOP);
    await src.setState(S.RESUMING);
    for (let off = 0; off < stream.length >> 1; off += 65536)
      await src.migDataWrite(stream.subarray(off, Math.min(off + 65536, stream.length >> 1)));
    src.close();
    clients.splice(clients.indexOf(src), 1);
    await clientGone(a.socket.replace(/\.sock$/, '.ctl'));
    const again = await VfioUserClient.connect(a.socket);
    clients.push(again);
    expect(await again.getState()).toBe(S.RUNNING);
    expect(Buffer.compare(await memoryOf(again), own)).toBe(0);
  });

  it('a stream of another device model is refused at its header', async () => {
    const a = await startServer(tmp.path('edu-x.sock'), ['--device', 'edu']);
    const b = await startServer(tmp.path('tpl-x.sock'), ['--device', 'template']);
    servers.push(a, b);
    const src = await VfioUserClient.connect(a.socket),
      dst = await VfioUserClient.connect(b.socket);
    clients.push(src, dst);
    const stream = await readAll(src);
    await dst.setState(S.RESUMING);
    await expect(dst.migDataWrite(stream.subarray(0, 4096))).rejects.toMatchObject({
      errno: Errno.EINVAL,
    });
    expect(b.output()).toMatch(/device model "edu" cannot be loaded into "template"/);
    await dst.reset();
    expect(await dst.read32(0, Tpl.ID)).toBe(0x7e3a0001);
  });

  it('cancel in pre-copy: source RUNNING with its state, destination reset', async () => {
    const [, , src, dst] = await pair('edu');
    await src.write32(0, Edu.LIVENESS, 99);
    const rep = await migrate(src, dst, { cancelAfterIterations: 1 });
    expect(rep).toMatchObject({
      outcome: 'cancelled',
      source: { state: 'RUNNING' },
      destination: { state: 'RUNNING' },
    });
    expect(await src.read32(0, Edu.LIVENESS)).toBe(~99 >>> 0);
    await src.write32(0, Edu.FACTORIAL, 4);
    await until(async () => (await src.read32(0, Edu.FACTORIAL)) === 24, 'source runs');
  });

  // The check comes after every chunk, so a stop-copy that never ends can still be abandoned.
  it.each(['v2', 'v1'] as const)(
    'an abort during stop-copy (%s) ends it after the chunk in flight',
    async protocol => {
      const [, , src, dst] = await pair('edu', ['--memory', '8M']);
      await src.write32(0, Edu.LIVENESS, 77);
      const stop = new AbortController();
      const rep = await migrate(src, dst, {
        protocol,
        preCopy: false,
        signal: stop.signal,
        onProgress: p => {
          if (p.phase === 'stopcopy') stop.abort('test');
        },
      });
      expect(rep).toMatchObject({ outcome: 'cancelled', source: { state: 'RUNNING' } });
      expect(rep.stopCopyBytes).toBeGreaterThan(0);
      expect(rep.stopCopyBytes).toBeLessThanOrEqual(2 << 20); // of more than 8 MiB
      expect(await src.read32(0, Edu.LIVENESS)).toBe(~77 >>> 0);
    },
  );

  it('the destination dying mid-migration leaves the source running with its state', async () => {
    const [, b, src, dst] = await pair('edu', ['--memory', '8M']);
    await src.write32(0, Edu.LIVENESS, 1234);
    let rounds = 0;
    const rep = await migrate(src, dst, {
      maxIterations: 5,
      downtimeLimitMs: 0,
      workload: async () => {
        if (++rounds === 1) {
          b.proc.kill('SIGKILL');
          await until(() => b.proc.exitCode !== null || b.proc.signalCode !== null, 'kill');
        }
        return 0;
      },
    });
    expect(rep.outcome).toBe('failed');
    expect(rep.source.state).toBe('RUNNING');
    expect(await src.getState()).toBe(S.RUNNING);
    expect(await src.read32(0, Edu.LIVENESS)).toBe(~1234 >>> 0);
  });

  it('the source dying mid-migration leaves the destination usable (reset, RUNNING)', async () => {
    const [a, , src, dst] = await pair('edu', ['--memory', '8M']);
    let rounds = 0;
    const rep = await migrate(src, dst, {
      maxIterations: 5,
      downtimeLimitMs: 0,
      workload: async () => {
        if (++rounds === 1) {
          a.proc.kill('SIGKILL');
          await until(() => a.proc.exitCode !== null || a.proc.signalCode !== null, 'kill');
        }
        return 0;
      },
    });
    expect(rep.outcome).toBe('failed');
    expect(await dst.getState()).toBe(S.RUNNING);
    expect(await dst.read32(0, Edu.ID)).toBe(0x010000ed);
  });

  // Servers keep state on disconnect.
  it('a driver that disconnects mid-migration leaves the source running', async () => {
    const [a, , src] = await pair('edu');
    await src.write32(0, Edu.LIVENESS, 42);
    await src.setState(S.PRE_COPY);
    await src.migDataRead(4096);
    src.close();
    clients.splice(clients.indexOf(src), 1);
    await clientGone(a.socket.replace(/\.sock$/, '.ctl'));
    expect(a.output()).toMatch(/cancelled from PRE_COPY/);
    const again = await VfioUserClient.connect(a.socket);
    clients.push(again);
    expect(await again.getState()).toBe(S.RUNNING);
    expect(await again.read32(0, Edu.LIVENESS)).toBe(~42 >>> 0);
  });
  // Only a stream read to the end hands the state over: one read in part was not.
  it('a driver that stops STOP_COPY before the end, then leaves, leaves it running', async () => {
    const [a, , src] = await pair('edu', ['--memory', '1M']);
    await src.write32(0, Edu.LIVENESS, 31);
    await src.setState(S.STOP_COPY);
    expect((await src.migDataRead(4096)).length).toBe(4096);
    await src.setState(S.STOP);
    src.close();
    clients.splice(clients.indexOf(src), 1);
    const ctl = a.socket.replace(/\.sock$/, '.ctl');
    await clientGone(ctl);
    expect((await control(ctl, { get: 'migration' })).migration).toMatchObject({
      state: 'RUNNING',
      migratedAway: false,
    });
    const again = await VfioUserClient.connect(a.socket);
    clients.push(again);
    expect(await again.getState()).toBe(S.RUNNING);
    expect(await again.read32(0, Edu.LIVENESS)).toBe(~31 >>> 0);
  });
});

describe.each(['v2', 'v1'] as const)('after a completed migration over %s', protocol => {
  /** Migrates `device` between two fresh servers; the source has a control socket. */
  async function migrated(device: string, before?: (src: VfioUserClient) => Promise<void>) {
    const ctl = tmp.path(`src${++n}.ctl`);
    const keep = ['--device', device, '--on-disconnect', 'keep'];
    const a = await startServer(tmp.path(`src${n}.sock`), [...keep, '--control', ctl]);
    const b = await startServer(tmp.path(`dst${n}.sock`), keep);
    servers.push(a, b);
    const src = await VfioUserClient.connect(a.socket);
    const dst = await VfioUserClient.connect(b.socket);
    clients.push(dst);
    await before?.(src);
    const rep = await migrate(src, dst, { protocol });
    expect(rep, rep.error).toMatchObject({ outcome: 'completed', source: { state: 'STOP' } });
    src.close();
    const away = await until(async () => {
      const r = await control(ctl, { get: 'migration' });
      return r.migration.migratedAway ? r : null;
    }, 'the source to notice the driver left');
    const next = await VfioUserClient.connect(a.socket);
    clients.push(next);
    return { ctl, dst, next, away };
  }

  it('a migrated-away source stays stopped until a resume or DEVICE_RESET', async () => {
    const { ctl, dst, next, away } = await migrated('edu', src => src.write32(0, Edu.LIVENESS, 7));
    expect(away?.migration).toMatchObject({ state: 'STOP', migratedAway: true });
    // The next client finds it stopped, and cannot run it.
    expect(await next.getState()).toBe(S.STOP);
    await expect(next.setState(S.RUNNING)).rejects.toMatchObject({ errno: Errno.EPERM });
    await expect(next.setState(S.STOP_COPY)).rejects.toMatchObject({ errno: Errno.EPERM });
    expect(await next.getState()).toBe(S.STOP);
    // The destination is the one running copy.
    expect(await dst.getState()).toBe(S.RUNNING);
    expect(await dst.read32(0, Edu.LIVENESS)).toBe(~7 >>> 0);
    // An explicit resume through the control socket runs this copy again.
    expect(await control(ctl, { do: 'resume' })).toEqual({ ok: true });
    expect(await next.getState()).toBe(S.RUNNING);
    expect(await control(ctl, { get: 'migration' })).toMatchObject({
      migration: { migratedAway: false },
    });
    expect(await control(ctl, { do: 'resume' })).toMatchObject({ ok: false });
  });

  it('DEVICE_RESET also releases a migrated-away device', async () => {
    const { ctl, next } = await migrated('template');
    await next.reset();
    expect(await next.getState()).toBe(S.RUNNING);
    expect((await control(ctl, { get: 'migration' })).migration.migratedAway).toBe(false);
  });
});

describe('v1 dirty page tracking', () => {
  // START / GET_BITMAP / STOP, and DMA_UNMAP with GET_DIRTY_BITMAP.
  it("DIRTY_PAGES and DMA_UNMAP's bitmap see the pages the device wrote", async () => {
    const [, , src] = await pair('edu');
    await src.config.write16(CFG_CMD, 0x6);
    await src.addRam(0x100000, 0x40000);
    const dp = (
      flags: number,
      range?: { iova: number; size: number; pgsize: number; bitmapSize: number },
    ) =>
      src.raw(
        encode.dirtyPages(src.nextId(), { argsz: range ? 40 + range.bitmapSize : 8, flags, range }),
      );
    await dp(1); // START
    const dma = async (dst: number) => {
      await src.write32(0, Edu.DMA_SRC, DMA_BUFFER);
      await src.write32(0, Edu.DMA_DST, dst);
      await src.write32(0, Edu.DMA_COUNT, 16);
      await src.write32(0, Edu.DMA_CMD, DMA_START | DMA_TO_RAM);
      await until(async () => ((await src.read32(0, Edu.DMA_CMD)) & DMA_START) === 0, 'DMA');
    };
    await dma(0x105000);
    const got = await dp(4, { iova: 0x100000, size: 0x40000, pgsize: 4096, bitmapSize: 8 });
    expect(setPages(got.payload.subarray(40), 64)).toEqual([5]);
    await expect(
      dp(4, { iova: 0x100000, size: 0x40000, pgsize: 8192, bitmapSize: 8 }),
    ).rejects.toMatchObject({ errno: Errno.EINVAL }); // page size != logging
    await dma(0x13f000);
    const bm = await src.dmaUnmap(0x100000, 0x40000, { bitmapPage: 4096 });
    expect(setPages(bm!, 64)).toEqual([63]);
    await dp(2); // STOP
  });
});
