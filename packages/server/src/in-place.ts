// In-place fast paths: REGION_READ, REGION_WRITE and REGION_WRITE_MULTI handled straight from
// the receive buffer, their replies written straight into the connection's reply batch. Only
// the well-formed case is taken; anything else returns 0 and goes the general way (decode,
// handler), which gives every refusal its usual answer. Each acts before it reserves room for
// its reply, so a send made while acting (e.g. an interrupt message) keeps its order.
// These are the one place below the session that touches the connection: they are transport
// and handler in one, for speed. Each returns the bytes it took (0: none).
import { Command, Flag, HEADER_SIZE, Layout, Region, encode } from '@vfu/protocol';
import type { Connection } from '@vfu/transport';
import type { RegionHandler } from '@vfu/pci';
import { accessFailed, regionFor, type HandlerContext } from './handlers.js';

// Byte offsets from a message's start, from the protocol's declared layouts: the header, then
// REGION_READ/WRITE's access triple and data, or REGION_WRITE_MULTI's count and entries.
const { id: ID, cmd: CMD, size: SIZE, flags: FLAGS, error: ERROR } = Layout.Header;
const ACCESS = HEADER_SIZE;
const OFFSET = ACCESS + Layout.RegionAccess.offset.at,
  INDEX = ACCESS + Layout.RegionAccess.region.at,
  COUNT = ACCESS + Layout.RegionAccess.count.at,
  DATA = ACCESS + Layout.RegionAccess.SIZE;
const MULTI_COUNT = HEADER_SIZE + Layout.WriteMulti.count.at,
  ENTRIES = HEADER_SIZE + Layout.WriteMulti.SIZE;
const Entry = Layout.WriteMultiEntry;

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

/** The access a REGION_READ/WRITE at `off` asks for (filled by accessAt; one, reused). */
const access = { offset: 0, index: 0, count: 0 };
/**
 * Decodes the access triple of the REGION_READ/WRITE at `off` into `access` and returns its
 * region when the access lies inside one, its count within `maxCount` (else undefined).
 */
function accessAt(
  ctx: HandlerContext,
  dv: DataView,
  off: number,
  maxCount: number,
): RegionHandler | undefined {
  access.offset = u64At(dv, off + OFFSET);
  access.index = dv.getUint32(off + INDEX, true);
  access.count = dv.getUint32(off + COUNT, true);
  if (access.count > maxCount || access.count > ctx.limits.maxDataXferSize) return undefined;
  return pciRegionFor(ctx, access.index, access.offset, access.count);
}

/** Writes a reply header (REPLY, no error) of `size` bytes at `at` in `out`. */
function replyHeader(out: Buffer, at: number, id: number, cmd: number, size: number): void {
  out.writeUInt16LE(id, at + ID.at);
  out.writeUInt16LE(cmd, at + CMD.at);
  out.writeUInt32LE(size, at + SIZE.at);
  out.writeUInt32LE(Flag.REPLY, at + FLAGS.at);
  out.writeUInt32LE(0, at + ERROR.at);
}

/** Replies (unless NO_REPLY) with header + the 16-byte access triple copied from the request. */
function replyAccess(
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
  extra: Uint8Array | null,
): void {
  const id = dv.getUint16(off + ID.at, true),
    cmd = dv.getUint16(off + CMD.at, true);
  const n = DATA + (extra ? extra.length : 0);
  const at = conn.reserve(n);
  if (at < 0) {
    const m = Buffer.allocUnsafe(n);
    replyHeader(m, 0, id, cmd, n);
    b.copy(m, ACCESS, off + ACCESS, off + DATA);
    if (extra) m.set(extra, DATA);
    conn.send(m);
    return;
  }
  const out = conn.out;
  replyHeader(out, at, id, cmd, n);
  b.copy(out, at + ACCESS, off + ACCESS, off + DATA);
  if (extra) out.set(extra, at + DATA);
  conn.commit(n);
}

function replyErrorAt(conn: Connection, dv: DataView, off: number, errno: number): void {
  const flags = dv.getUint32(off + FLAGS.at, true);
  conn.replyError(
    {
      id: dv.getUint16(off + ID.at, true),
      cmd: dv.getUint16(off + CMD.at, true),
      size: HEADER_SIZE,
      flags,
      error: 0,
    },
    errno,
  );
}

/** Scratch bytes for accesses up to 4 KiB, with a ready view for each count up to 8. */
const scratch = new Uint8Array(4096);
const views = Array.from({ length: 9 }, (_, n) => scratch.subarray(0, n));
const scratchOf = (count: number) =>
  count < views.length ? views[count] : scratch.subarray(0, count);

/**
 * Copies `count` bytes at `at` of `b` into the scratch: a register write's data reaches the
 * device without a typed array made per write (the largest cost of posted writes).
 */
function dataAt(b: Buffer, at: number, count: number): Uint8Array {
  if (count >= views.length) return new Uint8Array(b.buffer, b.byteOffset + at, count);
  const v = views[count];
  for (let i = 0; i < count; i++) v[i] = b[at + i];
  return v;
}

/** One REGION_WRITE at `off`: the region written to, or undefined to have it go the general way. */
function writeOne(ctx: HandlerContext, conn: Connection, b: Buffer, dv: DataView, off: number) {
  const size = dv.getUint32(off + SIZE.at, true);
  if (size < DATA) return undefined;
  const r = accessAt(ctx, dv, off, size - DATA);
  if (!r || access.count !== size - DATA) return undefined;
  try {
    writeAt(r, access.offset, b, dv, off + DATA, access.count);
  } catch (e) {
    replyErrorAt(conn, dv, off, accessFailed(ctx, access.index, access.offset, e));
    return r;
  }
  if ((dv.getUint32(off + FLAGS.at, true) & Flag.NO_REPLY) === 0)
    replyAccess(conn, b, dv, off, null);
  return r;
}

