// Producing a device's stream (the source side): the initial pass over memories, then only the
// pages that changed (found by comparing with what was sent), and at stop-copy the final state.
import { record, headerPayload, memoryPayload, Rec, RECORD_OVERHEAD } from './format.js';
import type { DeviceImage } from './image.js';

export const PAGE = 4096;
/** Memory bytes per MEMORY record. */
const RUN = 256 * 1024;

export class SaveSession {
  #queue: Uint8Array[] = [];
  #queued = 0;
  #head = 0; // bytes of #queue[0] already read
  #sent: Uint8Array[]; // what the destination has of each memory (to find changed pages)
  #cursor: { mem: number; off: number } | null = { mem: 0, off: 0 }; // initial pass position
  #dirty: { mem: number; pages: number[] }[] = [];
  #stopped = false;
  #ended = false;
  #initialLeft: number;
  /** Bytes handed out so far. */
  bytesOut = 0;

  constructor(readonly image: DeviceImage, readonly maxChunk = 1 << 20) {
    this.#push(record(Rec.HEADER, headerPayload(image)));
    this.#sent = image.memories.map(m => new Uint8Array(m.size));
    this.#initialLeft = image.memories.reduce((a, m) => a + m.size, 0);
    // State and config go first as well: small, and a destination can check compatibility early.
    this.#push(record(Rec.STATE, image.saveState()));
    this.#push(record(Rec.CONFIG, image.saveConfig()));
  }

  get stopped(): boolean { return this.#stopped; }
  get finished(): boolean { return this.#ended && this.#queued === 0; }

  #push(r: Uint8Array): void { this.#queue.push(r); this.#queued += r.length; }

  /** Pre-copy estimates (§8.8): bytes of the first pass not yet read, and of changes found since. */
  precopyInfo(): { initialBytes: number; dirtyBytes: number } {
    const produced = this.bytesOut + this.#queued;
    const pendingDirty = this.#dirty.reduce((a, d) => a + d.pages.length * PAGE, 0);
    if (this.#initialEnd < 0) return { initialBytes: this.#queued + this.#initialLeft, dirtyBytes: 0 };
    return { initialBytes: Math.max(0, this.#initialEnd - this.bytesOut), dirtyBytes: produced - Math.max(this.bytesOut, this.#initialEnd) + pendingDirty };
  }
  /** Stream offset where the first pass ended (-1 while it runs). */
  #initialEnd = -1;

  /** Estimate of what stop-copy still has to move (MIG_DATA_SIZE). */
  stopCopyEstimate(): number {
    const state = this.image.saveState().length + this.image.configSize + 3 * RECORD_OVERHEAD;
    const dirty = this.#dirty.reduce((a, d) => a + d.pages.length * PAGE, 0);
    return this.#queued + this.#initialLeft + dirty + state;
  }

  /** Finds pages changed since they were sent (memories the client writes through mmap too). */
  scan(): number {
    let found = 0;
    this.#dirty = this.image.memories.map((m, mem) => {
      const pages: number[] = [];
      const limit = this.#cursor && this.#cursor.mem === mem ? this.#cursor.off : this.#cursor && this.#cursor.mem < mem ? 0 : m.size;
      const sent = this.#sent[mem];
      for (let off = 0; off < limit; off += PAGE) {
        const n = Math.min(PAGE, m.size - off);
        if (Buffer.compare(m.bytes(off, n), sent.subarray(off, off + n)) !== 0) pages.push(off / PAGE);
      }
      found += pages.length;
      return { mem, pages };
    });
    return found;
  }

  /** Rescans for changed pages when nothing is queued or known dirty (a fresh pre-copy estimate). */
  refresh(): void {
    if (this.#initialEnd >= 0 && this.#queued === 0 && !this.#dirty.some(d => d.pages.length)) this.scan();
  }

  /** The device stopped (STOP_COPY): what follows is the final state. */
  stop(): void { this.#stopped = true; }

  /** Up to `max` bytes of stream; empty when nothing is available now (or ever, once finished). */
  read(max: number): Uint8Array {
    max = Math.min(max, this.maxChunk);
    while (this.#queued < max && this.#refill()) { /* fill */ }
    const out = new Uint8Array(Math.min(max, this.#queued));
    let n = 0;
    while (n < out.length) {
      const q = this.#queue[0];
      const take = Math.min(q.length - this.#head, out.length - n);
      out.set(q.subarray(this.#head, this.#head + take), n);
      n += take; this.#head += take;
      if (this.#head === q.length) { this.#queue.shift(); this.#head = 0; }
    }
    this.#queued -= n;
    this.bytesOut += n;
    return out;
  }

  /** Makes more records; false when nothing more can be made now. */
  #refill(): boolean {
    const mems = this.image.memories;
    if (this.#cursor) {
      const c = this.#cursor;
      while (c.mem < mems.length && c.off >= mems[c.mem].size) { c.mem++; c.off = 0; }
      if (c.mem >= mems.length) { this.#cursor = null; this.#initialEnd = this.bytesOut + this.#queued; return true; }
      const m = mems[c.mem], len = Math.min(RUN, m.size - c.off);
      this.#emit(c.mem, c.off, len);
      this.#initialLeft -= len;
      c.off += len;
      return true;
    }
    if (!this.#dirty.some(d => d.pages.length) && (this.#stopped || this.#queued === 0)) {
      if (this.#ended) return false;
      this.scan();
    }
    const d = this.#dirty.find(x => x.pages.length);
    if (d) {
      // A run of consecutive changed pages, up to RUN bytes.
      const first = d.pages.shift()!;
      let last = first;
      while (d.pages[0] === last + 1 && (last + 1 - first + 1) * PAGE <= RUN) last = d.pages.shift()!;
      const m = mems[d.mem], off = first * PAGE;
      this.#emit(d.mem, off, Math.min((last + 1) * PAGE, m.size) - off);
      return true;
    }
    if (this.#stopped && !this.#ended) {
      this.#push(record(Rec.STATE, this.image.saveState()));
      this.#push(record(Rec.CONFIG, this.image.saveConfig()));
      this.#push(record(Rec.END, new Uint8Array(0)));
      this.#ended = true;
      return true;
    }
    return false;
  }

  #emit(mem: number, off: number, len: number): void {
    const bytes = this.image.memories[mem].bytes(off, len);
    this.#sent[mem].set(bytes, off);
    this.#push(record(Rec.MEMORY, memoryPayload(mem, off, bytes)));
  }
}
