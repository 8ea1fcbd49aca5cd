// In-place fast paths: REGION_READ, REGION_WRITE and REGION_WRITE_MULTI handled straight from
// the receive buffer, their replies written straight into the connection's reply batch. Only
// the well-formed case is taken; anything else returns false and goes the general way (decode,
// handler), which gives every refusal its usual answer. Each acts before it reserves room for
// its reply, so a send made while acting (e.g. an interrupt message) keeps its order.
// These are the one place below the session that touches the connection: they are transport
// and handler in one, for speed.
import { Flag, HEADER_SIZE, Region, encode } from '@vfu/protocol';
import type { Connection } from '@vfu/transport';
import { accessFailed, regionFor, type HandlerContext } from './handlers.js';
/** u64 as a number, as the decoder reads it (inexact above 2^53, still out of any region). */
const u64At = (dv: DataView, o: number) =>
  dv.getUint32(o + 4, true) * 0x1_0000_0000 + dv.getUint32(o, true);

/**
 * The PCI region behind an in-place access. Regions past the PCI ones (the v1 migration region)
 * go the general way: a write there may stop the device, whose answer waits for it to quiesce.
 */
function pciRegionFor(ctx: HandlerContext, index: number, offset: number, count: number) {
  return index < Region.NUM_PCI ? regionFor(ctx, index, offset, count) : undefined;
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
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
  extra: Uint8Array | null,
): void {
  const id = dv.getUint16(off, true),
    cmd = dv.getUint16(off + 2, true);
  const n = 32 + (extra ? extra.length : 0);
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

function replyErrorAt(conn: Connection, dv: DataView, off: number, errno: number): void {
  const flags = dv.getUint32(off + 8, true);
  conn.replyError(
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
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
  size: number,
): boolean {
  if (size < 32) return false;
  const offset = u64At(dv, off + 16),
    index = dv.getUint32(off + 24, true),
    count = dv.getUint32(off + 28, true);
  if (count !== size - 32 || count > ctx.limits.maxDataXferSize) return false;
  const r = pciRegionFor(ctx, index, offset, count);
  if (!r) return false;
  try {
    r.write(offset, new Uint8Array(b.buffer, b.byteOffset + off + 32, count));
  } catch (e) {
    replyErrorAt(conn, dv, off, accessFailed(ctx, index, offset, e));
    return true;
  }
  if ((dv.getUint32(off + 8, true) & Flag.NO_REPLY) === 0) replyAccess(conn, b, dv, off, null);
  return true;
}

const scratch = new Uint8Array(4096);
const views = Array.from({ length: 9 }, (_, n) => scratch.subarray(0, n));

/** A REGION_READ of up to 4 KiB from the receive buffer, its data read into a scratch buffer. */
export function regionReadInPlace(
  ctx: HandlerContext,
  conn: Connection,
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
  if (flags & Flag.NO_REPLY || count > scratch.length || count > ctx.limits.maxDataXferSize)
    return false;
  const r = pciRegionFor(ctx, index, offset, count);
  if (!r) return false;
  const data = count < views.length ? views[count] : scratch.subarray(0, count);
  try {
    r.read(offset, data);
  } catch (e) {
    replyErrorAt(conn, dv, off, accessFailed(ctx, index, offset, e));
    return true;
  }
  replyAccess(conn, b, dv, off, data);
  return true;
}

/** REGION_WRITE_MULTI from the receive buffer: every entry checked before the first write. */
export function writeMultiInPlace(
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
  size: number,
): boolean {
  if (size < 24 || !ctx.caps.writeMultiple) return false;
  const n = u64At(dv, off + 16);
  if (n > (size - 24) / 24) return false;
  for (let i = 0, o = off + 24; i < n; i++, o += 24) {
    const count = dv.getUint32(o + 12, true);
    if (count > 8 || !pciRegionFor(ctx, dv.getUint32(o + 8, true), u64At(dv, o), count))
      return false;
  }
  for (let i = 0, o = off + 24; i < n; i++, o += 24) {
    const offset = u64At(dv, o),
      index = dv.getUint32(o + 8, true),
      count = dv.getUint32(o + 12, true);
    if (count === 0) continue;
    try {
      ctx.region(index)!.write(offset, new Uint8Array(b.buffer, b.byteOffset + o + 16, count));
    } catch (e) {
      replyErrorAt(conn, dv, off, accessFailed(ctx, index, offset, e));
      return true;
    }
  }
  if (dv.getUint32(off + 8, true) & Flag.NO_REPLY) return true;
  const id = dv.getUint16(off, true);
  const reply = encode.writeMultiReply(id, n);
  conn.send(reply);
  return true;
}
