import type { DeviceDefinition } from '@vfu/pci';
import edu from '@vfu/device-edu';
import gpio from '@vfu/device-gpio-idio16';
import template from '@vfu/device-template';
import virtioBlk from '@vfu/device-virtio-blk';

/** Device models this server can emulate, by --device name. */
// Each model's definition is typed by its own state schema; the table only needs the common shape.
// biome-ignore lint/suspicious/noExplicitAny: the schemas differ per model (contravariance)
export const devices: Record<string, DeviceDefinition<any>> = {
  edu,
  'gpio-idio16': gpio,
  template,
  'virtio-blk': virtioBlk,
};
export const defaultDevice = 'edu';
