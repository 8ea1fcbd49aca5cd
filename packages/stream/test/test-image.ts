// A device image over plain arrays for the stream tests: a state of `schema`, 256 bytes of
// config space and one memory named "mem".
import {
  assignState,
  createState,
  decodeState,
  encodeState,
  schemaSignature,
  type DeviceIdentity,
  type DeviceImage,
  type Schema,
} from '@vfu/stream';

export interface TestImageOptions {
  id?: string;
  version?: number;
  memSize?: number;
  identity?: DeviceIdentity;
}

export function testImage<S extends Schema>(schema: S, o: TestImageOptions = {}) {
  const state = createState(schema);
  const config = new Uint8Array(256);
  const memSize = o.memSize ?? 64 * 1024;
  const mem = new Uint8Array(memSize);
  const img: DeviceImage = {
    deviceId: o.id ?? 'dev',
    deviceVersion: o.version ?? 1,
    schema: schemaSignature(schema),
    identity: o.identity,
    saveState: () => encodeState(schema, state),
    checkState: b => {
      const s = decodeState(schema, b);
      return typeof s === 'string' ? s : null;
    },
    loadState: b => assignState(schema, state, decodeState(schema, b) as never),
    saveConfig: () => config.slice(),
    configSize: 256,
    loadConfig: b => config.set(b),
    memories: [{ name: 'mem', size: memSize, bytes: (off, n) => mem.subarray(off, off + n) }],
  };
  return { img, state, config, mem };
}
