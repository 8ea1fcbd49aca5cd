import { Flag, HEADER_SIZE, MAX_PAYLOAD_SIZE, requestName } from './constants.js';
import { einval, type VhostUserError } from './errors.js';

export interface Header {
  request: number;
  flags: number;
  /** Payload size (the header's 12 bytes not included). */
  size: number;
}

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function decodeHeader(b: Uint8Array): Header {
  if (b.length < HEADER_SIZE) throw new RangeError(`header needs ${HEADER_SIZE} bytes`);
  const v = dv(b);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

export function writeHeader(out: Uint8Array, h: Header): void {
  const v = dv(out);
  v.setUint32(0, h.request, true);
  v.setUint32(4, h.flags, true);
  v.setUint32(8, h.size, true);
}

export const needsReply = (h: Header) => (h.flags & Flag.NEED_REPLY) !== 0;
export const isReply = (h: Header) => (h.flags & Flag.REPLY) !== 0;

/**
 * Checks of the header alone ("Header"): version 1, only REPLY/NEED_REPLY besides it, a payload
 * no larger than `maxPayload` (a larger body is refused before it is read).
 */
export function checkHeader(h: Header, maxPayload = MAX_PAYLOAD_SIZE): VhostUserError | null {
  const what = requestName(h.request);
  if ((h.flags & Flag.VERSION_MASK) !== Flag.VERSION)
    return einval(`${what}: version ${h.flags & Flag.VERSION_MASK} in the flags, expected 1`);
  if (h.flags & ~(Flag.VERSION_MASK | Flag.REPLY | Flag.NEED_REPLY))
    return einval(`${what}: reserved flag bits set: 0x${h.flags.toString(16)}`);
  if (h.size > maxPayload)
    return einval(`${what}: payload of ${h.size} bytes exceeds the maximum ${maxPayload}`);
  return null;
}

/** One message: header + `payloadSize` bytes, returned with a DataView over the payload. */
export function frame(
  request: number,
  flags: number,
  payloadSize: number,
): { msg: Uint8Array; p: DataView } {
  const msg = new Uint8Array(HEADER_SIZE + payloadSize);
  writeHeader(msg, { request, flags, size: payloadSize });
  return { msg, p: new DataView(msg.buffer, HEADER_SIZE, payloadSize) };
}
