// A migration driver that does what QEMU's hw/vfio/migration.c does with kernel VFIO devices
// (protocol.md §10), over vfio-user: v2 through DEVICE_FEATURE and MIG_DATA_READ/WRITE, or v1
// through the migration region. One per migration: a source client and a destination client.
import { MigDataRelay, type VfioUserClient } from '@vfu/client';
import {
  Errno,
  Feature,
  FeatureFlag,
  MigrationFlag,
  featureData,
  DirtyPagesFlag,
  encode,
  bitmapBytes,
  setPages,
} from '@vfu/protocol';
import { S, stateName } from '@vfu/fsm';
import type { Report, Progress } from './report.js';
import { blankReport } from './outcome.js';
import { LocalDestination, SwitchoverInDoubt, type Destination } from './destination.js';
import { localDestination, v1, v2, type Endpoint } from './endpoints.js';
import { MigrationFailure } from './failure.js';

export { MigrationFailure } from './failure.js';

export interface MigrateOptions {
  protocol?: 'v1' | 'v2';
  /** Largest acceptable downtime; pre-copy goes on until the rest fits in it. */
  downtimeLimitMs?: number;
  maxIterations?: number;
  /** Runs against the source while pre-copy runs (a workload dirtying the device). */
  workload?: () => Promise<number>;
  /** Cancel after this many pre-copy iterations (tests, demo). */
  cancelAfterIterations?: number;
  /** Ranges of guest RAM to log for DMA (v2 DMA logging / v1 DIRTY_PAGES). */
  dmaRanges?: { iova: number; length: number }[];
  onProgress?: (p: Progress) => void;
  /** Migrate into a destination that runs a used device of its own (its state is overwritten). */
  force?: boolean;
  /** Abandons the migration (Ctrl-C): both devices are left as a failure leaves them. */
  signal?: AbortSignal;
  /** false: no pre-copy rounds, the device stops at once (a snapshot). */
  preCopy?: boolean;
  /** Most bytes a pre-copy round moves before the driver looks again (256 MiB). */
  roundBytes?: number;
  /**
   * How data reaches a destination server of this process. 'splice' (the default): v2 data
   * moves socket to socket in the kernel (MigDataRelay); v1 data is copied from the source's
   * data window to the destination's through mappings of both, where the servers let them be
   * mapped. 'copy': every chunk is received in a message and sent on in another. Remote and
   * file destinations always get messages.
   */
  dataPath?: 'splice' | 'copy';
}

const now = () => performance.now();

/** A server refuses to run a migrated-away device with EPERM; say what that means. */
function explainSourceRefusal(e: unknown): unknown {
  if ((e as { errno?: number }).errno !== Errno.EPERM) return e;
  return new MigrationFailure(
    'the source refused to run (EPERM): its device was migrated away and its state lives ' +
      'elsewhere; reset it or resume it through its control socket first',
  );
}

/** What a server says of its device (the VFU_STATUS extension); null if it does not say. */
interface DeviceStatus {
  state: string;
  migratedAway: boolean;
  used: boolean;
  lastRefusal: string | null;
}

export async function deviceStatus(c: VfioUserClient): Promise<DeviceStatus | null> {
  try {
    const r = await c.feature(FeatureFlag.GET | Feature.VFU_STATUS, new Uint8Array(0), 8 + 4096);
    return JSON.parse(Buffer.from(r.data).toString('utf8')) as DeviceStatus;
  } catch {
    return null; // another server: nothing known
  }
}

/**
 * A destination that runs a device of its own (used since it started or was last reset) would
 * lose that state: refused unless forced. A fresh destination, or one whose device was migrated
 * away (stopped, its state elsewhere), is what QEMU's incoming side is: never run.
 */
export async function checkDestination(dst: VfioUserClient, force: boolean): Promise<void> {
  const st = await deviceStatus(dst);
  if (force || !st || st.state !== 'RUNNING' || !st.used) return;
  throw new MigrationFailure(
    'the destination is running a device of its own (used since it started or was last reset); ' +
      'migrating into it would overwrite that state: use --force to do so',
  );
}

