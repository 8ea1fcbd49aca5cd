// Command handlers: each validates what only the device knows, acts, and returns the reply
// (bytes + fds) or an errno. A handler sees a narrow context, never the socket; the table is
// typed by command, so each handler receives its own request body.
import {
  Command,
  Errno,
  Region,
  RegionFlag,
  RegionCapId,
  DeviceInfoFlag,
  DmaUnmapFlag,
  encode,
  bitmapBytes,
  type Capabilities,
  type Request,
  type RegionCap,
} from '@vfu/protocol';
import type { OwnedFd } from '@vfu/native';
import { PciError, type PciDevice, type RegionHandler } from '@vfu/pci';
import type { ServerLimits } from './limits.js';

/** What a handler may use: the device, the negotiated session's facts, and nothing of I/O. */
export interface HandlerContext {
  readonly device: PciDevice;
  readonly limits: ServerLimits;
  /** The client's capabilities, as negotiated by VERSION. */
  readonly caps: Capabilities;
  /** Extra capabilities of regions from index 9 on (e.g. the v1 migration region's type). */
  readonly regionCaps: ReadonlyMap<number, RegionCap[]>;
  readonly numRegions: number;
  /** The region behind an index: BARs and config from the device, extra regions after them. */
  region(index: number): RegionHandler | undefined;
  resetDevice(reason: string): void;
  /** The handler keeps no reference to this payload: the transport may reuse its memory. */
  payloadDone(payload: Uint8Array): void;
  /** Logs a failure or a refusal (at warn). */
  log(message: string): void;
}

/** A reply: its bytes (then `more`, sent beside them in the same sendmsg), or an errno. */
export type Reply = { msg: Uint8Array; fds?: number[]; more?: Uint8Array[] } | number;
/** The decoded body of command C's request. */
export type RequestBody<C extends Request['cmd']> = Extract<Request, { cmd: C }>['body'];
export type Handler<C extends Request['cmd']> = (
  ctx: HandlerContext,
  id: number,
  body: RequestBody<C>,
  fds: OwnedFd[],
) => Reply | Promise<Reply>;
/** One handler per command; the session's dispatch looks the request's command up here. */
export type HandlerTable = { [C in Request['cmd']]?: Handler<C> };

const msg = (m: Uint8Array): Reply => ({ msg: m });

/** The region behind `index` if [offset, offset + count) lies inside it. */
function regionSpanning(ctx: HandlerContext, index: number, offset: number, count: number) {
  if (index >= ctx.numRegions) return undefined;
  const r = ctx.region(index);
  if (!r || offset > r.size || count > r.size - offset) return undefined;
  return r;
}

/** The region behind `index` if [offset, offset + count) lies inside it and count > 0. */
export function regionFor(ctx: HandlerContext, index: number, offset: number, count: number) {
  return count === 0 ? undefined : regionSpanning(ctx, index, offset, count);
}

/** Runs `fn` on the region an access names: 0, or the errno refusing it (EINVAL: not inside). */
function access(
  ctx: HandlerContext,
  index: number,
  offset: number,
  count: number,
  fn: (r: RegionHandler) => void,
): number {
  const r = regionSpanning(ctx, index, offset, count);
  if (!r) return Errno.EINVAL;
  if (count === 0) return 0;
  try {
    fn(r);
    return 0;
  } catch (e) {
    return accessFailed(ctx, index, offset, e);
  }
}

/** The errno for a region access that threw (said in the log): the device's own, or EIO. */
export function accessFailed(
  ctx: HandlerContext,
  index: number,
  offset: number,
  e: unknown,
): number {
  const where = `region ${index} access at 0x${offset.toString(16)}`;
  if (e instanceof PciError) {
    ctx.log(`${where} refused: ${e.message}`);
    return e.errno;
  }
  ctx.log(`${where} failed: ${(e as Error).message}`);
  return Errno.EIO;
}

/** A kit request's refusal (a PciError) as its errno, said in the log; other faults go on up. */
function refused(ctx: HandlerContext, e: unknown): number {
  if (!(e instanceof PciError)) throw e;
  ctx.log(e.message);
  return e.errno;
}

