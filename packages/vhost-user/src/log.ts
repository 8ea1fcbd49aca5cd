// The front-end's dirty log (vhost-user.rst "Migration"): one bit per 4 KiB page of guest
// physical address space, in shared memory the front-end passed with SET_LOG_BASE.
import { MappedMemory, type OwnedFd } from '@vfu/native';
import { LOG_PAGE } from './constants.js';

export class DirtyLog {
  readonly #map: MappedMemory;
  readonly #bits: Uint8Array;
  /** Pages a write touched that lie beyond the log (the front-end sized it too small). */
  outside = 0;

  constructor(fd: OwnedFd, size: number, offset: number) {
    try {
      const start = offset - (offset % 4096);
      this.#map = MappedMemory.map(fd.fd, start, size + (offset - start));
      this.#bits = this.#map.bytes(offset - start, size);
    } finally {
      fd.close(); // the mapping keeps the memory
    }
  }

  get size(): number {
    return this.#bits.length;
  }

  /** Marks every page of [address, +len) dirty (atomically: the front-end clears bits as we go). */
  mark(address: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(address / LOG_PAGE);
    const last = Math.floor((address + len - 1) / LOG_PAGE);
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= this.#bits.length) {
        this.outside++;
        continue;
      }
      Atomics.or(this.#bits, byte, 1 << (page % 8));
    }
  }

  release(): void {
    this.#map.release();
  }
}
