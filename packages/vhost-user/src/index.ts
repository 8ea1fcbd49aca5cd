export * from './constants.js';
export { VhostUserError, einval, errnoName } from './errors.js';
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
