export * from './schema.js';
export {
  MAGIC,
  FORMAT_VERSION,
  Rec,
  record,
  headerPayload,
  memoryRecord,
  MAX_RECORD_PAYLOAD,
  RECORD_OVERHEAD,
  parseHeader,
  type StreamHeader,
} from './format.js';
export type { DeviceImage } from './image.js';
export { SaveSession, PAGE } from './save.js';
export { LoadSession, StreamError } from './load.js';
export { RecordFramer, RecordError } from './records.js';
export { V1SaveIteration } from './v1-iteration.js';
export { identityMismatch, parseIdentity, sizeText, type DeviceIdentity } from './identity.js';
