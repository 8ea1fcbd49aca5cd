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
// What a virtio device model needs from the kit, so that it imports from this package alone.
export {
  DeviceSetupError,
  parseSize,
  type DeviceContext,
  type Options,
} from '@vfu/pci';
