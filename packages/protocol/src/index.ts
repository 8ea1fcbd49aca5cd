export * from './constants.js';
export { ProtocolError, einval, errnoName, isProtocolError } from './errors.js';
export { Bytes } from './bytes.js';
export { type Header, decodeHeader, writeHeader, checkHeader, encodeErrorReply, frame, isReply, wantsReply, isErrorReply } from './header.js';
export { type Capabilities, type Version, decodeVersion, encodeVersion, capabilitiesJson } from './version.js';
export * from './messages.js';
export * from './feature.js';
export * from './bitmap.js';
export { describeMessage } from './describe.js';
