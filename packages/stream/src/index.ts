export * from './schema.js';
export {
  MAGIC,
  FORMAT_VERSION,
  Rec,
  record,
  headerPayload,
  memoryRecord,
  memoryCheck,
  MEMORY_HEAD,
  MAX_RECORD_PAYLOAD,
  RECORD_OVERHEAD,
  parseHeader,
  type StreamHeader,
} from './format.js';
export type { DeviceImage } from './image.js';
export { SaveSession, PAGE, newShadow, type Shadow } from './save.js';
export { LoadSession, StreamError } from './load.js';
export { RecordFramer, RecordError, type MemoryRecordSink } from './records.js';
export { V1SaveIteration } from './v1-iteration.js';
export { identityMismatch, parseIdentity, sizeText, type DeviceIdentity } from './identity.js';
