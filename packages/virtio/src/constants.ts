// Numbers from the virtio 1.2 specification, by section.

/** Device status bits (virtio 1.2 §2.1). */
export const Status = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Reserved (device-independent) feature bits (virtio 1.2 §6). */
export const Feature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

/** Split virtqueue descriptor flags (virtio 1.2 §2.7.5). */
export const Desc = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
/** virtq_avail.flags (§2.7.6) and virtq_used.flags (§2.7.8). */
export const AVAIL_F_NO_INTERRUPT = 1;

/** Vendor capability cfg_type values (virtio 1.2 §4.1.4). */
export const CapType = { COMMON: 1, NOTIFY: 2, ISR: 3, DEVICE: 4 } as const;

/** "No vector" for config_msix_vector and queue_msix_vector (virtio 1.2 §4.1.5.1.2). */
export const NO_VECTOR = 0xffff;

/** Offsets in the common configuration structure (virtio 1.2 §4.1.4.3). */
export const Common = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC: 0x20,
  QUEUE_DRIVER: 0x28,
  QUEUE_DEVICE: 0x30,
  QUEUE_NOTIFY_DATA: 0x38,
  QUEUE_RESET: 0x3a,
  SIZE: 0x3c,
} as const;

/** PCI vendor of virtio devices; modern device ids are 0x1040 + the virtio device id (§4.1.2). */
export const VIRTIO_PCI_VENDOR = 0x1af4;
export const MODERN_DEVICE_BASE = 0x1040;
