// What a virtio device model declares, and the transport state the kit adds to its own.
import type { DeviceContext, DeviceDefinition, Options } from '@vfu/pci';
import { bytes, u8, u16, u32, type Schema } from '@vfu/stream';

/** Queues a device can have, and the largest queue size it offers (fixed: the state holds them). */
export const MAX_QUEUES = 16;
export const MAX_DEVICE_QUEUE_SIZE = 256;

/** One queue's record in the state: registers, indices, and a bitmap of heads in flight. */
export const QREC = 40 + MAX_DEVICE_QUEUE_SIZE / 8;
export const Q = {
  SIZE: 0,
  VECTOR: 2,
  ENABLED: 4,
  LAST_AVAIL: 6,
  DESC: 8,
  DRIVER: 16,
  DEVICE: 24,
  USED: 32,
  INFLIGHT: 40,
} as const;

/** The transport's state (virtio 1.2 §4.1.4.3 registers and each queue's progress): migrated. */
export const virtioState = {
  virtioStatus: u8,
  virtioIsr: u8,
  virtioDeviceFeatureSelect: u32,
  virtioDriverFeatureSelect: u32,
  virtioDriverFeaturesLo: u32,
  virtioDriverFeaturesHi: u32,
  virtioConfigVector: u16,
  virtioQueueSelect: u16,
  virtioQueues: bytes(MAX_QUEUES * QREC),
} satisfies Schema;
export type VirtioSchema = typeof virtioState;

/** A request as the model sees it: the bytes the driver gave, and room for the answer. */
export interface VirtioRequest {
  queue: number;
  /** The chain's device-readable buffers, copied out in order. */
  data: Uint8Array;
  /** Bytes of device-writable buffers: the most the answer may hold. */
  writable: number;
}

export interface VirtioDeviceDefinition<S extends Schema, B> {
  id: string;
  version: number;
  description: string;
  /** Virtio device id (virtio 1.2 §5: 2 = block); the PCI device id is 0x1040 + this. */
  virtioId: number;
  classCode: number;
  options?: DeviceDefinition['options'];
  /** The model's own migrated state (the transport's is added). */
  state?: S;
  /** Per-device resources made from the options (a disk file...), handed to the other hooks. */
  backend(o: Options): B;
  /** Device-specific feature bits offered (the kit adds VERSION_1, EVENT_IDX, INDIRECT_DESC). */
  features(o: Options, b: B): number[];
  /** Size of the device configuration structure (virtio 1.2 §4.1.4.6). */
  configSize: number;
  /** Its bytes (read-only to the driver). */
  config(o: Options, b: B): Uint8Array;
  /** Number of queues and their largest size (a power of two up to 256). */
  queues(o: Options): { count: number; size: number };
  /** What the outside world can do to the device (tests, demos), as the kit's `controls`. */
  controls?: Record<string, (b: B, value: number) => void>;
  /** Serves one request; resolves with what goes into its device-writable buffers. */
  handle(req: VirtioRequest, b: B, dev: DeviceContext<S & VirtioSchema>): Promise<Uint8Array>;
}
