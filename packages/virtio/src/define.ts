// defineVirtioDevice: a virtio model declares its device configuration, its queues and a request
// handler; the kit makes the PCI device (virtio 1.2 §4.1): identity, vendor capabilities, MSI-X
// (one vector per queue plus one for configuration changes), BAR 0 and the migrated state.
import {
  bar,
  defineDevice,
  DeviceSetupError,
  msix,
  vendorSpecific,
  type Capability,
  type DeviceContext,
  type DeviceDefinition,
} from '@vfu/pci';
import type { Schema } from '@vfu/stream';
import { CapType, MODERN_DEVICE_BASE, VIRTIO_PCI_VENDOR } from './constants.js';
import { Layout, VirtioPci } from './transport.js';
import {
  MAX_DEVICE_QUEUE_SIZE,
  MAX_QUEUES,
  virtioState,
  type VirtioDeviceDefinition,
  type VirtioSchema,
} from './types.js';

/** struct virtio_pci_cap after cap_vndr/cap_next/cap_len (virtio 1.2 §4.1.4). */
function virtioCap(type: number, offset: number, length: number, extra?: number): Capability {
  const data = new Uint8Array(extra === undefined ? 13 : 17);
  const dv = new DataView(data.buffer);
  dv.setUint8(0, type); // cfg_type
  dv.setUint8(1, 0); // bar
  dv.setUint8(2, 0); // id
  dv.setUint32(5, offset, true);
  dv.setUint32(9, length, true);
  if (extra !== undefined) dv.setUint32(13, extra, true); // notify_off_multiplier
  return vendorSpecific(data);
}

function checkQueues(q: { count: number; size: number }): { count: number; size: number } {
  if (!Number.isInteger(q.count) || q.count < 1 || q.count > MAX_QUEUES)
    throw new DeviceSetupError(`${q.count} queues: 1 to ${MAX_QUEUES} are supported`);
  if (q.size < 2 || q.size > MAX_DEVICE_QUEUE_SIZE || q.size & (q.size - 1))
    throw new DeviceSetupError(
      `queue size ${q.size}: a power of two up to ${MAX_DEVICE_QUEUE_SIZE}`,
    );
  return q;
}

export function defineVirtioDevice<S extends Schema, B>(
  d: VirtioDeviceDefinition<S, B>,
): DeviceDefinition<VirtioSchema & S> {
  const state = { ...virtioState, ...d.state } as VirtioSchema & S;
  const transports = new WeakMap<object, VirtioPci<S, B>>();
  const of = (dev: DeviceContext<VirtioSchema & S>) => transports.get(dev.state)!;
  if (d.configSize > 0x1000) throw new DeviceSetupError('device configuration above 4 KiB');
  return defineDevice({
    id: d.id,
    version: d.version,
    description: d.description,
    pci: {
      vendor: VIRTIO_PCI_VENDOR,
      device: MODERN_DEVICE_BASE + d.virtioId,
      subsystemVendor: VIRTIO_PCI_VENDOR,
      subsystem: MODERN_DEVICE_BASE + d.virtioId,
      revision: 1, // §4.1.2.1: modern-only devices have a revision of 1 or more
      classCode: d.classCode,
      pin: 1,
    },
    options: d.options,
    state,
    capabilities: o => [
      msix({ vectors: checkQueues(d.queues(o)).count + 1, bar: 1 }),
      virtioCap(CapType.COMMON, Layout.COMMON, 0x1000),
      virtioCap(CapType.NOTIFY, Layout.NOTIFY, 0x1000, Layout.NOTIFY_MULTIPLIER),
      virtioCap(CapType.ISR, Layout.ISR, 0x1000),
      virtioCap(CapType.DEVICE, Layout.DEVICE, d.configSize),
    ],
    bars: (dev, o) => {
      const t = new VirtioPci(dev, d, o, d.backend(o));
      transports.set(dev.state, t);
      return { 0: bar('mem32', t.region) };
    },
    controls: Object.fromEntries(
      Object.entries(d.controls ?? {}).map(([name, fn]) => [
        name,
        (dev: DeviceContext<VirtioSchema & S>, v: number) => fn(of(dev).backend, v),
      ]),
    ),
    onReset: dev => of(dev).reset(),
    onRun: dev => of(dev).run(),
    afterLoad: dev => of(dev).loaded(),
    identity: dev => of(dev).identity(),
  });
}
