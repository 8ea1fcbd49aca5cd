// The device's side of a split virtqueue (virtio 1.2 §2.7), read and written straight in mapped
// guest memory. Everything the driver wrote is untrusted: indices, heads, chain links, lengths
// and addresses are checked, and any violation is a VirtqueueError (the transport then sets
// DEVICE_NEEDS_RESET) instead of a hang or an access outside guest memory.
import { AVAIL_F_NO_INTERRUPT, Desc } from './constants.js';

/** Synchronous access to guest memory; views throw when a range is not mapped as asked. */
export interface GuestView {
  view(address: number, len: number, write: boolean): Uint8Array;
  dirtied(address: number, len: number): void;
}

export class VirtqueueError extends Error {
  override readonly name = 'VirtqueueError';
}

export interface Segment {
  address: number;
  len: number;
}

/** One request: the head it came from, its device-readable then device-writable buffers. */
export interface Chain {
  head: number;
  readable: Segment[];
  writable: Segment[];
  readBytes: number;
  writeBytes: number;
}

export interface QueueLayout {
  size: number;
  desc: number;
  driver: number;
  device: number;
}

export interface QueueFeatures {
  eventIdx: boolean;
  indirect: boolean;
  /** Largest total of a chain's buffers the device accepts (bounds its copies). */
  maxChainBytes: number;
}

const MAX_QUEUE_SIZE = 32768;

/** Why a queue's layout cannot be used (virtio 1.2 §2.7: sizes and alignments), or null. */
export function layoutProblem(l: QueueLayout): string | null {
  if (l.size < 1 || l.size > MAX_QUEUE_SIZE || l.size & (l.size - 1))
    return `queue size ${l.size} is not a power of two up to ${MAX_QUEUE_SIZE}`;
  if (l.desc % 16) return `descriptor table at 0x${l.desc.toString(16)} is not 16-byte aligned`;
  if (l.driver % 2) return `driver area at 0x${l.driver.toString(16)} is not 2-byte aligned`;
  if (l.device % 4) return `device area at 0x${l.device.toString(16)} is not 4-byte aligned`;
  return null;
}

/** Bytes of the three areas of a split queue of `size` entries (§2.7, with the event fields). */
export const areaSizes = (size: number) => ({
  desc: 16 * size,
  driver: 6 + 2 * size,
  device: 6 + 8 * size,
});

const u16 = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8);
const u32 = (b: Uint8Array, o: number) =>
  (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/** A 16-bit index shared with the other side, read and written with ordering (Atomics). */
function index16(b: Uint8Array, o: number): Uint16Array | null {
  return (b.byteOffset + o) % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset + o, 1) : null;
}

export class SplitQueue {
  constructor(
    readonly mem: GuestView,
    readonly layout: QueueLayout,
    readonly features: QueueFeatures,
    /** Next avail ring entry the device takes (§2.7.6: the device's copy of last_avail_idx). */
    public lastAvail: number,
    /** The used ring's idx as the device last wrote it. */
    public usedIdx: number,
  ) {
    const p = layoutProblem(layout);
    if (p) throw new VirtqueueError(p);
  }

