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

  constructor(readonly fd: number, private readonly onEvent: (ev: { readable: boolean; writable: boolean; hangup: boolean }) => void) {
    this.#handle = pollFd(fd, { readable: true }, ev => this.onEvent({ readable: ev.readable, writable: ev.writable, hangup: ev.disconnect }));
    FdWatcher.#live.add(this);
  }

  /** Also report writability (while a send queue waits for EAGAIN to clear). */
  wantWritable(on: boolean): void {
    if (!this.#handle || on === this.#writable) return;
    this.#writable = on;
    this.#handle.start({ readable: true, writable: on }, () => {});
  }

  /** Stops watching; the event loop may exit once nothing else holds it. */
  unref(): void { this.#handle?.unref(); }

  close(): void {
    if (!this.#handle) return;
    this.#handle.stop();
    this.#handle.close();
    this.#handle = null;
    FdWatcher.#live.delete(this);
  }
}
