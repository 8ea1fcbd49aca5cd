// What a virtio device model gives the vhost-user back-end: the same parts a model declares for
// the virtio PCI transport (@vfu/virtio), already bound to its options and resources
// (virtioModel() makes one from a declaration).

import type { VirtioRequest } from '@vfu/virtio';

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
