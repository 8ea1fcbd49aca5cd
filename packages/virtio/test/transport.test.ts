// The PCI transport in-process: a toy virtio device whose requests finish when the test says so,
// over guest RAM in a real memfd mapped into the device as a DMA_MAP would. Feature negotiation,
// a hostile ring, and requests in flight carried across a save and load of the device state.
import { describe, it, expect } from 'vitest';
import { PciDevice } from '@vfu/pci';
import { memfdCreate, MappedMemory, dupFd, type OwnedFd } from '@vfu/native';
import { DmaMapFlag } from '@vfu/protocol';
import { encodeState, decodeState, assignState } from '@vfu/stream';
import {
  defineVirtioDevice,
  DriverQueue,
  Common,
  Desc,
  Feature,
  Layout,
  Status,
  type VirtioRequest,
} from '../src/index.ts';

interface Pending {
  req: VirtioRequest;
  finish: (reply: Uint8Array) => void;
}

/** Each device's backend: the requests its handler received, in order. */
const backends: Pending[][] = [];

const toy = defineVirtioDevice({
  id: 'virtio-toy',
  version: 1,
  description: 'answers each request when the test says so',
  virtioId: 0x7f,
  classCode: 0xff0000,
  backend: () => {
    const pending: Pending[] = [];
    backends.push(pending);
    return pending;
  },
  features: () => [],
  configSize: 8,
  config: () => Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8),
  queues: () => ({ count: 2, size: 16 }),
  handle: (req, pending) => new Promise(finish => pending.push({ req, finish })),
});

const RAM = 0x100000;
const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;
const SIZE = 1 << 20;

/** The device, its pending requests, and register access as a driver has it. */
function device(fd: OwnedFd) {
  const dev = new PciDevice(toy);
  dev.guest.map({ argsz: 32, flags: RW, offset: 0, address: RAM, size: SIZE }, fd);
  dev.config.write(4, Uint8Array.of(6, 0)); // memory + bus master
  const bar = dev.region(0)!;
  const w = (o: number, v: number, n: 1 | 2 | 4) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (v >>> (8 * i)) & 0xff;
    bar.write(o, b);
  };
  const r = (o: number, n: 1 | 2 | 4) => {
    const b = new Uint8Array(n);
    bar.read(o, b);
    return b.reduce((a, x, i) => a + x * 2 ** (8 * i), 0);
  };
  return { dev, w, r, pending: backends.at(-1)! };
}

function setup() {
  const fd = memfdCreate('toy-ram', SIZE);
  const map = MappedMemory.map(fd.fd, 0, SIZE);
  const ram = { address: RAM, bytes: map.bytes(0, SIZE) };
  const a = device(dupFd(fd.fd));
  return { fd, map, ram, ...a };
}

type Regs = ReturnType<typeof device>;

function negotiate({ w, r }: Regs, lo: number, hi: number): number {
  w(Common.DEVICE_STATUS, 0, 1);
  w(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER, 1);
  w(Common.DRIVER_FEATURE_SELECT, 0, 4);
  w(Common.DRIVER_FEATURE, lo, 4);
  w(Common.DRIVER_FEATURE_SELECT, 1, 4);
  w(Common.DRIVER_FEATURE, hi, 4);
  w(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK, 1);
  return r(Common.DEVICE_STATUS, 1);
}

function startQueue(regs: Regs, ram: { address: number; bytes: Uint8Array }): DriverQueue {
  const { w } = regs;
  const layout = { size: 16, desc: RAM, driver: RAM + 0x100, device: RAM + 0x200 };
  w(Common.QUEUE_SELECT, 0, 2);
  w(Common.QUEUE_SIZE, 16, 2);
  w(Common.QUEUE_DESC, layout.desc, 4);
  w(Common.QUEUE_DRIVER, layout.driver, 4);
  w(Common.QUEUE_DEVICE, layout.device, 4);
  w(Common.QUEUE_ENABLE, 1, 2);
  w(Common.DEVICE_STATUS, 0xf & ~Status.FAILED, 1);
  return new DriverQueue(ram, layout);
}