/** Why the destination refused, in its own words, if it says. */
async function destinationRefusal(dst: VfioUserClient, e: unknown): Promise<unknown> {
  const why = (await deviceStatus(dst))?.lastRefusal;
  return why ? new MigrationFailure(`the destination refused the state: ${why}`) : e;
}

const interrupted = (signal?: AbortSignal): void => {
  if (signal?.aborted) throw new MigrationFailure(`interrupted (${signal.reason ?? 'signal'})`);
};

/**
 * Live-migrates the device behind `src` into the device behind `dst` (a destination server's
 * client, or another destination half: a remote one, a file). Never throws: the report says
 * what happened.
 */
export async function migrate(
  src: VfioUserClient,
  dst: VfioUserClient | Destination,
  opts: MigrateOptions = {},
): Promise<Report> {
  const protocol = opts.protocol ?? 'v2';
  const t0 = now();
  const rep = blankReport(protocol, '?');
  let a: Endpoint,
    b: Destination,
    dataTime = 0;
  let destinationTouched = false;
  let expected = 0; // bytes the source last said it had to send (for progress)
  const where = async () => {
    rep.source.state = await a.state().then(stateName, e => `unknown (${(e as Error).message})`);
    rep.destination.state = await b.describe();
  };
  const progress = (phase: Progress['phase'], n: number, moved: number) => {
    rep.bytes += n;
    opts.onProgress?.({
      phase,
      iteration: rep.iterations,
      bytes: rep.bytes,
      pending: Math.max(0, expected - moved),
    });
  };
  // Moves data source -> destination until the source has none (or `limit` bytes moved, or the
  // signal is aborted: the caller's next check then throws, even in an endless stop-copy). The
  // next read is in flight while the previous chunk is written: both servers work at once.
  const copyChunks = async (phase: Progress['phase'], buf: number, limit: number) => {
    let moved = 0;
    const wantMore = () => moved < limit && !opts.signal?.aborted;
    let next: Promise<Uint8Array> | null = a.read(buf);
    while (next) {
      const chunk: Uint8Array = await next;
      if (chunk.length === 0) break;
      moved += chunk.length;
      next = wantMore() && protocol === 'v2' ? a.read(buf) : null;
      try {
        await b.write(chunk);
      } catch (e) {
        next?.catch(() => {}); // the read in flight is abandoned: its failure must not go unhandled
        throw e;
      }
      a.done(chunk);
      if (!next && wantMore()) next = a.read(buf);
      progress(phase, chunk.length, moved);
    }
    return moved;
  };
  const move = async (phase: Progress['phase'], buf: number, limit = Infinity): Promise<number> => {
    const t = now();
    const relay = openRelay(src, b, protocol, opts.dataPath);
    rep.dataPath = relay ? 'splice' : a.mapped ? 'mapping' : 'messages';
    try {
      return relay
        ? await relayChunks(relay, buf, limit, opts.signal, (n, moved) => progress(phase, n, moved))
        : await copyChunks(phase, buf, limit);
    } finally {
      relay?.close();
      dataTime += now() - t;
    }
  };
  try {
    const mapWindow = opts.dataPath !== 'copy';
    a = protocol === 'v2' ? v2(src) : await v1(src, { mapWindow });
    b = 'open' in dst ? dst : localDestination(dst, mapWindow);
    await b.open(protocol);
    let preCopy = opts.preCopy ?? true;
    interrupted(opts.signal);
    if (!('open' in dst)) await checkDestination(dst, opts.force ?? false);
    if (protocol === 'v2') {
      const flags = await src.migrationFlags();
      if (!(flags & MigrationFlag.STOP_COPY))
        throw new MigrationFailure('the source device does not support migration (no STOP_COPY)');
      preCopy &&= (flags & MigrationFlag.PRE_COPY) !== 0;
    }
    // save_setup / load_setup
    const buf = Math.min(
      1 << 20,
      src.serverCaps.maxDataXferSize,
      protocol === 'v2' ? Math.max(4096, await src.dataSize().catch(() => 1 << 20)) : 1 << 20,
    );
    await startDirtyLogging(src, protocol, opts.dmaRanges);
    // The source first, as QEMU's save_setup comes before the destination's load_setup: a source
    // that refuses to migrate (e.g. it was migrated away) leaves the destination untouched.
    if (preCopy) {
      try {
        await a.set(S.PRE_COPY);
      } catch (e) {
        await a.set(S.RUNNING).catch(() => {});
        throw explainSourceRefusal(e);
      }
    }
    await b.start();
    destinationTouched = true;
    if (preCopy) {
      const first = await a.pending();
      expected = first.initial + first.dirty;
      // Pre-copy rounds: move what there is, let the device run (and the workload dirty it),
      // repeat.
      const limit = opts.downtimeLimitMs ?? 300,
        maxIt = opts.maxIterations ?? 30;
      for (;;) {
        interrupted(opts.signal);
        rep.iterations++;
        // bounded: a device dirtying fast must not hold the round
        const roundBytes = opts.roundBytes ?? 256 << 20;
        const moved = await move('precopy', buf, roundBytes);
        rep.precopyBytes += moved;
        if (
          opts.cancelAfterIterations !== undefined &&
          rep.iterations >= opts.cancelAfterIterations
        ) {
          await a.set(S.RUNNING); // cancel: PRE_COPY -> RUNNING, the source goes on untouched
          await b.abort('cancelled');
          rep.outcome = 'cancelled';
          rep.error = `cancelled after ${rep.iterations} pre-copy iterations`;
          return rep;
        }
        if (opts.workload) rep.workloadWrites += await opts.workload();
        const p = await a.pending();
        expected = p.initial + p.dirty;
        const bandwidth = rep.bytes / Math.max(dataTime, 1); // bytes per ms
        opts.onProgress?.({
          phase: 'precopy',
          iteration: rep.iterations,
          bytes: rep.bytes,
          pending: p.initial + p.dirty,
        });
        const remaining =
          protocol === 'v2' ? p.dirty + Math.min(p.stopCopy, p.dirty + 64 * 1024) : p.dirty;
        // The source ran out of data in this round (v1's pending_bytes does not tell the first
        // pass from dirty pages: this does), and the rest fits the limit (0: never).
        const caughtUp = moved < roundBytes && p.initial === 0;
        const fits = limit > 0 && caughtUp && remaining <= bandwidth * limit;
        if (fits || rep.iterations >= maxIt) break;
      }
    }
    // Switchover: the source stops; what is left moves; the destination loads and runs.
    interrupted(opts.signal);
    const down = now();
    await a.set(S.STOP_COPY).catch(e => {
      throw explainSourceRefusal(e);
    });
    expected = await a.pending().then(
      p => p.stopCopy,
      () => 0,
    );
    rep.stopCopyBytes = await move('stopcopy', buf);
    rep.dirtyPagesReported = await stopDirtyLogging(src, protocol, opts.dmaRanges);
    opts.onProgress?.({ phase: 'resume', iteration: rep.iterations, bytes: rep.bytes, pending: 0 });
    const resume = now();
    rep.stopCopyMs = resume - down;
    interrupted(opts.signal);
    try {
      await b.finish();
    } catch (e) {
      if ('open' in dst) throw e; // a remote half or a file says why in its own words
      const why = (await deviceStatus(dst))?.lastRefusal ?? (e as Error).message;
      throw new MigrationFailure(`the destination rejected the device state: ${why}`);
    }
    rep.downtimeMs = now() - down;
    rep.resumeMs = now() - resume;
    await a.set(S.STOP); // the source stays paused, as QEMU leaves it
    rep.outcome = 'completed';
  } catch (e) {
    const refused = destinationTouched && !(e instanceof MigrationFailure);
    const asked = refused && !('open' in dst) ? await destinationRefusal(dst, e) : e;
    rep.error = (asked as Error).message;
    if (opts.signal?.aborted) rep.outcome = 'cancelled';
    // Recovery as QEMU does it: the source runs again with nothing lost; a destination that
    // holds half a state is reset so it is usable.
    // A source that refuses to run (migrated away: its state lives elsewhere) is left as it is;
    // only one in ERROR is reset.
    // After a switchover whose answer never came, the destination may run the device: the
    // source stays stopped (its state handed over), never a second running copy.
    if (a! && e instanceof SwitchoverInDoubt) await a.set(S.STOP).catch(() => {});
    else if (a!)
      await a.set(S.RUNNING).catch(async () => {
        if ((await a.state().catch(() => S.ERROR)) === S.ERROR) await src.reset().catch(() => {});
      });
    if (b! && destinationTouched) await b.abort(rep.error).catch(() => {});
  } finally {
    rep.totalMs = now() - t0;
    rep.throughputGiBps = dataTime > 0 ? rep.bytes / 2 ** 30 / (dataTime / 1000) : 0;
    if (a! && b!) await where().catch(() => {});
    if (a!) a.close?.();
    if (b! instanceof LocalDestination && b !== dst) b.close(); // made here: its mapping too
  }
  return rep;
}

