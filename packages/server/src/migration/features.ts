// DEVICE_FEATURE (§8.5), MIG_DATA_READ/WRITE (§8.6) and v1 DIRTY_PAGES (§6.2) handlers.
import {
  Command,
  Errno,
  Feature,
  FeatureFlag,
  DirtyPagesFlag,
  encode,
  featureData,
  decodeFeatureData,
  bitmapBytes,
  ProtocolError,
} from '@vfu/protocol';
import { S } from '@vfu/fsm';
import { PciError } from '@vfu/pci';
import type { HandlerContext, HandlerTable, Reply, RequestBody } from '../handlers.js';
import { MigrationError } from './errors.js';
import type { MigrationHost } from './host.js';

const { GET, SET, PROBE } = FeatureFlag;
/** Which operations each feature supports. */
const OPS: Record<number, number> = {
  [Feature.MIGRATION]: GET,
  [Feature.MIG_DEVICE_STATE]: GET | SET,
  [Feature.DMA_LOGGING_START]: SET,
  [Feature.DMA_LOGGING_STOP]: SET,
  [Feature.DMA_LOGGING_REPORT]: GET,
  [Feature.MIG_DATA_SIZE]: GET,
  [Feature.VFU_PRECOPY_INFO]: GET,
  [Feature.VFU_STATUS]: GET,
};

/** The errno a refusal carries (migration, codec or kit); anything else is EIO. */
const errnoOf = (e: unknown): number =>
  e instanceof MigrationError || e instanceof ProtocolError || e instanceof PciError
    ? e.errno
    : Errno.EIO;

