// Decoding a front-end message: every payload size and fd count checked against the layout of
// its request ("Payload", "Front-end message types"); semantic checks (indices against the
// device's queues, addresses against the memory table) are the back-end session's.
import { E } from '@vfu/native';
import {
  CONFIG_HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  Request,
  VRING_INDEX_MASK,
  VRING_NOFD,
  requestName,
} from './constants.js';
import { VhostUserError, einval } from './errors.js';
import type { Header } from './header.js';
import type { FrontendMessage, MemRegion, VringAddr, VringFile, VringState } from './types.js';

const SAFE = 2 ** 53;
/** The size in bytes of the fixed payloads ("Payload"). */
export const PayloadSize = {
  U64: 8,
  STATE: 8,
  ADDR: 40,
  REGION: 32,
  SINGLE_REGION: 40,
  LOG: 16,
  /** The inflight description as QEMU lays it out: 2 u64 + 2 u16, padded to 8. */
  INFLIGHT: 24,
} as const;

class Reader {
  readonly v: DataView;
  constructor(readonly p: Uint8Array) {
    this.v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  }
  u16(o: number): number {
    return this.v.getUint16(o, true);
  }
  u32(o: number): number {
    return this.v.getUint32(o, true);
  }
  u64big(o: number): bigint {
    return this.v.getBigUint64(o, true);
  }
  /** A u64 that must be exact as a number (an address or a size). */
  u64(o: number, what: string): number {
    const hi = this.v.getUint32(o + 4, true);
    if (hi >= 2 ** 21) throw einval(`${what} 0x${this.u64big(o).toString(16)} is above 2^53`);
    return hi * 2 ** 32 + this.v.getUint32(o, true);
  }
}

const what = (h: Header) => requestName(h.request);

function expectSize(h: Header, n: number): void {
  if (h.size !== n) throw einval(`${what(h)}: payload of ${h.size} bytes, expected ${n}`);
}
function expectFds(h: Header, have: number, min: number, max = min): void {
  if (have < min || have > max) {
    const want = min === max ? `${min}` : `${min}-${max}`;
    throw einval(`${what(h)}: ${have} file descriptors, expected ${want}`);
  }
}

const state = (r: Reader): VringState => ({ index: r.u32(0), num: r.u32(4) });

function region(r: Reader, o: number, h: Header): MemRegion {
  const m: MemRegion = {
    guestAddress: r.u64(o, 'guest address'),
    size: r.u64(o + 8, 'region size'),
    userAddress: r.u64(o + 16, 'user address'),
    mmapOffset: r.u64(o + 24, 'mmap offset'),
  };
  if (m.size === 0) throw einval(`${what(h)}: memory region of size 0`);
  if (m.guestAddress + m.size > SAFE || m.userAddress + m.size > SAFE)
    throw einval(`${what(h)}: memory region ends above 2^53`);
  return m;
}

function vringFile(r: Reader, h: Header, fdCount: number): VringFile {
  const v = r.u64big(0);
  if (v & ~BigInt(VRING_INDEX_MASK | VRING_NOFD))
    throw einval(`${what(h)}: reserved bits set in 0x${v.toString(16)}`);
  const file = { index: Number(v) & VRING_INDEX_MASK, noFd: (Number(v) & VRING_NOFD) !== 0 };
  expectFds(h, fdCount, file.noFd ? 0 : 1);
  return file;
}

function addr(r: Reader): VringAddr {
  return {
    index: r.u32(0),
    flags: r.u32(4),
    desc: r.u64(8, 'descriptor table address'),
    used: r.u64(16, 'used ring address'),
    avail: r.u64(24, 'available ring address'),
    log: r.u64(32, 'log address'),
  };
}

function config(r: Reader, h: Header) {
  if (h.size < CONFIG_HEADER_SIZE)
    throw einval(`${what(h)}: payload of ${h.size} bytes, less than the 12-byte config header`);
  const c = { offset: r.u32(0), size: r.u32(4), flags: r.u32(8) };
  if (c.size > MAX_CONFIG_SIZE || c.offset > MAX_CONFIG_SIZE - c.size)
    throw einval(`${what(h)}: config [${c.offset}, +${c.size}) outside ${MAX_CONFIG_SIZE} bytes`);
  expectSize(h, CONFIG_HEADER_SIZE + c.size);
  return { ...c, data: r.p.subarray(CONFIG_HEADER_SIZE, CONFIG_HEADER_SIZE + c.size) };
}

