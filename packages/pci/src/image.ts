// A device model as the migration stream sees it (the server's save and load sessions and the
// test harness use the same view).
import {
  encodeState,
  decodeState,
  assignState,
  schemaSignature,
  type DeviceImage,
  type Schema,
} from '@vfu/stream';
import type { PciDevice } from './device.js';

/** The stream's view of a device: identity, declared state, config space and memories. */
export function deviceImage<S extends Schema>(dev: PciDevice<S>): DeviceImage {
  const schema = dev.def.state;
  return {
    deviceId: dev.def.id,
    deviceVersion: dev.def.version,
    schema: schemaSignature(schema),
    saveState: () => encodeState(schema, dev.state),
    checkState: b => {
      const s = decodeState(schema, b);
      return typeof s === 'string' ? s : null;
    },
    loadState: b => {
      assignState(schema, dev.state, decodeState(schema, b) as never);
      dev.def.afterLoad?.(dev.context);
    },
    saveConfig: () => dev.config.snapshot(),
    configSize: dev.config.size,
    loadConfig: b => dev.config.restore(b),
    memories: [...dev.memories.entries()].map(([name, m]) => ({
      name,
      size: m.size,
      bytes: m.bytes,
    })),
  };
}