/** A splice relay from the source to a destination server of this process, where one can be. */
function openRelay(
  src: VfioUserClient,
  b: Destination,
  protocol: 'v1' | 'v2',
  dataPath: MigrateOptions['dataPath'],
): MigDataRelay | null {
  if (protocol !== 'v2' || dataPath === 'copy' || !(b instanceof LocalDestination)) return null;
  return MigDataRelay.open(src, b.client, src.options.timeoutMs ?? 5000);
}

/**
 * copyChunks through a relay: the next chunk is asked for before the destination's answer to
 * the last one is awaited, so both servers work at once. Each chunk blocks this thread while
 * it moves; between chunks the event loop gets its turn (timers, signals, progress output).
 */
async function relayChunks(
  relay: MigDataRelay,
  buf: number,
  limit: number,
  signal: AbortSignal | undefined,
  onChunk: (n: number, moved: number) => void,
): Promise<number> {
  const max = Math.min(buf, relay.dst.serverCaps.maxDataXferSize);
  let moved = 0;
  relay.ask(max);
  for (;;) {
    const n = relay.relay();
    if (n === 0) return moved;
    moved += n;
    const more = moved < limit && !signal?.aborted;
    if (more) relay.ask(max);
    relay.written();
    onChunk(n, moved);
    if (!more) return moved;
    await new Promise(setImmediate);
  }
}