/** The little-endian value of a 1, 2 or 4-byte access's data at `at`. */
function valueAt(dv: DataView, at: number, count: 1 | 2 | 4): number {
  if (count === 4) return dv.getUint32(at, true);
  return count === 2 ? dv.getUint16(at, true) : dv.getUint8(at);
}

/**
 * Writes the `count` bytes at `at` to region `r`: a 1, 2 or 4-byte access as its value where the
 * region takes one (a register file: no copy, no decode), else through the scratch.
 */
function writeAt(
  r: RegionHandler,
  offset: number,
  b: Buffer,
  dv: DataView,
  at: number,
  count: number,
) {
  if (r.writeValue && (count === 4 || count === 2 || count === 1))
    r.writeValue(offset, count, valueAt(dv, at, count));
  else r.write(offset, dataAt(b, at, count));
}

// The header fields a posted run reads per message, as plain numbers.
const SIZE_AT = SIZE.at,
  CMD_AT = CMD.at,
  FLAGS_AT = FLAGS.at;

/**
 * The small posted writes right behind a handled REGION_WRITE (a guest's doorbells come back to
 * back) as far as `limit`: each a REGION_WRITE with NO_REPLY alone and 1 to 8 bytes to region
 * `index` (`r`), inside it. Returns where the run stops: anything else goes the general way.
 */
function postedRun(
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  at: number,
  limit: number,
  index: number,
  r: RegionHandler,
): number {
  while (limit - at >= DATA && !conn.backlogged && !conn.closed) {
    const size = dv.getUint32(at + SIZE_AT, true);
    const count = size - DATA;
    if (count < 1 || count > 8 || size > limit - at) break;
    if (dv.getUint16(at + CMD_AT, true) !== Command.REGION_WRITE) break;
    if (dv.getUint32(at + FLAGS_AT, true) !== Flag.NO_REPLY) break;
    if (dv.getUint32(at + INDEX, true) !== index || dv.getUint32(at + COUNT, true) !== count) break;
    const offset = u64At(dv, at + OFFSET);
    if (offset > r.size || count > r.size - offset) break;
    try {
      writeAt(r, offset, b, dv, at + DATA, count);
    } catch (e) {
      replyErrorAt(conn, dv, at, accessFailed(ctx, index, offset, e));
    }
    at += size;
  }
  return at;
}

/**
 * A REGION_WRITE from the receive buffer, then the small posted writes right behind it as far
 * as `limit` (the bytes it may take: whole messages, none carrying fds), stopping at anything
 * else or a send backlog.
 */
export function regionWriteInPlace(
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
  limit: number,
): number {
  const r = writeOne(ctx, conn, b, dv, off);
  if (!r) return 0;
  const next = off + dv.getUint32(off + SIZE_AT, true);
  return postedRun(ctx, conn, b, dv, next, limit, access.index, r) - off;
}

/** A REGION_READ of up to 4 KiB from the receive buffer, its data read into the scratch. */
export function regionReadInPlace(
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
): number {
  const size = dv.getUint32(off + SIZE.at, true);
  if (size < DATA || dv.getUint32(off + FLAGS.at, true) & Flag.NO_REPLY) return 0;
  const r = accessAt(ctx, dv, off, scratch.length);
  if (!r) return 0;
  const data = scratchOf(access.count);
  try {
    r.read(access.offset, data);
  } catch (e) {
    replyErrorAt(conn, dv, off, accessFailed(ctx, access.index, access.offset, e));
    return size;
  }
  replyAccess(conn, b, dv, off, data);
  return size;
}

/** REGION_WRITE_MULTI from the receive buffer: every entry checked before the first write. */
export function writeMultiInPlace(
  ctx: HandlerContext,
  conn: Connection,
  b: Buffer,
  dv: DataView,
  off: number,
): number {
  const size = dv.getUint32(off + SIZE.at, true);
  if (size < ENTRIES || !ctx.caps.writeMultiple) return 0;
  const n = u64At(dv, off + MULTI_COUNT);
  if (n > (size - ENTRIES) / Entry.SIZE) return 0;
  // Taken here only when every entry is in range (else the general way applies them in order up
  // to the failing one); entries mostly go to one region, looked up once.
  let index = -1;
  let r: RegionHandler | undefined;
  for (let i = 0, o = off + ENTRIES; i < n; i++, o += Entry.SIZE) {
    const count = dv.getUint32(o + Entry.count.at, true);
    const at = dv.getUint32(o + Entry.region.at, true);
    const offset = u64At(dv, o + Entry.offset.at);
    if (count === 0 || count > Entry.MAX_DATA) return 0;
    if (at !== index) {
      r = pciRegionFor(ctx, at, offset, count);
      index = r ? at : -1;
      if (!r) return 0;
    } else if (offset > r!.size || count > r!.size - offset) return 0;
  }
  index = -1;
  for (let i = 0, o = off + ENTRIES; i < n; i++, o += Entry.SIZE) {
    const offset = u64At(dv, o + Entry.offset.at),
      at = dv.getUint32(o + Entry.region.at, true),
      count = dv.getUint32(o + Entry.count.at, true);
    if (at !== index) {
      r = ctx.region(at);
      index = at;
    }
    try {
      writeAt(r!, offset, b, dv, o + Entry.DATA, count);
    } catch (e) {
      replyErrorAt(conn, dv, off, accessFailed(ctx, at, offset, e));
      return size;
    }
  }
  if (dv.getUint32(off + FLAGS.at, true) & Flag.NO_REPLY) return size;
  conn.send(encode.writeMultiReply(dv.getUint16(off + ID.at, true), n));
  return size;
}
