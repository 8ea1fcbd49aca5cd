// Cutting a stream into records as its bytes arrive in any chunking, each record's length
// bounded and its check verified before anyone uses it. The one parser of the record layer:
// a destination loading a device (load.ts) and a tool reading a saved file use it alike.
import { crc32 } from 'node:zlib';
import { hash } from '@vfu/native';
import { RECORD_OVERHEAD, MAX_RECORD_PAYLOAD, MEMORY_HEAD, Rec, memoryCheck } from './format.js';

/** Why bytes are not a record; the framer stays failed after the first. */
export class RecordError extends Error {
  override readonly name = 'RecordError';
}

/**
 * Takes a whole MEMORY record whose check is not verified yet, and `dataHash`, the hash its
 * data bytes must have (see memoryCheck). It must verify before anything relies on the bytes:
 * copy them where they go with copyAndHash and compare (the check then costs no pass of its
 * own), and undo the copy and throw if they differ.
 */
export type MemoryRecordSink = (r: Uint8Array, dataHash: number) => void;

export class RecordFramer {
  #buf = new Uint8Array(64 * 1024);
  #have = 0;
  #error: string | null = null;
  #next = 0; // stream offset of the next record
  /** Records taken so far (the one being passed on included). */
  records = 0;
  /** Stream offset of the record being passed on (of the last one, after). */
  at = 0;

  /**
   * `onRecord` gets each whole, checked record (type to check); it may throw to stop.
   * MEMORY records go to `onMemory` if given, their data unverified (see MemoryRecordSink);
   * without it the framer verifies them too, in a pass of its own.
   */
  constructor(
    readonly onRecord: (r: Uint8Array) => void,
    readonly onMemory?: MemoryRecordSink,
  ) {}

  /** Bytes of a record begun and not yet complete. */
  get pending(): number {
    return this.#have;
  }

  /** Takes the next bytes. Throws RecordError on a record too long or corrupted. */
  write(data: Uint8Array): void {
    if (this.#error) throw new RecordError(this.#error);
    let off = 0;
    while (off < data.length) {
      // Fast path: a whole record inside this write is passed on where it lies (no copy).
      if (this.#have === 0 && data.length - off >= 8) {
        const len = this.#length(new DataView(data.buffer, data.byteOffset + off, 8));
        if (data.length - off >= len + RECORD_OVERHEAD) {
          this.#emit(data.subarray(off, off + len + RECORD_OVERHEAD));
          off += len + RECORD_OVERHEAD;
          continue;
        }
      }
      if (this.#have < 8) {
        const n = Math.min(8 - this.#have, data.length - off);
        this.#buf.set(data.subarray(off, off + n), this.#have);
        this.#have += n;
        off += n;
        if (this.#have < 8) break;
      }
      const total = this.#length(new DataView(this.#buf.buffer)) + RECORD_OVERHEAD;
      if (this.#buf.length < total) {
        const b = new Uint8Array(total);
        b.set(this.#buf.subarray(0, this.#have));
        this.#buf = b;
      }
      const n = Math.min(total - this.#have, data.length - off);
      this.#buf.set(data.subarray(off, off + n), this.#have);
      this.#have += n;
      off += n;
      if (this.#have < total) break;
      this.#have = 0;
      this.#emit(this.#buf.subarray(0, total));
    }
  }

  #fail(msg: string): never {
    this.#error = msg;
    throw new RecordError(msg);
  }

  /** The payload length a record head announces, refused before anything is buffered. */
  #length(head: DataView): number {
    const len = head.getUint32(4, true);
    if (len > MAX_RECORD_PAYLOAD)
      this.#fail(`record of ${len} bytes exceeds ${MAX_RECORD_PAYLOAD} (corrupted stream?)`);
    return len;
  }

  #emit(r: Uint8Array): void {
    const len = r.length - RECORD_OVERHEAD;
    const sum = new DataView(r.buffer, r.byteOffset + 8 + len, 4).getUint32(0, true);
    this.at = this.#next;
    this.#next += r.length;
    this.records++;
    if (r[0] === Rec.MEMORY && r[1] === 0 && len >= MEMORY_HEAD - 8) {
      const dataHash = (sum ^ memoryCheck(r, 0)) >>> 0;
      if (this.onMemory) {
        this.onMemory(r, dataHash);
        return;
      }
      if (hash(r.subarray(MEMORY_HEAD, 8 + len)) !== dataHash) this.#mismatch();
    } else if (crc32(r.subarray(0, 8 + len)) !== sum) this.#mismatch();
    this.onRecord(r);
  }

  #mismatch(): never {
    this.#fail(
      `checksum mismatch in record ${this.records} (at byte ${this.at} of the stream): ` +
        'the stream was corrupted in transfer',
    );
  }
}
