// Producing a device's stream (the source side): the initial pass over memories, then only the
// pages that changed (found by comparing with what was sent), and at stop-copy the final state.
import { copyAndHash, hash } from '@vfu/native';
import { record, headerPayload, memoryRecord, Rec, RECORD_OVERHEAD } from './format.js';
import type { DeviceImage } from './image.js';

export const PAGE = 4096;
/** Memory bytes per MEMORY record. */
const RUN = 256 * 1024;
/** Bytes compared at once when looking for changed pages. */
const SCAN_BLOCK = 256 * 1024;
/** Bytes of a pre-copy pass one request compares at most (~20 ms at this VM's bandwidth). */
const SCAN_STEP = 128 << 20;

/** A MEMORY record whose data is read from the shadow copy when it is written out. */
interface MemRecord {
  head: Uint8Array;
  data: Uint8Array;
  crc: Uint8Array;
  length: number;
}
type Item = Uint8Array | MemRecord;

/**
 * What a source last sent of one memory, kept across sessions by the caller: `bytes` (compared
 * with the memory to find changed pages) and `zero`, one flag per RUN-sized block, 1 while the
 * block is known to be all zero (a fresh shadow is; a block copied into is no longer known).
 */
export interface Shadow {
  bytes: Uint8Array;
  zero: Uint8Array;
}

export function newShadow(size: number): Shadow {
  return { bytes: new Uint8Array(size), zero: new Uint8Array(Math.ceil(size / RUN)).fill(1) };
}

/** The bytes of a never-written run of memory, sent without reading it (at most RUN long). */
const ZEROS = new Uint8Array(RUN);
/** The check of each length of zero run met so far: the same bytes need not be hashed again. */
const zeroRunHashes = new Map<number, number>();

function zeroRunHash(len: number): number {
  let sum = zeroRunHashes.get(len);
  if (sum === undefined) {
    sum = hash(ZEROS.subarray(0, len));
    zeroRunHashes.set(len, sum);
  }
  return sum;
}

export class SaveSession {
  #queue: Item[] = [];
  #out = new Uint8Array(0); // reused for read() results
  #queued = 0;
  #head = 0; // bytes of #queue[0] already read
  #sent: Shadow[]; // what the destination has of each memory (to find changed pages)
  #cursor: { mem: number; off: number } | null = { mem: 0, off: 0 }; // initial pass position
  #dirty: { mem: number; pages: number[] }[] = [];
  #stopped = false;
  #finalScan = false; // the scan after stop() is done: a stopped device changes nothing more
  #ended = false;
  #initialLeft: number;
  /** Bytes handed out so far. */
  bytesOut = 0;

  /**
   * `shadows`, if given (one per memory, newShadow(its size)), are kept across sessions by the
   * caller, so that a new session does not allocate and fault in a copy of every memory again.
   */
  constructor(
    readonly image: DeviceImage,
    readonly maxChunk = 1 << 20,
    shadows?: Shadow[],
  ) {
    this.#push(record(Rec.HEADER, headerPayload(image)));
    // A shadow's bytes matter only where this session has sent them (scans stop at the first
    // pass's cursor, and every page before it was copied in by #emit): no clearing, which on a
    // fresh 1 GiB shadow would fault in every page inside the request that starts the session.
    this.#sent = shadows ?? image.memories.map(m => newShadow(m.size));
    // Seen writes are counted from here: every page this session sends is copied after this.
    for (const m of image.memories) m.writes?.flags()?.fill(0);
    this.#initialLeft = image.memories.reduce((a, m) => a + m.size, 0);
    // State, config and the kit record go first as well: small, and a destination can check
    // compatibility early.
    this.#pushState();
  }