export function featureHandlers(m: MigrationHost): HandlerTable {
  const log = m.opts.log;
  return {
    [Command.DEVICE_FEATURE]: (ctx, id, body) => {
      const { flags, argsz, data } = body;
      const feature = flags & FeatureFlag.MASK,
        ops = flags & (GET | SET | PROBE);
      const supported = OPS[feature];
      if (supported === undefined) return Errno.EINVAL;
      if (ops & PROBE)
        return (ops & ~PROBE & ~supported) === 0
          ? { msg: encode.featureReply(id, flags, data) }
          : Errno.EINVAL;
      if (!(ops & supported)) return Errno.EINVAL;
      log.debug(`DEVICE_FEATURE 0x${feature.toString(16)} flags 0x${flags.toString(16)}`);
      const reply = (d: Uint8Array) => ({ msg: encode.featureReply(id, flags, d) });
      const room = argsz - 8; // what the client can take after the feature header
      try {
        switch (feature) {
          case Feature.MIGRATION:
            return room < 8 ? Errno.EINVAL : reply(featureData.u64(m.flags));
          case Feature.MIG_DEVICE_STATE: {
            if (room < 8) return Errno.EINVAL;
            if (ops & GET) return reply(featureData.migDeviceState(m.state));
            const d = decodeFeatureData.migDeviceState(data);
            if (d instanceof ProtocolError) return d.errno;
            m.set(d.state);
            return reply(data.subarray(0, 8));
          }
          case Feature.MIG_DATA_SIZE:
            return room < 8 ? Errno.EINVAL : reply(featureData.u64(m.stopCopyEstimate()));
          case Feature.VFU_PRECOPY_INFO: {
            if (room < 16 || !m.save || (m.state !== S.PRE_COPY && m.state !== S.PRE_COPY_P2P))
              return Errno.EINVAL;
            m.save.refresh();
            const p = m.save.precopyInfo();
            return reply(featureData.precopyInfo(p.initialBytes, p.dirtyBytes));
          }
          case Feature.VFU_STATUS: {
            const status = new TextEncoder().encode(JSON.stringify(m.status()));
            return room < status.length ? Errno.EINVAL : reply(status);
          }
          case Feature.DMA_LOGGING_START: {
            const d = decodeFeatureData.loggingStart(data);
            if (d instanceof ProtocolError) return d.errno;
            if (d.pageSize === 0) return Errno.EINVAL;
            m.device.guest.startLogging(d.pageSize, d.ranges);
            log.debug(`dirty logging started (page ${d.pageSize}, ${d.ranges.length} ranges)`);
            return reply(data);
          }
          case Feature.DMA_LOGGING_STOP:
            m.device.guest.stopLogging();
            return reply(data);
          case Feature.DMA_LOGGING_REPORT: {
            const d = decodeFeatureData.loggingReport(data);
            if (d instanceof ProtocolError) return d.errno;
            if (d.pageSize === 0 || d.length === 0) return Errno.EINVAL;
            const bitmap = bitmapBytes(d.length, d.pageSize);
            // The bitmap travels in one reply: bounded like any message's data, so a client
            // cannot make the server build (and send) a bitmap of gigabytes.
            if (bitmap > ctx.caps.maxDataXferSize) {
              log.warn(
                `DMA_LOGGING_REPORT: a ${bitmap}-byte bitmap exceeds max_data_xfer_size ` +
                  `(${ctx.caps.maxDataXferSize}); ask for a shorter range`,
              );
              return Errno.EINVAL;
            }
            if (room < 24 + bitmap) return Errno.EINVAL;
            const bm = m.device.guest.report(d.iova, d.length, d.pageSize);
            return reply(featureData.loggingReport(d.iova, d.length, d.pageSize, bm));
          }
        }
      } catch (e) {
        log.warn(`DEVICE_FEATURE ${feature}: ${(e as Error).message}`);
        return errnoOf(e);
      }
      return Errno.EINVAL;
    },

    [Command.MIG_DATA_READ]: (_ctx, id, body) => {
      if (!m.save || (m.state !== S.PRE_COPY && m.state !== S.STOP_COPY)) return Errno.EINVAL;
      if (!m.claim('v2')) return Errno.EINVAL;
      return m.readReply(id, body.size);
    },

    [Command.MIG_DATA_WRITE]: (ctx, id, body) => {
      if (!m.load || m.state !== S.RESUMING || !m.claim('v2')) return Errno.EINVAL;
      try {
        m.loadWrite(body.data!);
      } catch (e) {
        log.debug(`MIG_DATA_WRITE: ${(e as Error).message}`);
        return errnoOf(e);
      }
      // The load session keeps no reference to the data: its buffer takes the next message.
      ctx.payloadDone(body.data!);
      return { msg: encode.empty(id, Command.MIG_DATA_WRITE) };
    },

    [Command.DIRTY_PAGES]: (ctx, id, body) => {
      try {
        return dirtyPages(m, ctx, id, body);
      } catch (e) {
        log.warn(`DIRTY_PAGES: ${(e as Error).message}`);
        return errnoOf(e);
      }
    },
  };
}

/** v1 DIRTY_PAGES (§6.2): START, STOP, or the bitmap of a range. */
function dirtyPages(
  m: MigrationHost,
  ctx: HandlerContext,
  id: number,
  b: RequestBody<typeof Command.DIRTY_PAGES>,
): Reply {
  const g = m.device.guest;
  if (!ctx.caps.migration) return Errno.ENOTSUP;
  switch (b.flags) {
    case DirtyPagesFlag.START:
      g.startLogging(ctx.caps.migration.pgsize);
      return { msg: encode.empty(id, Command.DIRTY_PAGES) };
    case DirtyPagesFlag.STOP:
      g.stopLogging();
      return { msg: encode.empty(id, Command.DIRTY_PAGES) };
    default: {
      const r = b.range!;
      if (
        !g.logging ||
        r.pgsize !== g.logPageSize ||
        r.bitmapSize !== bitmapBytes(r.size, r.pgsize)
      )
        return Errno.EINVAL;
      if (b.argsz < 40 + r.bitmapSize)
        return { msg: encode.dirtyPagesReply(id, b.argsz, r, new Uint8Array(r.bitmapSize)) };
      const bm = g.report(r.iova, r.size, r.pgsize);
      return { msg: encode.dirtyPagesReply(id, b.argsz, r, bm) };
    }
  }
}
