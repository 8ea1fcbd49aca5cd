// Which requests are answered, and reading the answers (the front-end's side).
import { CONFIG_HEADER_SIZE, Request, requestName } from './constants.js';
import { einval, type VhostUserError } from './errors.js';
import { type Header, isReply } from './header.js';
import type { VringState } from './types.js';

/**
 * Requests answered whatever the flags ("Communication"). SET_LOG_BASE is answered because
 * this back-end always speaks LOG_SHMFD; the others get a REPLY_ACK only with NEED_REPLY.
 */
const ANSWERED = new Set<number>([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_VRING_BASE,
  Request.SET_LOG_BASE,
  Request.GET_INFLIGHT_FD,
  Request.GET_CONFIG,
  Request.GET_QUEUE_NUM,
  Request.GET_MAX_MEM_SLOTS,
  Request.GET_STATUS,
]);
export const hasReplyBody = (request: number) => ANSWERED.has(request);

function check(h: Header, request: number, size: number): VhostUserError | null {
  if (!isReply(h)) return einval(`expected a reply to ${requestName(request)}, got a request`);
  if (h.request !== request)
    return einval(`reply to ${requestName(h.request)} while waiting for ${requestName(request)}`);
  if (h.size !== size)
    return einval(`${requestName(request)} reply of ${h.size} bytes, expected ${size}`);
  return null;
}

export const decodeReply = {
  u64(h: Header, payload: Uint8Array, request: number): bigint | VhostUserError {
    const e = check(h, request, 8);
    if (e) return e;
    return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
  },
  state(h: Header, payload: Uint8Array, request: number): VringState | VhostUserError {
    const e = check(h, request, 8);
    if (e) return e;
    const v = new DataView(payload.buffer, payload.byteOffset, 8);
    return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
  },
  config(h: Header, payload: Uint8Array, size: number): Uint8Array | VhostUserError {
    const e = check(h, Request.GET_CONFIG, CONFIG_HEADER_SIZE + size);
    if (e) return e;
    return payload.subarray(CONFIG_HEADER_SIZE);
  },
};
