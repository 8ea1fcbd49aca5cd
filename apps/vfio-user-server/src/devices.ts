import type { DeviceDefinition } from '@vfu/pci';
import edu from '@vfu/device-edu';
import gpio from '@vfu/device-gpio-idio16';
import template from '@vfu/device-template';

/** Device models this server can emulate, by --device name. */
export const devices: Record<string, DeviceDefinition<any>> = { edu, 'gpio-idio16': gpio, template };
export const defaultDevice = 'edu';
