import { pollFd, type PollHandle } from './libc.js';

/**
 * Readiness callbacks for one fd on Node's event loop (libuv poll, no threads). Keeps its
 * handle referenced (an unreferenced handle is garbage-collected and silently stops firing)
 * and must be closed before the fd is.
 */
export class FdWatcher {
  static readonly #live = new Set<FdWatcher>();
  #handle: PollHandle | null;
  #writable = false;

  constructor(
    readonly fd: number,
    private readonly onEvent: (ev: {
      readable: boolean;
      writable: boolean;
      hangup: boolean;
    }) => void,
  ) {
    this.#handle = pollFd(fd, { readable: true }, ev =>
      this.onEvent({ readable: ev.readable, writable: ev.writable, hangup: ev.disconnect }),
    );
    FdWatcher.#live.add(this);
  }

  #readable = true;
  /** Also report writability (while a send queue waits for EAGAIN to clear). */
  wantWritable(on: boolean): void {
    this.setInterest(this.#readable, on);
  }
  /** Stop or resume reporting readability (backpressure). */
  wantReadable(on: boolean): void {
    this.setInterest(on, this.#writable);
  }
  private setInterest(readable: boolean, writable: boolean): void {
    if (!this.#handle || (readable === this.#readable && writable === this.#writable)) return;
    this.#readable = readable;
    this.#writable = writable;
    if (!readable && !writable) {
      this.#handle.stop();
      return;
    }
    this.#handle.start({ readable, writable });
  }

  /** Stops watching; the event loop may exit once nothing else holds it. */
  unref(): void {
    this.#handle?.unref();
  }

  close(): void {
    if (!this.#handle) return;
    this.#handle.stop();
    this.#handle.close();
    this.#handle = null;
    FdWatcher.#live.delete(this);
  }
}
