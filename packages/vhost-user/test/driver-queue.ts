// (A copy of @vfu/virtio's DriverQueue until that package is on the main line.)
// The driver's side of a split virtqueue (virtio 1.2 §2.7.13), over guest RAM the caller owns:
// what tests and the test driver use to play a guest's virtio driver. Plain bytes, no I/O.
import type { QueueLayout } from '@vfu/vhost-user';

const Desc = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;

export interface DriverBuffer {
  address: number;
  len: number;
  /** Device-writable (the device fills it). */
  write?: boolean;
}

/** Guest RAM as the driver sees it: bytes that start at guest address `address`. */
export interface DriverRam {
  address: number;
  bytes: Uint8Array;
}

export class DriverQueue {
  readonly #dv: DataView;
  readonly #free: number[];
  readonly #chains = new Map<number, number[]>();
  #availIdx = 0;
  #lastUsed = 0;

  constructor(
    readonly ram: DriverRam,
    readonly layout: QueueLayout,
    readonly eventIdx = false,
  ) {
    const b = ram.bytes;
    this.#dv = new DataView(b.buffer, b.byteOffset, b.length);
    this.#free = Array.from({ length: layout.size }, (_, i) => i);
  }

  #o(address: number): number {
    const o = address - this.ram.address;
    if (o < 0 || o >= this.ram.bytes.length) throw new RangeError('address outside the RAM');
    return o;
  }
  u16(address: number): number {
    return this.#dv.getUint16(this.#o(address), true);
  }
  set16(address: number, v: number): void {
    this.#dv.setUint16(this.#o(address), v, true);
  }

  /** Writes descriptor `i` of a table at `table`. */
  writeDesc(
    table: number,
    i: number,
    d: { address: number; len: number; flags: number; next: number },
  ) {
    const o = this.#o(table + 16 * i);
    this.#dv.setBigUint64(o, BigInt(d.address), true);
    this.#dv.setUint32(o + 8, d.len, true);
    this.#dv.setUint16(o + 12, d.flags, true);
    this.#dv.setUint16(o + 14, d.next, true);
  }

  get freeCount(): number {
    return this.#free.length;
  }

  /**
   * Makes a chain of `bufs` available and returns its head; with `indirectTable` (a guest address
   * with room for 16 bytes per buffer) the buffers go in an indirect table behind one descriptor.
   */
  add(bufs: DriverBuffer[], indirectTable?: number): number {
    const need = indirectTable === undefined ? bufs.length : 1;
    if (need > this.#free.length) throw new RangeError('no free descriptors');
    const ids = this.#free.splice(0, need);
    if (indirectTable !== undefined) {
      bufs.forEach((b, i) =>
        this.writeDesc(indirectTable, i, {
          address: b.address,
          len: b.len,
          flags: (b.write ? Desc.WRITE : 0) | (i + 1 < bufs.length ? Desc.NEXT : 0),
          next: i + 1,
        }),
      );
      this.writeDesc(this.layout.desc, ids[0], {
        address: indirectTable,
        len: 16 * bufs.length,
        flags: Desc.INDIRECT,
        next: 0,
      });
    } else
      bufs.forEach((b, i) =>
        this.writeDesc(this.layout.desc, ids[i], {
          address: b.address,
          len: b.len,
          flags: (b.write ? Desc.WRITE : 0) | (i + 1 < bufs.length ? Desc.NEXT : 0),
          next: ids[i + 1] ?? 0,
        }),
      );
    this.#chains.set(ids[0], ids);
    this.publish(ids[0]);
    return ids[0];
  }

  /** Puts `head` in the avail ring and advances avail->idx. */
  publish(head: number): void {
    const size = this.layout.size;
    this.set16(this.layout.driver + 4 + 2 * (this.#availIdx % size), head);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    this.set16(this.layout.driver + 2, this.#availIdx);
  }

  get availIdx(): number {
    return this.#availIdx;
  }

  /** Whether the device wants a notification after avail moved from `before` (§2.7.10). */
  needsKick(before: number): boolean {
    const size = this.layout.size;
    if (!this.eventIdx) return (this.u16(this.layout.device) & 1) === 0;
    const event = this.u16(this.layout.device + 4 + 8 * size);
    return ((this.#availIdx - event - 1) & 0xffff) < ((this.#availIdx - before) & 0xffff);
  }

  /** Asks for an interrupt when the used index passes `idx` (used_event, RING_EVENT_IDX). */
  setUsedEvent(idx: number): void {
    this.set16(this.layout.driver + 4 + 2 * this.layout.size, idx & 0xffff);
  }

  get usedIdx(): number {
    return this.u16(this.layout.device + 2);
  }

  /** New used entries since the last call; their descriptors return to the free list. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const size = this.layout.size;
    const idx = this.usedIdx;
    while (this.#lastUsed !== idx) {
      const e = this.#o(this.layout.device + 4 + 8 * (this.#lastUsed % size));
      const id = this.#dv.getUint32(e, true);
      out.push({ id, len: this.#dv.getUint32(e + 4, true) });
      const ids = this.#chains.get(id);
      if (ids) this.#free.push(...ids);
      this.#chains.delete(id);
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }
}