async function startDirtyLogging(
  c: VfioUserClient,
  protocol: 'v1' | 'v2',
  ranges?: { iova: number; length: number }[],
): Promise<void> {
  if (!ranges?.length) return;
  if (protocol === 'v2')
    await c.feature(
      FeatureFlag.SET | Feature.DMA_LOGGING_START,
      featureData.loggingStart(4096, ranges),
    );
  else await c.raw(encode.dirtyPages(c.nextId(), { argsz: 8, flags: DirtyPagesFlag.START }));
}

/** A report's bitmap must fit one message: 64 KiB of bitmap covers 2 GiB of 4 KiB pages. */
const REPORT_SPAN = 2 ** 31;

/** A logged range as the pieces its dirty pages are asked for in. */
function reportPieces(r: { iova: number; length: number }): { iova: number; length: number }[] {
  const pieces = [];
  for (let at = 0; at < r.length; at += REPORT_SPAN)
    pieces.push({ iova: r.iova + at, length: Math.min(REPORT_SPAN, r.length - at) });
  return pieces;
}

async function stopDirtyLogging(
  c: VfioUserClient,
  protocol: 'v1' | 'v2',
  ranges?: { iova: number; length: number }[],
): Promise<number> {
  if (!ranges?.length) return 0;
  let pages = 0;
  for (const r of ranges.flatMap(reportPieces)) {
    const size = bitmapBytes(r.length, 4096);
    if (protocol === 'v2') {
      const rep = await c.feature(
        FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(r.iova, r.length, 4096),
        8 + 24 + size,
      );
      pages += setPages(rep.data.subarray(24), Math.ceil(r.length / 4096)).length;
    } else {
      const m = await c.raw(
        encode.dirtyPages(c.nextId(), {
          argsz: 40 + size,
          flags: DirtyPagesFlag.GET_BITMAP,
          range: { iova: r.iova, size: r.length, pgsize: 4096, bitmapSize: size },
        }),
      );
      pages += setPages(m.payload.subarray(40), Math.ceil(r.length / 4096)).length;
    }
  }
  if (protocol === 'v2') await c.feature(FeatureFlag.SET | Feature.DMA_LOGGING_STOP);
  else await c.raw(encode.dirtyPages(c.nextId(), { argsz: 8, flags: DirtyPagesFlag.STOP }));
  return pages;
}
