// Command handlers: each validates what only the device knows, acts, and returns the reply
// (bytes + fds) or an errno. No handler knows about sockets.
import {
  Command,
  Errno,
  Flag,
  HEADER_SIZE,
  Region,
  RegionFlag,
  RegionCapId,
  DeviceInfoFlag,
  DmaUnmapFlag,
  encode,
  bitmapBytes,
  type Request,
  type RegionCap,
} from '@vfu/protocol';
import type { OwnedFd } from '@vfu/native';
import { RegionAccessError, DmaError, type RegionHandler } from '@vfu/pci';
import type { Session } from './session.js';

/** A reply: its bytes (then `more`, sent beside them in the same sendmsg), or an errno. */
export type Reply = { msg: Uint8Array; fds?: number[]; more?: Uint8Array[] } | number;
export type Handler = (
  s: Session,
  id: number,
  req: Request,
  fds: OwnedFd[],
) => Reply | Promise<Reply>;

const msg = (m: Uint8Array): Reply => ({ msg: m });

/**
 * The region behind an index: BARs and config from the device, extra regions (v1 migration) from
 * the server.
 */
export function regionOf(s: Session, index: number): RegionHandler | undefined {
  return index < Region.NUM_PCI ? s.device.region(index) : s.extraRegions[index - Region.NUM_PCI];
}

function access(
  s: Session,
  index: number,
  offset: number,
  count: number,
  fn: (r: RegionHandler) => void,
): number {
  if (index >= s.numRegions) return Errno.EINVAL;
  const r = regionOf(s, index);
  if (!r) return Errno.EINVAL;
  if (offset > r.size || count > r.size - offset) return Errno.EINVAL;
  if (count === 0) return 0;
  try {
    fn(r);
    return 0;
  } catch (e) {
    return accessFailed(s, index, offset, e);
  }
}

/** The errno for a region access that threw: the device's own, or EIO (logged). */
function accessFailed(s: Session, index: number, offset: number, e: unknown): number {
  if (e instanceof RegionAccessError || e instanceof DmaError) return e.errno;
  s.log(`region ${index} access at 0x${offset.toString(16)} failed: ${(e as Error).message}`);
  return Errno.EIO;
}

// In-place fast paths: REGION_READ, REGION_WRITE and REGION_WRITE_MULTI handled straight from
// the receive buffer, their replies written straight into the connection's reply batch. Only
// the well-formed case is taken; anything else returns false and goes the general way (decode,
// handler), which gives every refusal its usual answer. Each acts before it reserves room for
// its reply, so a send made while acting (e.g. an interrupt message) keeps its order.

/** u64 as a number, as the decoder reads it (inexact above 2^53, still out of any region). */
const u64At = (dv: DataView, o: number) =>
  dv.getUint32(o + 4, true) * 0x1_0000_0000 + dv.getUint32(o, true);

/** The region behind `index` if [offset, offset + count) lies inside it and count > 0. */
function regionFor(s: Session, index: number, offset: number, count: number) {
  if (index >= s.numRegions || count === 0) return undefined;
  const r = regionOf(s, index);
  if (!r || offset > r.size || count > r.size - offset) return undefined;
  return r;
}

/** Writes a reply header (REPLY, no error) of `size` bytes at `at` in `out`. */
function replyHeader(out: Buffer, at: number, id: number, cmd: number, size: number): void {
  out.writeUInt32LE(id | (cmd << 16), at);
  out.writeUInt32LE(size, at + 4);
  out.writeUInt32LE(Flag.REPLY, at + 8);
  out.writeUInt32LE(0, at + 12);
}

/** Replies (unless NO_REPLY) with header + the 16-byte access triple copied from the request. */
function replyAccess(
  s: Session,
  b: Buffer,
  dv: DataView,
  off: number,
  extra: Uint8Array | null,
): void {
  const id = dv.getUint16(off, true),
    cmd = dv.getUint16(off + 2, true);
  const n = 32 + (extra ? extra.length : 0);
  const conn = s.conn;
  const at = conn.reserve(n);
  if (at < 0) {
    const m = Buffer.allocUnsafe(n);
    replyHeader(m, 0, id, cmd, n);
    b.copy(m, 16, off + 16, off + 32);
    if (extra) m.set(extra, 32);
    conn.send(m);
    return;
  }
  const out = conn.out;
  replyHeader(out, at, id, cmd, n);
  b.copy(out, at + 16, off + 16, off + 32);
  if (extra) out.set(extra, at + 32);
  conn.commit(n);
}