  /** The state, config and kit records (sent first, and again, final, at stop-copy). */
  #pushState(): void {
    this.#push(record(Rec.STATE, this.image.saveState()));
    this.#push(record(Rec.CONFIG, this.image.saveConfig()));
    if (this.image.kit) this.#push(record(Rec.KIT, this.image.kit.save()));
  }

  get stopped(): boolean {
    return this.#stopped;
  }
  get finished(): boolean {
    return this.#ended && this.#queued === 0;
  }

  #push(r: Item): void {
    this.#queue.push(r);
    this.#queued += r.length;
  }

  /**
   * Pre-copy estimates (§8.8): bytes of the first pass not yet read, and of changes found since.
   */
  precopyInfo(): { initialBytes: number; dirtyBytes: number } {
    const produced = this.bytesOut + this.#queued;
    const pendingDirty = this.#dirtyBytes();
    if (this.#initialEnd < 0)
      return { initialBytes: this.#queued + this.#initialLeft, dirtyBytes: 0 };
    return {
      initialBytes: Math.max(0, this.#initialEnd - this.bytesOut),
      dirtyBytes: produced - Math.max(this.bytesOut, this.#initialEnd) + pendingDirty,
    };
  }
  /** Stream offset where the first pass ended (-1 while it runs). */
  #initialEnd = -1;

  /** Estimate of what stop-copy still has to move (MIG_DATA_SIZE). */
  stopCopyEstimate(): number {
    const kit = this.image.kit ? this.image.kit.save().length + RECORD_OVERHEAD : 0;
    const state = this.image.saveState().length + this.image.configSize + 3 * RECORD_OVERHEAD + kit;
    return this.#queued + this.#initialLeft + this.#dirtyBytes() + state;
  }

  /** Bytes of changed pages found by the last scan and not yet queued. */
  #dirtyBytes(): number {
    return this.#dirty.reduce((a, d) => a + d.pages.length * PAGE, 0);
  }

  /** How much of memory `mem` the stream has covered (the first pass may not have reached it). */
  #sentUpTo(mem: number, size: number): number {
    const c = this.#cursor;
    if (!c || c.mem > mem) return size;
    return c.mem === mem ? c.off : 0;
  }

  /**
   * Finds pages changed since they were sent (memories the client writes through mmap too):
   * a whole pass, as the final scan after stop() does.
   */
  scan(): number {
    this.#scanAt = { mem: 0, off: 0 };
    return this.#scanSome(Infinity);
  }

  /** Goes on with the pass for changed pages when nothing is queued or dirty (fresh estimates). */
  refresh(): void {
    if (this.#initialEnd >= 0 && this.#queued === 0 && !this.#dirty.some(d => d.pages.length))
      this.#scanSome(SCAN_STEP);
  }

  /**
   * Goes on with the current pass over memory for up to `budget` bytes: a request running
   * while the device runs does a bounded share of a pass, never one that grows with memory
   * size. Blocks of SCAN_BLOCK bytes are compared first (memcmp at memory bandwidth); only a
   * block that differs is compared page by page. Returns the pages found.
   */
  #scanSome(budget: number): number {
    const mems = this.image.memories,
      at = this.#scanAt;
    if (at.mem === 0 && at.off === 0) this.#dirty = mems.map((_, mem) => ({ mem, pages: [] }));
    let found = 0;
    for (let left = budget; left > 0 && at.mem < mems.length; ) {
      const m = mems[at.mem],
        limit = this.#sentUpTo(at.mem, m.size);
      if (at.off >= limit) {
        at.mem++;
        at.off = 0;
        continue;
      }
      const n = Math.min(SCAN_BLOCK, limit - at.off);
      found += this.#compareBlock(at.mem, at.off, n);
      at.off += n;
      left -= n;
    }
    if (at.mem >= mems.length) this.#scanAt = { mem: 0, off: 0 }; // the pass is complete
    return found;
  }

  #scanAt = { mem: 0, off: 0 };

  /**
   * Compares a block with what was sent; returns the changed pages found (queued as dirty).
   * Where the device tells which blocks were written, a block whose flags are all 0 is
   * skipped: it was equal when last compared (or never sent before the session began) and
   * nothing wrote it since. A block that differs keeps its flags set, so that the next pass
   * compares it again even if the pages found are not sent before that pass drops them.
   */
  #compareBlock(mem: number, blk: number, n: number): number {
    const m = this.image.memories[mem],
      sent = this.#sent[mem].bytes;
    const flags = m.writes?.flags() ?? null,
      bs = m.writes?.blockSize ?? 1;
    const first = Math.floor(blk / bs),
      end = Math.floor((blk + n - 1) / bs) + 1;
    if (flags) {
      if (!flags.subarray(first, end).includes(1)) return 0;
      flags.fill(0, first, end);
    }
    // Zero on both sides, and the memory's side not even read (which would give it pages).
    if (this.#zeroOnBothSides(mem, blk, n)) return 0;
    if (Buffer.compare(m.bytes(blk, n), sent.subarray(blk, blk + n)) === 0) return 0;
    const pages = this.#dirty[mem].pages;
    let found = 0;
    for (let off = blk; off < blk + n; off += PAGE) {
      const k = Math.min(PAGE, m.size - off);
      if (Buffer.compare(m.bytes(off, k), sent.subarray(off, off + k)) !== 0) {
        pages.push(off / PAGE);
        found++;
      }
    }
    if (flags && found) flags.fill(1, first, end);
    return found;
  }

  /** The device stopped (STOP_COPY): what follows is the final state. */
  stop(): void {
    this.#stopped = true;
  }

  /**
   * Up to `max` bytes of stream; empty when nothing is available now (or ever, once finished).
   * The result is valid until the next call (its buffer is reused).
   */
  read(max: number): Uint8Array {
    const n = this.#prepare(max);
    if (this.#out.length < n) this.#out = new Uint8Array(Math.max(n, 64 * 1024));
    return this.#take(this.#out.subarray(0, n));
  }

  /** Like read(), into `dest` (up to its length); returns the number of bytes written. */
  readInto(dest: Uint8Array): number {
    return this.#take(dest.subarray(0, this.#prepare(dest.length))).length;
  }

  /**
   * Like read(), but as views of the stream's own bytes (records, and memory as copied into
   * the shadow) instead of a copy: at most `maxParts` views, so possibly fewer bytes than
   * there are. The views are valid until the next call.
   */
  readParts(max: number, maxParts = 64): { parts: Uint8Array[]; bytes: number } {
    const n = this.#prepare(max),
      parts: Uint8Array[] = [];
    let at = 0;
    while (at < n && parts.length + 3 <= maxParts) {
      const q = this.#queue[0];
      const len = q.length,
        take = Math.min(len - this.#head, n - at);
      if (q instanceof Uint8Array) parts.push(q.subarray(this.#head, this.#head + take));
      else viewsOf(q, this.#head, take, parts);
      at += take;
      this.#head += take;
      if (this.#head === len) {
        this.#queue.shift();
        this.#head = 0;
      }
    }
    this.#queued -= at;
    this.bytesOut += at;
    return { parts, bytes: at };
  }

  #prepare(max: number): number {
    max = Math.min(max, this.maxChunk);
    while (this.#queued < max && this.#refill()) {
      /* fill */
    }
    return Math.min(max, this.#queued);
  }

  #take(out: Uint8Array): Uint8Array {
    const n = out.length;
    let at = 0;
    while (at < n) {
      const q = this.#queue[0];
      const len = q.length,
        take = Math.min(len - this.#head, n - at);
      if (q instanceof Uint8Array) out.set(q.subarray(this.#head, this.#head + take), at);
      else copyMem(q, this.#head, out.subarray(at, at + take));
      at += take;
      this.#head += take;
      if (this.#head === len) {
        this.#queue.shift();
        this.#head = 0;
      }
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
      while (c.mem < mems.length && c.off >= mems[c.mem].size) {
        c.mem++;
        c.off = 0;
      }
      if (c.mem >= mems.length) {
        this.#cursor = null;
        this.#initialEnd = this.bytesOut + this.#queued;
        return true;
      }
      const m = mems[c.mem],
        len = Math.min(RUN, m.size - c.off);
      this.#emit(c.mem, c.off, len);
      this.#initialLeft -= len;
      c.off += len;
      return true;
    }
    if (!this.#dirty.some(d => d.pages.length) && (this.#stopped || this.#queued === 0)) {
      if (this.#ended) return false;
      // Running: the pass goes on by a step whenever the queue drains. Stopped: one last,
      // whole scan is all there is to find.
      if (!this.#stopped) this.#scanSome(SCAN_STEP);
      else if (!this.#finalScan) {
        this.scan();
        this.#finalScan = true;
      }
    }
    const d = this.#dirty.find(x => x.pages.length);
    if (d) {
      // A run of consecutive changed pages, up to RUN bytes.
      const first = d.pages.shift()!;
      let last = first;
      while (d.pages[0] === last + 1 && (last + 1 - first + 1) * PAGE <= RUN)
        last = d.pages.shift()!;
      const m = mems[d.mem],
        off = first * PAGE;
      this.#emit(d.mem, off, Math.min((last + 1) * PAGE, m.size) - off);
      return true;
    }
    if (this.#stopped && !this.#ended) {
      this.#pushState();
      this.#push(record(Rec.END, new Uint8Array(0)));
      this.#ended = true;
      return true;
    }
    return false;
  }

  /**
   * Queues a MEMORY record. The live memory is copied once, into the shadow of what was sent,
   * and hashed in the same pass; the record's check and bytes come from that copy, so a
   * concurrent write by the client can neither break the check nor hide from the next scan.
   */
  #emit(mem: number, off: number, len: number): void {
    if (this.#zeroOnBothSides(mem, off, len)) {
      // Never written, and the shadow already holds its zeros: the record's bytes are zeros
      // too, and the memory is not read (which would give every page of it a page).
      const zeros = ZEROS.subarray(0, len);
      this.#push({ ...memoryRecord(mem, off, zeros, zeroRunHash(len)), data: zeros });
      return;
    }
    const { bytes, zero } = this.#sent[mem];
    zero.fill(0, Math.floor(off / RUN), Math.floor((off + len - 1) / RUN) + 1);
    const shadow = bytes.subarray(off, off + len);
    const sum = copyAndHash(shadow, this.image.memories[mem].bytes(off, len));
    this.#push({ ...memoryRecord(mem, off, shadow, sum), data: shadow });
  }

  /**
   * Whether bytes [off, off + len) (at most RUN of them) are zero in the shadow, known without
   * reading it, and never written in the memory. A write after this look is found by a later
   * scan: the memory then has data where the shadow has zeros.
   */
  #zeroOnBothSides(mem: number, off: number, len: number): boolean {
    const zero = this.#sent[mem].zero;
    const first = Math.floor(off / RUN),
      last = Math.floor((off + len - 1) / RUN);
    if (len > RUN || !zero[first] || !zero[last]) return false;
    return this.image.memories[mem].isHole?.(off, len) ?? false;
  }
}

/** Writes bytes [from, from + out.length) of a memory record. */
function copyMem(r: MemRecord, from: number, out: Uint8Array): void {
  let at = 0,
    pos = from;
  const parts = [r.head, r.data, r.crc];
  let base = 0;
  for (const part of parts) {
    const end = base + part.length;
    if (pos < end && at < out.length) {
      const take = Math.min(end - pos, out.length - at);
      out.set(part.subarray(pos - base, pos - base + take), at);
      at += take;
      pos += take;
    }
    base = end;
  }
}

/** Views of bytes [from, from + n) of a memory record, appended to `out`. */
function viewsOf(r: MemRecord, from: number, n: number, out: Uint8Array[]): void {
  let base = 0;
  for (const part of [r.head, r.data, r.crc]) {
    const end = base + part.length;
    const a = Math.max(from, base),
      b = Math.min(from + n, end);
    if (a < b) out.push(part.subarray(a - base, b - base));
    base = end;
  }
}