  #driver(len: number): Uint8Array {
    return this.#view(this.layout.driver, len, false, 'driver area');
  }
  #device(len: number): Uint8Array {
    return this.#view(this.layout.device, len, true, 'device area');
  }
  #view(address: number, len: number, write: boolean, what: string): Uint8Array {
    try {
      return this.mem.view(address, len, write);
    } catch (e) {
      throw new VirtqueueError(`${what}: ${(e as Error).message}`);
    }
  }

  /** avail->idx, read with acquire ordering. */
  availIdx(): number {
    const b = this.#driver(4);
    const a = index16(b, 2);
    return a ? Atomics.load(a, 0) : u16(b, 2);
  }

  /** Entries made available and not yet taken; more than the queue size is a driver error. */
  pending(): number {
    const avail = this.availIdx();
    const n = (avail - this.lastAvail) & 0xffff;
    if (n > this.layout.size)
      throw new VirtqueueError(
        `avail idx ${avail} is ${n} entries past the device's ${this.lastAvail}: ` +
          `more than the queue size ${this.layout.size}`,
      );
    return n;
  }

  /** Takes the next available chain, or null when there is none (§2.7.13.4 from the device). */
  pop(): Chain | null {
    if (this.pending() === 0) return null;
    const size = this.layout.size;
    const ring = this.#driver(4 + 2 * size);
    const head = u16(ring, 4 + 2 * (this.lastAvail % size));
    if (head >= size)
      throw new VirtqueueError(
        `avail ring entry ${this.lastAvail} names descriptor ${head} >= ${size}`,
      );
    const chain = this.walk(head);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return chain;
  }

  /**
   * Follows the chain at `head` (§2.7.5), through at most one indirect table (§2.7.5.3). At most
   * `size` descriptors in all, links inside their table, device-readable before device-writable
   * (§2.7.4.2), every buffer inside guest memory with the access it needs.
   */
  walk(head: number): Chain {
    const size = this.layout.size;
    const chain: Chain = { head, readable: [], writable: [], readBytes: 0, writeBytes: 0 };
    let table = this.#view(this.layout.desc, 16 * size, false, 'descriptor table');
    let entries = size;
    let indirect = false;
    let i = head;
    for (let count = 1; ; count++) {
      if (count > size)
        throw new VirtqueueError(`chain at head ${head} is longer than the queue size: a loop?`);
      const o = 16 * i;
      const address = this.#address(table, o, head);
      const len = u32(table, o + 8);
      const flags = u16(table, o + 12);
      if (flags & Desc.INDIRECT) {
        if (!this.features.indirect)
          throw new VirtqueueError(`head ${head}: indirect descriptor without RING_INDIRECT_DESC`);
        if (indirect)
          throw new VirtqueueError(`head ${head}: indirect descriptor in an indirect table`);
        if (flags & Desc.NEXT)
          throw new VirtqueueError(`head ${head}: indirect descriptor with NEXT`);
        if (len === 0 || len % 16 || len / 16 > size)
          throw new VirtqueueError(`head ${head}: indirect table of ${len} bytes`);
        table = this.#view(address, len, false, `indirect table of head ${head}`);
        entries = len / 16;
        indirect = true;
        i = 0;
        continue;
      }
      this.#add(chain, address, len, (flags & Desc.WRITE) !== 0);
      if (!(flags & Desc.NEXT)) return chain;
      i = u16(table, o + 14);
      if (i >= entries)
        throw new VirtqueueError(`head ${head}: next ${i} outside a table of ${entries} entries`);
    }
  }

  #address(table: Uint8Array, o: number, head: number): number {
    const hi = u32(table, o + 4);
    if (hi >= 2 ** 21) throw new VirtqueueError(`head ${head}: buffer address above 2^53`);
    return hi * 2 ** 32 + u32(table, o);
  }

  #add(chain: Chain, address: number, len: number, write: boolean): void {
    const what = `head ${chain.head}: ${write ? 'writable' : 'readable'} buffer`;
    if (!write && chain.writable.length)
      throw new VirtqueueError(`head ${chain.head}: readable buffer after a writable one`);
    this.#view(address, len, write, what); // inside one mapping, with the access it needs
    const total = chain.readBytes + chain.writeBytes + len;
    if (total > this.features.maxChainBytes)
      throw new VirtqueueError(
        `head ${chain.head}: buffers total ${total} bytes, ` +
          `more than ${this.features.maxChainBytes}`,
      );
    if (write) {
      chain.writable.push({ address, len });
      chain.writeBytes += len;
    } else {
      chain.readable.push({ address, len });
      chain.readBytes += len;
    }
  }

  /** Copies out what the driver gave the device to read. */
  gather(chain: Chain): Uint8Array {
    const out = new Uint8Array(chain.readBytes);
    let at = 0;
    for (const s of chain.readable) {
      out.set(this.#view(s.address, s.len, false, `head ${chain.head}`), at);
      at += s.len;
    }
    return out;
  }

  /** Copies the device's answer into the chain's writable buffers (at most their total). */
  scatter(chain: Chain, data: Uint8Array): number {
    let at = 0;
    for (const s of chain.writable) {
      if (at >= data.length) break;
      const n = Math.min(s.len, data.length - at);
      this.#view(s.address, n, true, `head ${chain.head}`).set(data.subarray(at, at + n));
      this.mem.dirtied(s.address, n);
      at += n;
    }
    return at;
  }

  /** Returns a chain to the driver: one used ring entry, then used->idx (§2.7.8, §2.7.13.3). */
  push(head: number, written: number): void {
    const size = this.layout.size;
    const used = this.#device(6 + 8 * size);
    const e = 4 + 8 * (this.usedIdx % size);
    const dv = new DataView(used.buffer, used.byteOffset, used.length);
    dv.setUint32(e, head, true);
    dv.setUint32(e + 4, written, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    const idx = index16(used, 2);
    if (idx) Atomics.store(idx, 0, this.usedIdx);
    else dv.setUint16(2, this.usedIdx, true);
    this.mem.dirtied(this.layout.device, 6 + 8 * size);
  }

  /**
   * Whether the driver asked to be interrupted for the entries used since `since` (§2.7.7.2:
   * used_event with RING_EVENT_IDX, else the NO_INTERRUPT flag).
   */
  wantsInterrupt(since: number): boolean {
    const size = this.layout.size;
    const avail = this.#driver(6 + 2 * size);
    if (!this.features.eventIdx) return (u16(avail, 0) & AVAIL_F_NO_INTERRUPT) === 0;
    const event = u16(avail, 4 + 2 * size);
    return ((this.usedIdx - event - 1) & 0xffff) < ((this.usedIdx - since) & 0xffff);
  }

  /**
   * With RING_EVENT_IDX, tells the driver to notify once it makes entry `lastAvail` available
   * (avail_event, §2.7.10). Written with a full barrier: the caller must look at avail->idx again.
   */
  publishAvailEvent(): void {
    if (!this.features.eventIdx) return;
    const size = this.layout.size;
    const used = this.#device(6 + 8 * size);
    const idx = index16(used, 4 + 8 * size);
    if (idx) Atomics.store(idx, 0, this.lastAvail);
    else
      new DataView(used.buffer, used.byteOffset, used.length).setUint16(
        4 + 8 * size,
        this.lastAvail,
        true,
      );
    this.mem.dirtied(this.layout.device + 4 + 8 * size, 2);
  }
}
