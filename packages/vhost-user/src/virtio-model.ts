// A virtio model declared for @vfu/virtio's PCI transport, bound to its options and served over
// vhost-user unchanged: the same features, configuration structure, queues and request handler.
import { DeviceSetupError, type DeviceContext, type Options } from '@vfu/pci';
import type { VhostUserDevice } from './device.js';
import type { VirtioDeviceDefinition } from '@vfu/virtio';
import type { Schema } from '@vfu/stream';

/** The model's options: its declared defaults, overridden by those given. */
function withDefaults(def: { options?: Record<string, { default: string }> }, given: Options) {
  const o: Options = {};
  for (const [k, v] of Object.entries(def.options ?? {})) o[k] = v.default;
  for (const [k, v] of Object.entries(given)) {
    if (!(k in o)) throw new DeviceSetupError(`--${k} is not an option of this device`);
    o[k] = v;
  }
  return o;
}

/**
 * A `@vfu/virtio` declaration (`defineVirtioDevice`'s argument) as a vhost-user device: its
 * backend made from `given` options (with the declared defaults), then its features, config
 * structure, queues and handler as they are.
 */
export function virtioModel<S extends Schema, B>(
  def: VirtioDeviceDefinition<S, B>,
  given: Options,
  log: (m: string) => void,
): VhostUserDevice & { backend: B } {
  const o = withDefaults(def, given);
  const backend = def.backend(o);
  // The handler's device context: over vhost-user there is no PCI function, state or DMA;
  // the models' handlers use the request and their backend (and may log). I/O starts at once:
  // a vring is stopped by GET_VRING_BASE, which waits for every request under way.
  const io: DeviceContext<never>['io'] = start => start();
  const context = { log, running: true, io } as unknown as DeviceContext<never>;
  return {
    backend,
    features: def.features(o, backend),
    queues: def.queues(o),
    config: () => def.config(o, backend),
    handle: req => def.handle(req, backend, context as never),
  };
}
