export * from './constants.js';
export { ProtocolError, einval, errnoName } from './errors.js';
export { Bytes } from './bytes.js';
export {
  type Header,
  decodeHeader,
  writeHeader,
  checkHeader,
  encodeErrorReply,
  frame,
  isReply,
} from './header.js';
export {
  type Capabilities,
  type Version,
  decodeVersion,
  encodeVersion,
  capabilitiesJson,
} from './version.js';
export * from './types.js';
export { decodeRequest, defaultLimits, type DecodeLimits } from './decode.js';
export { encode } from './encode.js';
export { encodeRegionCaps, decodeRegionCaps } from './region-caps.js';
export { dma, type DmaLayout } from './dma.js';
export { decodeReply } from './replies.js';
export * from './feature.js';
export * from './bitmap.js';
export { describeMessage } from './describe.js';
export * as Layout from './layout.js';
export type { Field } from './layout.js';
