import { type OwnedFd, closeAll } from '@vfu/native';
import { HEADER_SIZE, type Header } from '@vfu/protocol';
import type { Incoming } from './incoming.js';

/**
 * Recycled bodies kept: two, because a client that pipelines (the next MIG_DATA_READ in flight
 * while the last chunk is written on) holds one body while the next arrives, and gives bodies
 * back in either order.
 */
const MAX_SPARES = 2;

/**
 * A message larger than a connection's receive buffer, assembled in a body of its own: the
 * reads go straight into it, and its fds gather until it is whole. Bodies given back (recycle)
 * are kept for the next, so a stream of large messages does not fault fresh memory in for each.
 */
export class LargeMessage {
  #spares: Buffer[] = [];
  #header: Header | null = null;
  #body: Buffer | null = null;
  #have = 0;
  #fds: OwnedFd[] = [];
  #lost = false;

  /** A message is being assembled: the reads go into `body`, from byte `have` on. */
  get active(): boolean {
    return this.#body !== null;
  }
  get body(): Buffer {
    return this.#body!;
  }
  get have(): number {
    return this.#have;
  }

  /** Begins a message of `header.size` bytes with the body bytes already read. */
  start(header: Header, first: Uint8Array): void {
    const size = header.size - HEADER_SIZE;
    this.#body = this.#takeSpare(size) ?? Buffer.allocUnsafeSlow(size); // filled by the reads
    this.#body.set(first, 0);
    this.#header = header;
    this.#have = first.length;
  }

  /** fds that came with the message's bytes (`lost`: some were lost to MSG_CTRUNC). */
  addFds(fds: OwnedFd[], lost: boolean): void {
    if (fds.length > 0) this.#fds = this.#fds.concat(fds);
    this.#lost ||= lost;
  }

  /**
   * `n` more bytes were read into the body, with `fds`. The message once it is whole (`lost`:
   * fds were lost to MSG_CTRUNC; those that came are closed), else null.
   */
  add(n: number, fds: OwnedFd[], lost: boolean): { m: Incoming; lost: boolean } | null {
    this.addFds(fds, lost);
    this.#have += n;
    if (this.#have < this.#body!.length) return null;
    const m: Incoming = { header: this.#header!, payload: this.#body!, fds: this.#fds };
    const wasLost = this.#lost;
    this.#reset();
    if (wasLost) {
      closeAll(m.fds);
      m.fds = [];
    }
    return { m, lost: wasLost };
  }

  /** Keeps a body given back for the next message (the largest MAX_SPARES). */
  recycle(store: ArrayBuffer): void {
    if (store === this.#body?.buffer) return;
    const spares = this.#spares;
    if (spares.some(s => s.buffer === store)) return; // given back twice: keep it once
    if (spares.length < MAX_SPARES) {
      spares.push(Buffer.from(store));
      return;
    }
    const smallest = spares[0].byteLength <= spares[1].byteLength ? 0 : 1;
    if (spares[smallest].byteLength < store.byteLength) spares[smallest] = Buffer.from(store);
  }

  /** The connection ended: the fds of a message half read are closed, nothing is kept. */
  clear(): void {
    closeAll(this.#fds);
    this.#reset();
    this.#spares = [];
  }

  #reset(): void {
    this.#body = null;
    this.#header = null;
    this.#have = 0;
    this.#fds = [];
    this.#lost = false;
  }

  /** A recycled body of at least `n` bytes (cut to `n`), if one is kept. */
  #takeSpare(n: number): Buffer | null {
    const i = this.#spares.findIndex(s => s.length >= n);
    if (i < 0) return null;
    const [spare] = this.#spares.splice(i, 1);
    return spare.subarray(0, n);
  }
}
