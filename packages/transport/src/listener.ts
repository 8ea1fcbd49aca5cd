import { existsSync, unlinkSync, statSync } from 'node:fs';
import {
  E,
  FdWatcher,
  type OwnedFd,
  acceptUnix,
  connectUnix,
  listenUnix,
  NativeError,
  someoneListens,
} from '@vfu/native';

/** A listening UNIX socket that hands each accepted connection's fd to `onConnection`. */
export class Listener {
  readonly #fd: OwnedFd;
  readonly #watch: FdWatcher;
  #closed = false;

  /** Called when accepting fails (e.g. EMFILE: out of fds); the listener keeps listening. */
  onError: (e: Error) => void = () => {};

  private constructor(
    readonly path: string,
    fd: OwnedFd,
    onConnection: (fd: OwnedFd) => void,
  ) {
    this.#fd = fd;
    this.#watch = new FdWatcher(fd.fd, () => {
      try {
        while (!this.#closed) {
          const c = acceptUnix(this.#fd.fd);
          if (!c) break;
          try {
            onConnection(c);
          } catch (e) {
            c.close();
            this.onError(e as Error);
          }
        }
      } catch (e) {
        this.onError(e as Error);
        // Out of fds: the pending connection stays queued; try again shortly rather than spin.
        this.#watch.wantReadable(false);
        setTimeout(() => {
          if (!this.#closed) this.#watch.wantReadable(true);
        }, 100).unref();
      }
    });
  }

  /**
   * Listens on `path`. A socket file left by a dead process is replaced; one that a live
   * process still accepts on is refused (EADDRINUSE), as is any other existing file.
   */
  static listen(path: string, onConnection: (fd: OwnedFd) => void): Listener {
    if (existsSync(path)) {
      if (!statSync(path).isSocket())
        throw new NativeError('bind', 98, `${path} exists and is not a socket`);
      if (someoneListens(path))
        throw new NativeError('bind', 98, `${path} is in use by another server`);
      unlinkSync(path);
    }
    return new Listener(path, listenUnix(path), onConnection);
  }

  close(removeSocket = true): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    this.#fd.close();
    if (removeSocket)
      try {
        unlinkSync(this.path);
      } catch {
        /* already gone */
      }
  }
}

/**
 * Connects to a server socket. A server whose queue of pending connections is full is tried
 * again every 10 ms until it takes the connection or `timeoutMs` has passed (ETIMEDOUT).
 */
export async function dial(path: string, timeoutMs = 5000): Promise<OwnedFd> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return connectUnix(path);
    } catch (e) {
      if (!(e instanceof NativeError) || e.errno !== E.EAGAIN) throw e;
      if (performance.now() >= deadline)
        throw new NativeError(
          'connect',
          E.ETIMEDOUT,
          `${path}: the server took no connection within ${timeoutMs} ms (its queue is full)`,
        );
      await new Promise(retry => setTimeout(retry, 10));
    }
  }
}
