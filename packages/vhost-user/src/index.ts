export * from './constants.js';
export { VhostUserError, einval } from './errors.js';
export {
  type Header,
  decodeHeader,
  writeHeader,
  checkHeader,
  needsReply,
  isReply,
  frame,
} from './header.js';
export * from './types.js';
export { decodeMessage, PayloadSize } from './decode.js';
export { encodeMessage, reply } from './encode.js';
export { decodeReply, hasReplyBody } from './replies.js';
export { VhostConnection, type Incoming, type ConnectionOptions } from './connection.js';
export { BackendSession, BACKEND_PROTOCOL_FEATURES, type BackendOptions } from './backend.js';
export type { VhostUserDevice } from './device.js';
export { virtioModel } from './virtio-model.js';
export { MemoryTable } from './memory.js';
export { DirtyLog } from './log.js';
export { Frontend, type Reply } from './frontend.js';
export { VhostUserServer, type ServerOptions } from './server.js';
