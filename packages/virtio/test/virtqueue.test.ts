// The split-queue core against well-formed and hostile rings, in guest memory modelled as plain
// bytes at a guest address (what GuestMemory.view hands out for an fd-backed mapping).
import { describe, it, expect } from 'vitest';
import {
  Desc,
  DriverQueue,
  SplitQueue,
  VirtqueueError,
  type GuestView,
  type QueueLayout,
} from '../src/index.ts';

const BASE = 0x10000;
const RAM = 0x20000;
const SIZE = 8;

/** Guest memory: one read-write mapping at BASE, plus a read-only page right after it. */
function memory() {
  const bytes = new Uint8Array(RAM);
  const dirty: [number, number][] = [];
  const mem: GuestView = {
    view(address, len, write) {
      const roStart = BASE + RAM - 0x1000;
      if (address < BASE || address + len > BASE + RAM || len < 0)
        throw new Error(`[0x${address.toString(16)}, +${len}) is not mapped`);
      if (write && address + len > roStart && len > 0) throw new Error('read-only mapping');
      return bytes.subarray(address - BASE, address - BASE + len);
    },
    dirtied: (a, n) => dirty.push([a, n]),
  };
  return { bytes, mem, dirty };
}

const layout: QueueLayout = { size: SIZE, desc: BASE, driver: BASE + 0x100, device: BASE + 0x200 };
const DATA = BASE + 0x1000;

function setup(features = { eventIdx: false, indirect: true, maxChainBytes: 1 << 20 }) {
  const m = memory();
  const drv = new DriverQueue({ address: BASE, bytes: m.bytes }, layout, features.eventIdx);
  const dev = new SplitQueue(m.mem, layout, features, 0, 0);
  return { ...m, drv, dev };
}

const expectBroken = (fn: () => unknown, what: RegExp) => {
  expect(fn).toThrow(VirtqueueError);
  expect(fn).toThrow(what);
};

describe('split virtqueue: well-formed rings', () => {
  it('takes a chain, reads its readable part, writes its writable part, returns it used', () => {
    const { bytes, drv, dev, dirty } = setup();
    bytes.set([1, 2, 3, 4], DATA - BASE);
    const head = drv.add([
      { address: DATA, len: 4 },
      { address: DATA + 0x100, len: 8, write: true },
      { address: DATA + 0x200, len: 1, write: true },
    ]);
    const chain = dev.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.readBytes).toBe(4);
    expect(chain.writeBytes).toBe(9);
    expect([...dev.gather(chain)]).toEqual([1, 2, 3, 4]);
    expect(dev.pop()).toBeNull();
    const written = dev.scatter(chain, Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9, 7]));
    expect(written).toBe(9);
    dev.push(chain.head, written);
    expect(bytes[DATA + 0x200 - BASE]).toBe(7);
    expect(drv.takeUsed()).toEqual([{ id: head, len: 9 }]);
    expect(dirty.some(([a]) => a === DATA + 0x100)).toBe(true);
    expect(dirty.some(([a]) => a === layout.device)).toBe(true);
    expect(drv.freeCount).toBe(SIZE);
  });

  it('follows an indirect table', () => {
    const { bytes, drv, dev } = setup();
    bytes.set([5, 6], DATA - BASE);
    drv.add(
      [
        { address: DATA, len: 2 },
        { address: DATA + 0x10, len: 3 },
        { address: DATA + 0x100, len: 4, write: true },
      ],
      BASE + 0x800,
    );
    const chain = dev.pop()!;
    expect(chain.readable.map(s => s.len)).toEqual([2, 3]);
    expect(chain.writable).toEqual([{ address: DATA + 0x100, len: 4 }]);
  });

  it('keeps counting across the 16-bit wrap of the indices', () => {
    const m = memory();
    const feats = { eventIdx: false, indirect: false, maxChainBytes: 1 << 20 };
    const drv = new DriverQueue({ address: BASE, bytes: m.bytes }, layout);
    const dev = new SplitQueue(m.mem, layout, feats, 0xfffe, 0xfffe);
    // The driver's indices start at 0; move them to 0xfffe as a long-running driver would have.
    for (let i = 0; i < 0xfffe; i++) drv.publish(0);
    m.bytes.fill(0, layout.device - BASE, layout.device - BASE + 4);
    new DataView(m.bytes.buffer).setUint16(layout.device - BASE + 2, 0xfffe, true);
    drv.takeUsed();
    for (let i = 0; i < 4; i++) drv.add([{ address: DATA, len: 1, write: true }]);
    const heads: number[] = [];
    for (let c = dev.pop(); c; c = dev.pop()) {
      heads.push(c.head);
      dev.push(c.head, 0);
    }
    expect(heads).toHaveLength(4);
    expect(dev.lastAvail).toBe(2);
    expect(dev.usedIdx).toBe(2);
    expect(drv.takeUsed().map(u => u.id)).toEqual(heads);
  });

  it('interrupts as the driver asks: NO_INTERRUPT without EVENT_IDX, used_event with it', () => {
    const plain = setup();
    expect(plain.dev.wantsInterrupt(0)).toBe(true);
    plain.drv.set16(layout.driver, 1); // VIRTQ_AVAIL_F_NO_INTERRUPT
    expect(plain.dev.wantsInterrupt(0)).toBe(false);

    const ev = setup({ eventIdx: true, indirect: false, maxChainBytes: 1 << 20 });
    for (let i = 0; i < 3; i++) ev.drv.add([{ address: DATA, len: 1, write: true }]);
    ev.drv.setUsedEvent(1); // interrupt once used idx passes 1
    const chains = [ev.dev.pop()!, ev.dev.pop()!, ev.dev.pop()!];
    ev.dev.push(chains[0].head, 0);
    expect(ev.dev.wantsInterrupt(0)).toBe(false); // used idx 1: not past 1 yet
    ev.dev.push(chains[1].head, 0);
    expect(ev.dev.wantsInterrupt(1)).toBe(true); // 1 -> 2 crosses used_event
    ev.dev.push(chains[2].head, 0);
    expect(ev.dev.wantsInterrupt(2)).toBe(false); // already told
    ev.dev.publishAvailEvent();
    expect(ev.drv.u16(layout.device + 4 + 8 * SIZE)).toBe(3);
    const before = ev.drv.availIdx;
    ev.drv.add([{ address: DATA, len: 1, write: true }]);
    expect(ev.drv.needsKick(before)).toBe(true);
  });
});

