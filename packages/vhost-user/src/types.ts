// The typed payloads of the front-end messages ("Payload" in vhost-user.rst).
import type { Request } from './constants.js';

/** A vring state description: index and a number (size, base, enable). */
export interface VringState {
  index: number;
  num: number;
}

/** A vring address description. Ring addresses are front-end user addresses (no IOMMU). */
export interface VringAddr {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  /** Guest physical address where writes to the used ring are logged (VRING_F_LOG). */
  log: number;
}

/** A memory region: guest physical range, front-end user address, offset in its fd. */
export interface MemRegion {
  guestAddress: number;
  size: number;
  userAddress: number;
  mmapOffset: number;
}

/** The payload of SET_VRING_KICK/CALL/ERR: an index and whether an fd came with it. */
export interface VringFile {
  index: number;
  /** Bit 8: no fd, the other side polls. */
  noFd: boolean;
}

export interface LogArea {
  size: number;
  offset: number;
}

export interface ConfigSpace {
  offset: number;
  size: number;
  flags: number;
  /** `size` bytes (a view into the payload). */
  data: Uint8Array;
}

export interface Inflight {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}

type R = typeof Request;
export type FrontendMessage =
  | { request: R['GET_FEATURES'] }
  | { request: R['SET_FEATURES']; features: bigint }
  | { request: R['GET_PROTOCOL_FEATURES'] }
  | { request: R['SET_PROTOCOL_FEATURES']; features: bigint }
  | { request: R['SET_OWNER'] }
  | { request: R['RESET_OWNER'] }
  | { request: R['RESET_DEVICE'] }
  | { request: R['SET_MEM_TABLE']; regions: MemRegion[] }
  | { request: R['ADD_MEM_REG']; region: MemRegion }
  | { request: R['REM_MEM_REG']; region: MemRegion }
  | { request: R['GET_MAX_MEM_SLOTS'] }
  | { request: R['SET_LOG_BASE']; log: LogArea }
  | { request: R['SET_LOG_FD'] }
  | { request: R['SET_VRING_NUM']; state: VringState }
  | { request: R['SET_VRING_ADDR']; addr: VringAddr }
  | { request: R['SET_VRING_BASE']; state: VringState }
  | { request: R['GET_VRING_BASE']; state: VringState }
  | { request: R['SET_VRING_ENABLE']; state: VringState }
  | { request: R['VRING_KICK']; state: VringState }
  | { request: R['SET_VRING_KICK']; file: VringFile }
  | { request: R['SET_VRING_CALL']; file: VringFile }
  | { request: R['SET_VRING_ERR']; file: VringFile }
  | { request: R['GET_QUEUE_NUM'] }
  | { request: R['GET_CONFIG']; config: ConfigSpace }
  | { request: R['SET_CONFIG']; config: ConfigSpace }
  | { request: R['SET_STATUS']; status: number }
  | { request: R['GET_STATUS'] }
  | { request: R['GET_INFLIGHT_FD']; inflight: Inflight }
  | { request: R['SET_INFLIGHT_FD']; inflight: Inflight }
  | { request: R['SET_BACKEND_REQ_FD'] };
