import { Bytes } from './bytes.js';
import { Command, Errno, Flag, HEADER_SIZE } from './constants.js';
import { einval, type ProtocolError } from './errors.js';
import * as Layout from './layout.js';

export interface Header {
  id: number;
  cmd: number;
  /** Total message size, header included. */
  size: number;
  flags: number;
  error: number;
}

export const isReply = (h: Header) => (h.flags & Flag.TYPE_MASK) === Flag.REPLY;

export function decodeHeader(b: Uint8Array): Header {
  const L = Layout.Header;
  const r = new Bytes(b.subarray(0, HEADER_SIZE));
  return {
    id: r.get(L.id),
    cmd: r.get(L.cmd),
    size: r.get(L.size),
    flags: r.get(L.flags),
    error: r.get(L.error),
  };
}

export function writeHeader(out: Uint8Array, h: Header): void {
  const L = Layout.Header;
  const w = new Bytes(out);
  w.set(L.id, h.id);
  w.set(L.cmd, h.cmd);
  w.set(L.size, h.size);
  w.set(L.flags, h.flags);
  w.set(L.error, h.error);
}

/**
 * The checks of §1.5 that need only the header. `maxSize` bounds the body we agree to read;
 * a larger message is refused before its body is read.
 */
export function checkHeader(h: Header, maxSize: number): ProtocolError | null {
  const type = h.flags & Flag.TYPE_MASK;
  if (type !== Flag.COMMAND && type !== Flag.REPLY)
    return einval(`message type ${type} is neither command (0) nor reply (1)`);
  if ((h.flags & ~(Flag.TYPE_MASK | Flag.NO_REPLY | Flag.ERROR)) !== 0)
    return einval(`reserved header flag bits set: 0x${h.flags.toString(16)}`);
  if (h.size < HEADER_SIZE) return einval(`msg_size ${h.size} is smaller than the 16-byte header`);
  if (h.size > maxSize)
    return einval(`msg_size ${h.size} exceeds the maximum message size ${maxSize}`);
  if (type === Flag.COMMAND && h.size === HEADER_SIZE && h.cmd !== Command.DEVICE_RESET)
    return einval(`${Command[h.cmd] ?? `command ${h.cmd}`} without a payload`);
  return null;
}

/** An error reply: header only, flags REPLY|ERROR, errno > 0 (§1.3). */
export function encodeErrorReply(id: number, cmd: number, errno: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  writeHeader(out, {
    id,
    cmd,
    size: HEADER_SIZE,
    flags: Flag.REPLY | Flag.ERROR,
    error: errno > 0 ? errno : Errno.EINVAL,
  });
  return out;
}

/**
 * Builds a message: header + payload of `payloadSize` bytes, returned for filling in. With
 * `overwritten`, a large payload is not zeroed first (the caller writes every byte): this
 * skips the zeroing and fresh pages of a calloc'ed buffer on the data path.
 */
export function frame(
  id: number,
  cmd: number,
  flags: number,
  payloadSize: number,
  overwritten = false,
): { msg: Uint8Array; p: Bytes } {
  const msg =
    overwritten && payloadSize >= 64 * 1024
      ? Buffer.allocUnsafeSlow(HEADER_SIZE + payloadSize)
      : new Uint8Array(HEADER_SIZE + payloadSize);
  writeHeader(msg, { id, cmd, size: msg.length, flags, error: 0 });
  return { msg, p: new Bytes(msg.subarray(HEADER_SIZE)) };
}

/** A command (optionally NO_REPLY) or a reply, ready for its payload. */
export const request = (id: number, cmd: number, n: number, noReply = false, overwritten = false) =>
  frame(id, cmd, Flag.COMMAND | (noReply ? Flag.NO_REPLY : 0), n, overwritten);
export const reply = (id: number, cmd: number, n: number, overwritten = false) =>
  frame(id, cmd, Flag.REPLY, n, overwritten);
