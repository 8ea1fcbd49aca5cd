import { virtioBlk } from '@vfu/device-virtio-blk';
import type { VirtioDeviceDefinition } from '@vfu/virtio';

/** Virtio models this back-end serves, by --device name (the same declarations as over PCI). */
// Each model's definition is typed by its own state and backend; the table needs the common shape.
// biome-ignore lint/suspicious/noExplicitAny: the models' types differ (contravariance)
export const devices: Record<string, VirtioDeviceDefinition<any, any>> = {
  'virtio-blk': virtioBlk,
};
export const defaultDevice = 'virtio-blk';
