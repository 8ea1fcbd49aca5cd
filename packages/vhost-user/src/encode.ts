// Encoding both directions: the front-end's messages (for a front-end, and for tests acting as
// one) and the back-end's replies ("Communication", "REPLY_ACK").
import { CONFIG_HEADER_SIZE, Flag, Request, VRING_NOFD } from './constants.js';
import { PayloadSize } from './decode.js';
import { frame } from './header.js';
import type { ConfigSpace, FrontendMessage, Inflight, MemRegion, VringState } from './types.js';

const setU64 = (p: DataView, o: number, v: number | bigint) => p.setBigUint64(o, BigInt(v), true);

function putRegion(p: DataView, o: number, m: MemRegion): void {
  setU64(p, o, m.guestAddress);
  setU64(p, o + 8, m.size);
  setU64(p, o + 16, m.userAddress);
  setU64(p, o + 24, m.mmapOffset);
}
function putState(p: DataView, s: VringState): void {
  p.setUint32(0, s.index, true);
  p.setUint32(4, s.num, true);
}
function putConfig(msg: Uint8Array, p: DataView, c: Omit<ConfigSpace, 'data'>, data?: Uint8Array) {
  p.setUint32(0, c.offset, true);
  p.setUint32(4, c.size, true);
  p.setUint32(8, c.flags, true);
  if (data) msg.set(data.subarray(0, c.size), 12 + CONFIG_HEADER_SIZE);
}
function putInflight(p: DataView, i: Inflight): void {
  setU64(p, 0, i.mmapSize);
  setU64(p, 8, i.mmapOffset);
  p.setUint16(16, i.numQueues, true);
  p.setUint16(18, i.queueSize, true);
}

const payloadSize = (m: FrontendMessage): number => {
  switch (m.request) {
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
    case Request.SET_STATUS:
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
      return PayloadSize.U64;
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
    case Request.VRING_KICK:
      return PayloadSize.STATE;
    case Request.SET_VRING_ADDR:
      return PayloadSize.ADDR;
    case Request.SET_MEM_TABLE:
      return 8 + PayloadSize.REGION * m.regions.length;
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG:
      return PayloadSize.SINGLE_REGION;
    case Request.SET_LOG_BASE:
      return PayloadSize.LOG;
    case Request.GET_CONFIG:
    case Request.SET_CONFIG:
      return CONFIG_HEADER_SIZE + m.config.size;
    case Request.GET_INFLIGHT_FD:
    case Request.SET_INFLIGHT_FD:
      return PayloadSize.INFLIGHT;
    default:
      return 0;
  }
};

/**
 * A front-end message as QEMU lays it out (payload sizes exact). The fds travel beside it:
 * the caller sends them with the message's bytes.
 */
export function encodeMessage(m: FrontendMessage, needReply = false): Uint8Array {
  const flags = Flag.VERSION | (needReply ? Flag.NEED_REPLY : 0);
  const { msg, p } = frame(m.request, flags, payloadSize(m));
  switch (m.request) {
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
      setU64(p, 0, m.features);
      break;
    case Request.SET_STATUS:
      setU64(p, 0, m.status);
      break;
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
      setU64(p, 0, m.file.index | (m.file.noFd ? VRING_NOFD : 0));
      break;
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
    case Request.VRING_KICK:
      putState(p, m.state);
      break;
    case Request.SET_VRING_ADDR: {
      const a = m.addr;
      p.setUint32(0, a.index, true);
      p.setUint32(4, a.flags, true);
      setU64(p, 8, a.desc);
      setU64(p, 16, a.used);
      setU64(p, 24, a.avail);
      setU64(p, 32, a.log);
      break;
    }
    case Request.SET_MEM_TABLE:
      p.setUint32(0, m.regions.length, true);
      m.regions.forEach((r, i) => putRegion(p, 8 + PayloadSize.REGION * i, r));
      break;
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG:
      putRegion(p, 8, m.region);
      break;
    case Request.SET_LOG_BASE:
      setU64(p, 0, m.log.size);
      setU64(p, 8, m.log.offset);
      break;
    case Request.GET_CONFIG:
      putConfig(msg, p, m.config);
      break;
    case Request.SET_CONFIG:
      putConfig(msg, p, m.config, m.config.data);
      break;
    case Request.GET_INFLIGHT_FD:
    case Request.SET_INFLIGHT_FD:
      putInflight(p, m.inflight);
      break;
  }
  return msg;
}

const REPLY = Flag.VERSION | Flag.REPLY;

/** The back-end's replies, each echoing the request type. */
export const reply = {
  /** GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_STATUS. */
  u64(request: number, v: number | bigint): Uint8Array {
    const { msg, p } = frame(request, REPLY, PayloadSize.U64);
    setU64(p, 0, v);
    return msg;
  },
  /** REPLY_ACK: zero on success, non-zero (an errno here) on failure. */
  ack(request: number, errno: number): Uint8Array {
    return reply.u64(request, errno);
  },
  /** GET_VRING_BASE. */
  state(request: number, s: VringState): Uint8Array {
    const { msg, p } = frame(request, REPLY, PayloadSize.STATE);
    putState(p, s);
    return msg;
  },
  /** GET_CONFIG: the request's offset, size and flags with `data` (size bytes). */
  config(c: Omit<ConfigSpace, 'data'>, data: Uint8Array): Uint8Array {
    const { msg, p } = frame(Request.GET_CONFIG, REPLY, CONFIG_HEADER_SIZE + c.size);
    putConfig(msg, p, c, data);
    return msg;
  },
  /** GET_INFLIGHT_FD (its fd travels beside it). */
  inflight(i: Inflight): Uint8Array {
    const { msg, p } = frame(Request.GET_INFLIGHT_FD, REPLY, PayloadSize.INFLIGHT);
    putInflight(p, i);
    return msg;
  },
  /**
   * The failure answer of a request whose reply has a body: the header alone. A front-end
   * checks the reply's size, and GET_CONFIG names "zero length of payload" as its error.
   */
  empty(request: number): Uint8Array {
    return frame(request, REPLY, 0).msg;
  },
};
