// What a virtio device model gives the vhost-user back-end: the same parts a model declares for
// the virtio PCI transport (@vfu/virtio), already bound to its options and resources.

/** A request as the model sees it: the bytes the driver gave, and room for the answer. */
export interface VirtioRequest {
  queue: number;
  /** The chain's device-readable buffers, copied out in order. */
  data: Uint8Array;
  /** Bytes of device-writable buffers: the most the answer may hold. */
  writable: number;
}

export interface VhostUserDevice {
  /** Device-specific feature bits (the back-end adds VERSION_1, EVENT_IDX, INDIRECT_DESC). */
  features: number[];
  /** Number of queues and their largest size (a power of two). */
  queues: { count: number; size: number };
  /** The device configuration structure's bytes (virtio 1.2 §4.1.4.6). */
  config(): Uint8Array;
  /**
   * A driver's write to a writable configuration field; returns false when the field is
   * read-only. Without it, the whole structure is read-only.
   */
  writeConfig?(offset: number, data: Uint8Array): boolean;
  /** Serves one request; resolves with what goes into its device-writable buffers. */
  handle(req: VirtioRequest): Promise<Uint8Array>;
}

/** Device-independent feature bits the back-end offers (virtio 1.2 §6). */
export const TransportFeature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
} as const;
