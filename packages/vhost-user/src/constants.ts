// Numbers of the vhost-user protocol (QEMU's docs/interop/vhost-user.rst), by section.

/** Header: request u32, flags u32, size u32 (section "Header"). */
export const HEADER_SIZE = 12;

/** Header flag bits (section "Header"): version in bits 0-1, then REPLY and NEED_REPLY. */
export const Flag = {
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Front-end message types (section "Front-end message types"). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;
export type RequestType = (typeof Request)[keyof typeof Request];

const requestNames = new Map<number, string>(Object.entries(Request).map(([k, v]) => [v, k]));
export const requestName = (r: number): string => requestNames.get(r) ?? `request ${r}`;

/** Protocol feature bits (section "Protocol features"). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Feature bits vhost-user adds to the virtio ones (sections "Communication", "Migration"). */
export const VhostFeature = {
  /** Reused reserved bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
  PROTOCOL_FEATURES: 30,
  /** The back-end logs its writes to guest memory while this is acked. */
  LOG_ALL: 26,
} as const;

/** vring address flags: log used-ring writes at log_guest_addr (section "Migration"). */
export const VRING_F_LOG = 1;
/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 the index, bit 8 "no fd" (polling). */
export const VRING_INDEX_MASK = 0xff;
export const VRING_NOFD = 0x100;
/** Dirty log granularity (section "Migration"). */
export const LOG_PAGE = 0x1000;
/** Regions in one SET_MEM_TABLE (section "Memory regions description"). */
export const MAX_MEM_TABLE_REGIONS = 8;
/** The config space header (offset, size, flags) and its largest payload. */
export const CONFIG_HEADER_SIZE = 12;
export const MAX_CONFIG_SIZE = 256;
/** SET_CONFIG flags (section "Virtio device config space"). */
export const ConfigFlag = { WRITABLE: 0, MIGRATION: 1 } as const;
/** Largest payload this codec accepts: the largest message QEMU sends is SET_CONFIG. */
export const MAX_PAYLOAD_SIZE = 4096;