function memTable(r: Reader, h: Header, fdCount: number): MemRegion[] {
  if (h.size < 8) throw einval(`${what(h)}: payload of ${h.size} bytes, need at least 8`);
  const n = r.u32(0);
  if (n === 0 || n > MAX_MEM_TABLE_REGIONS)
    throw einval(`${what(h)}: ${n} regions, expected 1-${MAX_MEM_TABLE_REGIONS}`);
  // QEMU sends exactly the regions it names; the full 8-region table is accepted too.
  const exact = 8 + PayloadSize.REGION * n;
  const full = 8 + PayloadSize.REGION * MAX_MEM_TABLE_REGIONS;
  if (h.size !== exact && h.size !== full)
    throw einval(`${what(h)}: payload of ${h.size} bytes for ${n} regions, expected ${exact}`);
  expectFds(h, fdCount, n);
  const regions: MemRegion[] = [];
  for (let i = 0; i < n; i++) regions.push(region(r, 8 + PayloadSize.REGION * i, h));
  return regions;
}

/** A front-end message from its header, payload and the number of fds that came with it. */
export function decodeMessage(
  h: Header,
  payload: Uint8Array,
  fdCount: number,
): FrontendMessage | VhostUserError {
  if (payload.length !== h.size)
    return einval(`${what(h)}: ${payload.length} payload bytes, the header says ${h.size}`);
  try {
    return decode(h, new Reader(payload), fdCount);
  } catch (e) {
    if (e instanceof VhostUserError) return e;
    throw e;
  }
}

function decode(h: Header, r: Reader, fdCount: number): FrontendMessage {
  const request = h.request;
  switch (request) {
    case Request.GET_FEATURES:
    case Request.GET_PROTOCOL_FEATURES:
    case Request.SET_OWNER:
    case Request.RESET_OWNER:
    case Request.RESET_DEVICE:
    case Request.GET_QUEUE_NUM:
    case Request.GET_MAX_MEM_SLOTS:
    case Request.GET_STATUS:
      expectSize(h, 0);
      expectFds(h, fdCount, 0);
      return { request };
    case Request.SET_LOG_FD:
    case Request.SET_BACKEND_REQ_FD:
      expectSize(h, 0);
      expectFds(h, fdCount, 1);
      return { request };
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
      expectSize(h, PayloadSize.U64);
      expectFds(h, fdCount, 0);
      return { request, features: r.u64big(0) };
    case Request.SET_STATUS: {
      expectSize(h, PayloadSize.U64);
      expectFds(h, fdCount, 0);
      const status = r.u64big(0);
      if (status > 0xffn) throw einval(`SET_STATUS: status 0x${status.toString(16)} above 8 bits`);
      return { request, status: Number(status) };
    }
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
    case Request.VRING_KICK:
      expectSize(h, PayloadSize.STATE);
      expectFds(h, fdCount, 0);
      return { request, state: state(r) };
    case Request.SET_VRING_ADDR:
      expectSize(h, PayloadSize.ADDR);
      expectFds(h, fdCount, 0);
      return { request, addr: addr(r) };
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
      expectSize(h, PayloadSize.U64);
      return { request, file: vringFile(r, h, fdCount) };
    case Request.SET_MEM_TABLE:
      return { request, regions: memTable(r, h, fdCount) };
    case Request.ADD_MEM_REG:
      expectSize(h, PayloadSize.SINGLE_REGION);
      expectFds(h, fdCount, 1);
      return { request, region: region(r, 8, h) };
    case Request.REM_MEM_REG:
      // "Single memory region description": the back-end MAY accept (and must close) one fd.
      expectSize(h, PayloadSize.SINGLE_REGION);
      expectFds(h, fdCount, 0, 1);
      return { request, region: region(r, 8, h) };
    case Request.SET_LOG_BASE:
      expectSize(h, PayloadSize.LOG);
      expectFds(h, fdCount, 1);
      return { request, log: { size: r.u64(0, 'log size'), offset: r.u64(8, 'log offset') } };
    case Request.GET_CONFIG:
    case Request.SET_CONFIG:
      expectFds(h, fdCount, 0);
      return { request, config: config(r, h) };
    case Request.GET_INFLIGHT_FD:
    case Request.SET_INFLIGHT_FD: {
      expectSize(h, PayloadSize.INFLIGHT);
      expectFds(h, fdCount, request === Request.SET_INFLIGHT_FD ? 1 : 0);
      const inflight = {
        mmapSize: r.u64(0, 'inflight size'),
        mmapOffset: r.u64(8, 'inflight offset'),
        numQueues: r.u16(16),
        queueSize: r.u16(18),
      };
      return { request, inflight };
    }
    default:
      throw new VhostUserError(E.ENOSYS, `${what(h)} is not supported by this back-end`);
  }
}