const tick = () => new Promise(r => setImmediate(r));

describe('virtio PCI transport', () => {
  it('a request in flight at a device reset is forgotten: its completion is dropped', async () => {
    const s = setup();
    negotiate(s, 0, 1);
    let q = startQueue(s, s.ram);
    q.add([
      { address: RAM + 0x1000, len: 1 },
      { address: RAM + 0x2000, len: 4, write: true },
    ]);
    s.w(Layout.NOTIFY, 0, 2);
    expect(s.pending).toHaveLength(1);
    // The driver resets the device and sets the queue up again before the I/O finishes.
    s.w(Common.DEVICE_STATUS, 0, 1);
    s.ram.bytes.fill(0, 0, 0x3000);
    negotiate(s, 0, 1);
    q = startQueue(s, s.ram);
    s.pending[0].finish(Uint8Array.of(7, 7, 7, 7));
    await tick();
    expect(q.usedIdx).toBe(0);
    expect([...s.ram.bytes.subarray(0x2000, 0x2004)]).toEqual([0, 0, 0, 0]);
  });

  it('a request finished while stopped is used when the device runs again, once', async () => {
    const s = setup();
    negotiate(s, 0, 1);
    const q = startQueue(s, s.ram);
    const head = q.add([
      { address: RAM + 0x1000, len: 1 },
      { address: RAM + 0x2000, len: 4, write: true },
    ]);
    s.w(Layout.NOTIFY, 0, 2);
    expect(s.pending).toHaveLength(1);
    s.dev.setRunning(false);
    s.pending[0].finish(Uint8Array.of(7, 7, 7, 7));
    await tick();
    expect(q.usedIdx).toBe(0); // held: a stopped device writes nothing to guest memory
    expect([...s.ram.bytes.subarray(0x2000, 0x2004)]).toEqual([0, 0, 0, 0]);
    s.dev.setRunning(true);
    await tick();
    expect(q.takeUsed()).toEqual([{ id: head, len: 4 }]);
    expect([...s.ram.bytes.subarray(0x2000, 0x2004)]).toEqual([7, 7, 7, 7]);
    // Another stop and run: the completion went out already and must not go out again.
    s.dev.setRunning(false);
    s.dev.setRunning(true);
    await tick();
    expect(q.usedIdx).toBe(1);
    expect(q.takeUsed()).toEqual([]);
  });

  it('negotiates: VERSION_1 required, only offered bits, nothing after FEATURES_OK', () => {
    const s = setup();
    const all = Status.ACKNOWLEDGE | Status.DRIVER;
    expect(negotiate(s, 0, 0)).toBe(all); // no VERSION_1: FEATURES_OK stays clear
    expect(negotiate(s, 1 << 3, 1)).toBe(all); // a bit the device never offered
    expect(negotiate(s, 1 << Feature.RING_EVENT_IDX, 1)).toBe(all | Status.FEATURES_OK);
    s.w(Common.DRIVER_FEATURE_SELECT, 0, 4);
    s.w(Common.DRIVER_FEATURE, 0, 4); // ignored once FEATURES_OK is set
    expect(s.r(Common.DRIVER_FEATURE, 4)).toBe(1 << Feature.RING_EVENT_IDX);
    expect(s.r(Common.NUM_QUEUES, 2)).toBe(2);
    s.w(Common.QUEUE_SELECT, 5, 2);
    expect(s.r(Common.QUEUE_SIZE, 2)).toBe(0); // no such queue
    expect(s.r(Layout.DEVICE + 2, 4)).toBe(0x06050403);
    s.w(Common.DEVICE_STATUS, 0, 1);
    expect(s.r(Common.DEVICE_STATUS, 1)).toBe(0);
    expect(s.r(Common.DRIVER_FEATURE, 4)).toBe(0);
  });

  it('a looping chain: DEVICE_NEEDS_RESET, the ISR config bit; a reset recovers', async () => {
    const s = setup();
    negotiate(s, 0, 1);
    const q = startQueue(s, s.ram);
    q.writeDesc(RAM, 0, { address: RAM + 0x1000, len: 4, flags: Desc.NEXT, next: 1 });
    q.writeDesc(RAM, 1, { address: RAM + 0x1000, len: 4, flags: Desc.NEXT, next: 0 });
    q.publish(0);
    s.w(Layout.NOTIFY, 0, 2);
    const st = s.r(Common.DEVICE_STATUS, 1);
    expect(st & Status.DEVICE_NEEDS_RESET).toBe(Status.DEVICE_NEEDS_RESET);
    expect(s.r(Layout.ISR, 1)).toBe(2); // configuration change (INTx: MSI-X is off)
    expect(s.r(Layout.ISR, 1)).toBe(0); // read-to-clear
    expect(s.dev.irq.intxAsserted).toBe(false);
    s.w(Common.DEVICE_STATUS, 0, 1);
    expect(s.r(Common.DEVICE_STATUS, 1)).toBe(0);
  });

  it('requests in flight survive save and load: re-run at the destination, used once', async () => {
    const s = setup();
    negotiate(s, 0, 1);
    const q = startQueue(s, s.ram);
    const heads = [0, 1, 2].map(i => {
      s.ram.bytes[0x1000 + 16 * i] = 10 + i;
      return q.add([
        { address: RAM + 0x1000 + 16 * i, len: 1 },
        { address: RAM + 0x2000 + 16 * i, len: 4, write: true },
      ]);
    });
    s.w(Layout.NOTIFY, 0, 2);
    expect(q.usedIdx).toBe(0);
    const src = s.pending;
    expect(src.map(p => p.req.data[0])).toEqual([10, 11, 12]);
    src[0].finish(Uint8Array.of(1, 1, 1, 1));
    await tick();
    expect(q.usedIdx).toBe(1);
    // Stop (the switchover): completions arriving now are held, nothing reaches guest memory.
    s.dev.setRunning(false);
    src[1].finish(Uint8Array.of(9, 9, 9, 9));
    src[2].finish(Uint8Array.of(9, 9, 9, 9));
    await tick();
    expect(q.usedIdx).toBe(1);
    // The destination: same RAM, the saved state loaded, then run.
    const d = device(dupFd(s.fd.fd));
    d.dev.setRunning(false);
    const saved = encodeState(toy.state, s.dev.state);
    assignState(toy.state, d.dev.state, decodeState(toy.state, saved) as never);
    d.dev.config.restore(s.dev.config.snapshot());
    toy.afterLoad!(d.dev.context);
    d.dev.setRunning(true);
    const dst = d.pending;
    expect(dst.map(p => p.req.data[0])).toEqual([11, 12]);
    dst[0].finish(Uint8Array.of(2, 2, 2, 2));
    dst[1].finish(Uint8Array.of(3, 3, 3, 3));
    await tick();
    const used = q.takeUsed();
    expect(used.map(u => u.id).sort()).toEqual([...heads].sort());
    expect(used.every(u => u.len === 4)).toBe(true);
    expect([...s.ram.bytes.subarray(0x2010, 0x2014)]).toEqual([2, 2, 2, 2]);
    expect([...s.ram.bytes.subarray(0x2020, 0x2024)]).toEqual([3, 3, 3, 3]);
    // A new request goes to the destination as usual.
    q.add([
      { address: RAM + 0x1000, len: 1 },
      { address: RAM + 0x2000, len: 4, write: true },
    ]);
    d.w(Layout.NOTIFY, 0, 2);
    expect(dst).toHaveLength(3);
  });
});