describe('split virtqueue: hostile rings set DEVICE_NEEDS_RESET, never hang or stray', () => {
  it('a loop in a chain', () => {
    const { drv, dev } = setup();
    drv.writeDesc(layout.desc, 0, { address: DATA, len: 1, flags: Desc.NEXT, next: 1 });
    drv.writeDesc(layout.desc, 1, { address: DATA, len: 1, flags: Desc.NEXT, next: 0 });
    drv.publish(0);
    expectBroken(() => dev.pop(), /longer than the queue size/);
  });

  it('a head or a next outside the table', () => {
    const a = setup();
    a.drv.publish(SIZE);
    expectBroken(() => a.dev.pop(), /names descriptor 8/);
    const b = setup();
    b.drv.writeDesc(layout.desc, 0, { address: DATA, len: 1, flags: Desc.NEXT, next: 200 });
    b.drv.publish(0);
    expectBroken(() => b.dev.pop(), /next 200 outside/);
  });

  it('an avail index more than a queue ahead', () => {
    const { drv, dev } = setup();
    drv.set16(layout.driver + 2, SIZE + 1);
    expectBroken(() => dev.pop(), /more than the queue size/);
  });

  it('buffers outside guest memory, past the end of a mapping, above 2^53', () => {
    const a = setup();
    a.drv.add([{ address: 0x1000, len: 16 }]);
    expectBroken(() => a.dev.pop(), /not mapped/);
    const b = setup();
    b.drv.add([{ address: BASE + RAM - 8, len: 16 }]);
    expectBroken(() => b.dev.pop(), /not mapped/);
    const c = setup();
    c.drv.writeDesc(layout.desc, 0, { address: 2 ** 60, len: 1, flags: 0, next: 0 });
    c.drv.publish(0);
    expectBroken(() => c.dev.pop(), /above 2\^53/);
  });

  it('a writable buffer in read-only memory; a readable buffer after a writable one', () => {
    const a = setup();
    a.drv.add([{ address: BASE + RAM - 0x100, len: 16, write: true }]);
    expectBroken(() => a.dev.pop(), /read-only/);
    const b = setup();
    b.drv.add([
      { address: DATA, len: 1, write: true },
      { address: DATA, len: 1 },
    ]);
    expectBroken(() => b.dev.pop(), /readable buffer after a writable/);
  });

  it('indirect tables: without the feature, nested, with NEXT, odd sizes, too long', () => {
    const off = setup({ eventIdx: false, indirect: false, maxChainBytes: 1 << 20 });
    off.drv.add([{ address: DATA, len: 1 }], BASE + 0x800);
    expectBroken(() => off.dev.pop(), /without RING_INDIRECT_DESC/);

    const nested = setup();
    nested.drv.writeDesc(BASE + 0x800, 0, {
      address: BASE + 0x800,
      len: 16,
      flags: Desc.INDIRECT,
      next: 0,
    });
    nested.drv.writeDesc(layout.desc, 0, {
      address: BASE + 0x800,
      len: 16,
      flags: Desc.INDIRECT,
      next: 0,
    });
    nested.drv.publish(0);
    expectBroken(() => nested.dev.pop(), /in an indirect table/);

    const cases: [number, number, RegExp][] = [
      [Desc.INDIRECT | Desc.NEXT, 16, /with NEXT/],
      [Desc.INDIRECT, 24, /indirect table of 24 bytes/],
      [Desc.INDIRECT, 0, /indirect table of 0 bytes/],
      [Desc.INDIRECT, 16 * (SIZE + 1), /indirect table of 144 bytes/],
    ];
    for (const [flags, len, what] of cases) {
      const t = setup();
      t.drv.writeDesc(layout.desc, 0, { address: BASE + 0x800, len, flags, next: 1 });
      t.drv.publish(0);
      expectBroken(() => t.dev.pop(), what);
    }

    const loop = setup();
    for (let i = 0; i < 4; i++)
      loop.drv.writeDesc(BASE + 0x800, i, {
        address: DATA,
        len: 1,
        flags: Desc.NEXT,
        next: (i + 1) % 4,
      });
    loop.drv.writeDesc(layout.desc, 0, {
      address: BASE + 0x800,
      len: 64,
      flags: Desc.INDIRECT,
      next: 0,
    });
    loop.drv.publish(0);
    expectBroken(() => loop.dev.pop(), /longer than the queue size/);
  });

  it('a chain whose buffers add up to more than the device accepts', () => {
    const { drv, dev } = setup({ eventIdx: false, indirect: false, maxChainBytes: 4096 });
    drv.add([
      { address: DATA, len: 4000 },
      { address: DATA, len: 4000, write: true },
    ]);
    expectBroken(() => dev.pop(), /more than 4096/);
  });

  it('rings with the wrong size or alignment are refused up front', () => {
    const { mem } = memory();
    const f = { eventIdx: false, indirect: false, maxChainBytes: 1 };
    for (const l of [
      { ...layout, size: 6 },
      { ...layout, size: 0 },
      { ...layout, desc: BASE + 8 },
      { ...layout, driver: BASE + 0x101 },
      { ...layout, device: BASE + 0x202 },
    ])
      expect(() => new SplitQueue(mem, l, f, 0, 0)).toThrow(VirtqueueError);
  });

  it('random garbage in every ring either yields bounded chains or a VirtqueueError', () => {
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    let chains = 0,
      errors = 0;
    for (let round = 0; round < 2000; round++) {
      const { bytes, dev } = setup();
      // Descriptors pointing mostly inside RAM, with random flags, links and lengths.
      for (let i = 0; i < 0x300; i += 4) {
        const v = rand();
        new DataView(bytes.buffer).setUint32(i, v, true);
      }
      for (let i = 0; i < SIZE; i++) {
        const o = 16 * i;
        const dv = new DataView(bytes.buffer);
        if (rand() % 4) dv.setUint32(o, BASE + (rand() % RAM), true);
        if (rand() % 4) dv.setUint32(o + 4, 0, true);
        if (rand() % 2) dv.setUint32(o + 8, rand() % 512, true);
        if (rand() % 2) dv.setUint16(o + 14, rand() % (SIZE + 2), true);
        if (rand() % 3 === 0) dv.setUint32(o + 8, 16 * (1 + (rand() % SIZE)), true);
        if (rand() % 2) dv.setUint16(o + 12, rand() % 8, true);
      }
      const dv = new DataView(bytes.buffer);
      dv.setUint16(layout.driver - BASE + 2, rand() % (SIZE + 2), true);
      for (let i = 0; i < SIZE; i++)
        dv.setUint16(layout.driver - BASE + 4 + 2 * i, rand() % (SIZE + 1), true);
      try {
        for (let n = 0; n < SIZE + 1; n++) {
          const c = dev.pop();
          if (!c) break;
          chains++;
          expect(c.readable.length + c.writable.length).toBeLessThanOrEqual(SIZE);
          for (const s of [...c.readable, ...c.writable]) {
            expect(s.address).toBeGreaterThanOrEqual(BASE);
            expect(s.address + s.len).toBeLessThanOrEqual(BASE + RAM);
          }
        }
      } catch (e) {
        expect(e).toBeInstanceOf(VirtqueueError);
        errors++;
      }
    }
    expect(chains).toBeGreaterThan(0);
    expect(errors).toBeGreaterThan(0);
  });
});
