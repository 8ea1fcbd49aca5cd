export { defineVirtioDevice } from './define.js';
export {
  SplitQueue,
  VirtqueueError,
  layoutProblem,
  areaSizes,
  type GuestView,
  type Chain,
  type Segment,
  type QueueLayout,
  type QueueFeatures,
} from './virtqueue.js';
export { DriverQueue, type DriverBuffer, type DriverRam } from './driver-queue.js';
export { Layout } from './transport.js';
export {
  MAX_QUEUES,
  MAX_DEVICE_QUEUE_SIZE,
  Q,
  QREC,
  virtioState,
  type VirtioDeviceDefinition,
  type VirtioRequest,
  type VirtioSchema,
} from './types.js';
export * from './constants.js';