function replyErrorAt(s: Session, dv: DataView, off: number, errno: number): void {
  const flags = dv.getUint32(off + 8, true);
  s.conn.replyError(
    {
      id: dv.getUint16(off, true),
      cmd: dv.getUint16(off + 2, true),
      size: HEADER_SIZE,
      flags,
      error: 0,
    },
    errno,
  );
}

/** A posted or answered REGION_WRITE from the receive buffer. */
export function regionWriteInPlace(
  s: Session,
  b: Buffer,
  dv: DataView,
  off: number,
  size: number,
): boolean {
  if (size < 32) return false;
  const offset = u64At(dv, off + 16),
    index = dv.getUint32(off + 24, true),
    count = dv.getUint32(off + 28, true);
  if (count !== size - 32 || count > s.limits.maxDataXferSize) return false;
  const r = regionFor(s, index, offset, count);
  if (!r) return false;
  try {
    r.write(offset, new Uint8Array(b.buffer, b.byteOffset + off + 32, count));
  } catch (e) {
    replyErrorAt(s, dv, off, accessFailed(s, index, offset, e));
    return true;
  }
  if ((dv.getUint32(off + 8, true) & Flag.NO_REPLY) === 0) replyAccess(s, b, dv, off, null);
  return true;
}

const scratch = new Uint8Array(4096);
const views = Array.from({ length: 9 }, (_, n) => scratch.subarray(0, n));

/** A REGION_READ of up to 4 KiB from the receive buffer, its data read into a scratch buffer. */
export function regionReadInPlace(
  s: Session,
  b: Buffer,
  dv: DataView,
  off: number,
  size: number,
): boolean {
  if (size < 32) return false;
  const flags = dv.getUint32(off + 8, true);
  const offset = u64At(dv, off + 16),
    index = dv.getUint32(off + 24, true),
    count = dv.getUint32(off + 28, true);
  if (flags & Flag.NO_REPLY || count > scratch.length || count > s.limits.maxDataXferSize)
    return false;
  const r = regionFor(s, index, offset, count);
  if (!r) return false;
  const data = count < views.length ? views[count] : scratch.subarray(0, count);
  try {
    r.read(offset, data);
  } catch (e) {
    replyErrorAt(s, dv, off, accessFailed(s, index, offset, e));
    return true;
  }
  replyAccess(s, b, dv, off, data);
  return true;
}

/** REGION_WRITE_MULTI from the receive buffer: every entry checked before the first write. */
export function writeMultiInPlace(
  s: Session,
  b: Buffer,
  dv: DataView,
  off: number,
  size: number,
): boolean {
  if (size < 24 || !s.caps?.writeMultiple) return false;
  const n = u64At(dv, off + 16);
  if (n > (size - 24) / 24) return false;
  for (let i = 0, o = off + 24; i < n; i++, o += 24) {
    const count = dv.getUint32(o + 12, true);
    if (count > 8 || !regionFor(s, dv.getUint32(o + 8, true), u64At(dv, o), count)) return false;
  }
  for (let i = 0, o = off + 24; i < n; i++, o += 24) {
    const offset = u64At(dv, o),
      index = dv.getUint32(o + 8, true),
      count = dv.getUint32(o + 12, true);
    if (count === 0) continue;
    try {
      regionOf(s, index)!.write(offset, new Uint8Array(b.buffer, b.byteOffset + o + 16, count));
    } catch (e) {
      replyErrorAt(s, dv, off, accessFailed(s, index, offset, e));
      return true;
    }
  }
  if (dv.getUint32(off + 8, true) & Flag.NO_REPLY) return true;
  const id = dv.getUint16(off, true);
  const reply = encode.writeMultiReply(id, n);
  s.conn.send(reply);
  return true;
}

