import { c, errno, pollFd, type PollHandle } from './libc.js';
import { NativeError } from './errors.js';

const EPOLL_CLOEXEC = 0o2000000;
// Opened with the module, so that it is part of any fd count taken after loading it.
let probe = c.epollCreate1(EPOLL_CLOEXEC);
/**
 * Refuses an fd epoll cannot watch (a regular file, a memfd, most devices: EPERM) with a
 * NativeError, tried on an epoll instance of its own (opened once, so that the check needs no
 * fd of its own when the process is out of them): handed such an fd, koffi's poll aborts the
 * whole process instead of throwing.
 */
function checkPollable(fd: number): void {
  if (probe < 0) probe = c.epollCreate1(EPOLL_CLOEXEC);
  if (probe < 0) throw new NativeError('epoll_create1', errno());
  const event = Buffer.alloc(12);
  event.writeUInt32LE(1 /* EPOLLIN */, 0);
  if (c.epollCtl(probe, 1 /* EPOLL_CTL_ADD */, fd, event) < 0)
    throw new NativeError('epoll_ctl', errno(), `fd ${fd} cannot be polled`);
  c.epollCtl(probe, 2 /* EPOLL_CTL_DEL */, fd, event);
}

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
    checkPollable(fd);
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