export const deviceHandlers: HandlerTable = {
  [Command.DEVICE_GET_INFO]: (ctx, id) =>
    msg(
      encode.deviceInfo(id, {
        flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
        numRegions: ctx.numRegions,
        numIrqs: 5,
      }),
    ),

  [Command.DEVICE_GET_REGION_INFO]: (ctx, id, body) => {
    const { index, argsz } = body;
    if (index >= ctx.numRegions) return Errno.EINVAL;
    const r = ctx.region(index);
    if (!r)
      return msg(
        encode.regionInfo(id, argsz, { flags: 0, index, size: 0, offset: 0, caps: [] }).msg,
      );
    const caps: RegionCap[] = [...(ctx.regionCaps.get(index) ?? [])];
    let flags = index === Region.ROM ? RegionFlag.READ : RegionFlag.READ | RegionFlag.WRITE;
    if (r.mappable && index !== Region.CONFIG) {
      flags |= RegionFlag.MMAP;
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas: r.mappable.areas });
    }
    const out = encode.regionInfo(id, argsz, { flags, index, size: r.size, offset: 0, caps });
    if (out.withCaps && r.mappable) r.mappable.handedOut?.(); // its writes now bypass us
    return { msg: out.msg, fds: out.withCaps && r.mappable ? [r.mappable.fd.fd] : [] };
  },

  [Command.DEVICE_GET_REGION_IO_FDS]: (ctx, id, body) => {
    if (body.index >= ctx.numRegions || !ctx.region(body.index)) return Errno.EINVAL;
    return msg(encode.ioFdsReply(id, body.index)); // no ioeventfds: count 0
  },

  [Command.DEVICE_GET_IRQ_INFO]: (ctx, id, body) => {
    return msg(encode.irqInfo(id, { index: body.index, ...ctx.device.irq.info(body.index) }));
  },

  [Command.DEVICE_SET_IRQS]: (ctx, id, body, fds) => {
    try {
      ctx.device.irq.set(body, fds.splice(0));
    } catch (e) {
      return refused(ctx, e);
    }
    return msg(encode.empty(id, Command.DEVICE_SET_IRQS));
  },

  [Command.REGION_READ]: (ctx, id, body) => {
    // A region with its bytes at hand (device memory, the v1 data window) has them sent beside
    // the reply's head: no reply buffer of `count` bytes to allocate and fill.
    let view: Uint8Array | null = null;
    const { region, offset, count } = body;
    const e = access(ctx, region, offset, count, r => {
      view = r.view?.(offset, count) ?? null;
    });
    if (e) return e;
    if (view) return { msg: encode.regionReadReplyHead(id, body), more: [view] };
    const out = encode.regionReadReply(id, body);
    return access(ctx, region, offset, count, r => r.read(offset, out.data)) || msg(out.msg);
  },

  [Command.REGION_WRITE]: (ctx, id, body) => {
    const e = access(ctx, body.region, body.offset, body.count, r =>
      r.write(body.offset, body.data!),
    );
    // A region keeps no reference to written data: a large message's buffer takes the next
    // (v1 migration data comes in 1 MiB writes).
    ctx.payloadDone(body.data!);
    return e || msg(encode.regionWriteReply(id, body));
  },

  [Command.REGION_WRITE_MULTI]: (ctx, id, body) => {
    if (!ctx.caps.writeMultiple) return Errno.EINVAL;
    let done = 0;
    for (const w of body.writes) {
      const e = access(ctx, w.region, w.offset, w.count, r => r.write(w.offset, w.data!));
      if (e) return e;
      done++;
    }
    return msg(encode.writeMultiReply(id, done));
  },

  [Command.DEVICE_RESET]: (ctx, id) => {
    ctx.resetDevice('DEVICE_RESET');
    return msg(encode.empty(id, Command.DEVICE_RESET));
  },

  [Command.DMA_MAP]: (ctx, id, body, fds) => {
    if (fds.length > 1) return Errno.EINVAL;
    try {
      ctx.device.guest.map(body, fds.shift());
    } catch (e) {
      return refused(ctx, e);
    }
    return msg(encode.empty(id, Command.DMA_MAP));
  },

  [Command.DMA_UNMAP]: (ctx, id, body) => {
    const b = body;
    if (b.flags === DmaUnmapFlag.ALL) {
      ctx.device.guest.unmapAll();
      return msg(encode.dmaUnmapReply(id, b));
    }
    if (b.bitmap) {
      if (!ctx.device.guest.logging || b.bitmap.pgsize !== ctx.device.guest.logPageSize)
        return Errno.EINVAL;
      if (b.bitmap.size !== bitmapBytes(b.size, b.bitmap.pgsize)) return Errno.EINVAL;
    }
    try {
      const bitmap = ctx.device.guest.unmap(b.address, b.size, b.bitmap?.pgsize);
      return msg(encode.dmaUnmapReply(id, b, bitmap));
    } catch (e) {
      return refused(ctx, e);
    }
  },
};
