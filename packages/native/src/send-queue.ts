import { closeAll, dupFd, type OwnedFd } from './fd.js';
import type { MessageSocket } from './socket.js';
import type { FdWatcher } from './watch.js';

interface Waiting {
  bytes: Uint8Array;
  fds: OwnedFd[];
}

const NO_NUMBERS: readonly number[] = [];
const NO_PARTS: readonly Uint8Array[] = [];

/**
 * The bytes a non-blocking socket did not take at once, sent in order as it drains. A waiting
 * message's bytes are copied (the caller may reuse its buffer) and its fds duplicated (the caller
 * may close its own): they go with its first byte. Socket errors are thrown (NativeError). With a
 * watcher, writability is watched exactly while something waits.
 */
export class SendQueue {
  #waiting: Waiting[] = [];
  #bytes = 0;

  constructor(
    readonly socket: MessageSocket,
    readonly watcher?: FdWatcher,
  ) {}

  /** Bytes waiting to be sent. */
  get bytes(): number {
    return this.#bytes;
  }

  get empty(): boolean {
    return this.#waiting.length === 0;
  }

  /**
   * Sends `data`, then the `more` parts, with borrowed `fds` on its first byte: at once as far as
   * the socket takes it when nothing waits before it, the rest queued behind what waits.
   */
  send(
    data: Uint8Array,
    fds: readonly number[] = NO_NUMBERS,
    more: readonly Uint8Array[] = NO_PARTS,
  ): void {
    const n = this.empty ? this.socket.send(data, fds, more) : 0;
    if (n < data.length) this.#push(data.subarray(n), n > 0 ? [] : fds.map(f => dupFd(f)));
    let at = data.length;
    for (const part of more) {
      if (n < at + part.length) this.#push(part.subarray(Math.max(0, n - at)), []);
      at += part.length;
    }
  }

  /** Sends what waits as far as the socket takes it: true once nothing waits. */
  flush(): boolean {
    while (this.#waiting.length > 0) {
      const first = this.#waiting[0];
      const n = this.socket.send(
        first.bytes,
        first.fds.map(f => f.fd),
      );
      if (n === 0) return false;
      closeAll(first.fds);
      first.fds = [];
      this.#bytes -= n;
      if (n < first.bytes.length) {
        first.bytes = first.bytes.subarray(n);
        return false;
      }
      this.#waiting.shift();
    }
    this.watcher?.wantWritable(false);
    return true;
  }

  /** Drops what waits (closing its fds): the connection is going away. */
  clear(): void {
    for (const w of this.#waiting) closeAll(w.fds);
    this.#waiting = [];
    this.#bytes = 0;
  }

  #push(bytes: Uint8Array, fds: OwnedFd[]): void {
    this.#waiting.push({ bytes: Uint8Array.from(bytes), fds });
    this.#bytes += bytes.length;
    this.watcher?.wantWritable(true);
  }
}
