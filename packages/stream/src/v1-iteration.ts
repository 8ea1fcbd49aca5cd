// The v1 save iteration (protocol.md §7.5) over a SaveSession, pure: reading
// pending_bytes starts an iteration (and consumes the chunk before it), the first data_offset
// read of an iteration prepares a chunk, and the chunk (offset and size) stays the same until
// pending_bytes is read again. The v1 migration region adapts registers to this.
import type { SaveSession } from './save.js';

export class V1SaveIteration {
  readonly #chunk: Uint8Array;
  #size = 0;
  #prepared = false;
  #readMax = 0; // highest byte of the chunk read so far
  #reoffer = false;

  /** `chunk`: where chunks are prepared (the data window); its length is the largest chunk. */
  constructor(
    private readonly save: SaveSession,
    chunk: Uint8Array,
  ) {
    this.#chunk = chunk;
  }

  /** pending_bytes: consumes a prepared chunk; 0 in stop-and-copy means the save is complete. */
  pendingBytes(): number {
    if (this.#prepared) {
      this.#prepared = false;
      this.#size = 0;
    }
    if (this.save.stopped)
      return this.save.finished && !this.#reoffer ? 0 : Math.max(1, this.save.stopCopyEstimate());
    const p = this.save.precopyInfo();
    return p.initialBytes + p.dirtyBytes;
  }

  /** First data_offset read of an iteration: prepares the next chunk. Returns its size. */
  prepare(): number {
    if (!this.#prepared) {
      if (this.#reoffer) this.#reoffer = false;
      else this.#size = this.save.readInto(this.#chunk);
      this.#prepared = true;
      this.#readMax = 0;
    }
    return this.#size;
  }

  /**
   * data_size: the prepared chunk's size, or null when no chunk is prepared (read out of order).
   */
  get dataSize(): number | null {
    return this.#prepared ? this.#size : null;
  }

  /** Bytes of the prepared chunk, or null outside it. */
  read(offset: number, len: number): Uint8Array | null {
    if (!this.#prepared || offset < 0 || offset + len > this.#size) return null;
    this.#readMax = Math.max(this.#readMax, offset + len);
    return this.#chunk.subarray(offset, offset + len);
  }

  /** The client read the whole chunk where reads are not seen (through a mapping of the window). */
  markRead(): void {
    if (this.#prepared) this.#readMax = this.#size;
  }

  /**
   * Pre-copy -> stop-and-copy keeps the stream; the iteration restarts (QEMU reads
   * pending_bytes first). A chunk not wholly read is offered again (§9), not lost.
   */
  onStopCopy(): void {
    if (this.#prepared && this.#readMax < this.#size) this.#reoffer = true;
    else this.#size = 0;
    this.#prepared = false;
  }
}