export const deviceHandlers: Partial<Record<Command, Handler>> = {
  [Command.DEVICE_GET_INFO]: (s, id) =>
    msg(
      encode.deviceInfo(id, {
        flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
        numRegions: s.numRegions,
        numIrqs: 5,
      }),
    ),

  [Command.DEVICE_GET_REGION_INFO]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_REGION_INFO) return Errno.EINVAL;
    const { index, argsz } = req.body;
    if (index >= s.numRegions) return Errno.EINVAL;
    const r = regionOf(s, index);
    if (!r)
      return msg(
        encode.regionInfo(id, argsz, { flags: 0, index, size: 0, offset: 0, caps: [] }).msg,
      );
    const caps: RegionCap[] = [...(s.regionCaps.get(index) ?? [])];
    let flags = index === Region.ROM ? RegionFlag.READ : RegionFlag.READ | RegionFlag.WRITE;
    if (r.mappable && index !== Region.CONFIG) {
      flags |= RegionFlag.MMAP;
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas: r.mappable.areas });
    }
    const out = encode.regionInfo(id, argsz, { flags, index, size: r.size, offset: 0, caps });
    return { msg: out.msg, fds: out.withCaps && r.mappable ? [r.mappable.fd.fd] : [] };
  },

  [Command.DEVICE_GET_REGION_IO_FDS]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_REGION_IO_FDS) return Errno.EINVAL;
    if (req.body.index >= s.numRegions || !regionOf(s, req.body.index)) return Errno.EINVAL;
    return msg(encode.ioFdsReply(id, req.body.index)); // no ioeventfds: count 0
  },

  [Command.DEVICE_GET_IRQ_INFO]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_IRQ_INFO) return Errno.EINVAL;
    return msg(encode.irqInfo(id, { index: req.body.index, ...s.device.irq.info(req.body.index) }));
  },

  [Command.DEVICE_SET_IRQS]: (s, id, req, fds) => {
    if (req.cmd !== Command.DEVICE_SET_IRQS) return Errno.EINVAL;
    const e = s.device.irq.set(req.body, fds.splice(0));
    return e || msg(encode.empty(id, Command.DEVICE_SET_IRQS));
  },

  [Command.REGION_READ]: (s, id, req) => {
    if (req.cmd !== Command.REGION_READ) return Errno.EINVAL;
    const out = encode.regionReadReply(id, req.body);
    const e = access(s, req.body.region, req.body.offset, req.body.count, r =>
      r.read(req.body.offset, out.data),
    );
    return e || msg(out.msg);
  },

  [Command.REGION_WRITE]: (s, id, req) => {
    if (req.cmd !== Command.REGION_WRITE) return Errno.EINVAL;
    const e = access(s, req.body.region, req.body.offset, req.body.count, r =>
      r.write(req.body.offset, req.body.data!),
    );
    return e || msg(encode.regionWriteReply(id, req.body));
  },

  [Command.REGION_WRITE_MULTI]: (s, id, req) => {
    if (req.cmd !== Command.REGION_WRITE_MULTI || !s.caps?.writeMultiple) return Errno.EINVAL;
    let done = 0;
    for (const w of req.body.writes) {
      const e = access(s, w.region, w.offset, w.count, r => r.write(w.offset, w.data!));
      if (e) return e;
      done++;
    }
    return msg(encode.writeMultiReply(id, done));
  },

  [Command.DEVICE_RESET]: (s, id) => {
    s.resetDevice('DEVICE_RESET');
    return msg(encode.empty(id, Command.DEVICE_RESET));
  },

  [Command.DMA_MAP]: (s, id, req, fds) => {
    if (req.cmd !== Command.DMA_MAP || fds.length > 1) return Errno.EINVAL;
    const e = s.device.guest.map(req.body, fds.shift());
    return e || msg(encode.empty(id, Command.DMA_MAP));
  },

  [Command.DMA_UNMAP]: (s, id, req) => {
    if (req.cmd !== Command.DMA_UNMAP) return Errno.EINVAL;
    const b = req.body;
    if (b.flags === DmaUnmapFlag.ALL) {
      s.device.guest.unmapAll();
      return msg(encode.dmaUnmapReply(id, b));
    }
    if (b.bitmap) {
      if (!s.device.guest.logging || b.bitmap.pgsize !== s.device.guest.logPageSize)
        return Errno.EINVAL;
      if (b.bitmap.size !== bitmapBytes(b.size, b.bitmap.pgsize)) return Errno.EINVAL;
    }
    const r = s.device.guest.unmap(b.address, b.size, b.bitmap?.pgsize);
    return r.errno || msg(encode.dmaUnmapReply(id, b, r.bitmap));
  },
};
