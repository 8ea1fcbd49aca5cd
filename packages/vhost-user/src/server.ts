// A back-end listening on a UNIX socket path (vhost-user.rst "Backend program conventions":
// --socket-path): one front-end at a time; when it goes, the next may connect.
import { FdWatcher, acceptUnix, listenUnix, type OwnedFd } from '@vfu/native';
import { unlinkSync } from 'node:fs';
import { BackendSession, type BackendOptions } from './backend.js';
import { VhostConnection } from './connection.js';
import type { VhostUserDevice } from './device.js';

export interface ServerOptions extends BackendOptions {
  /** One line per message in and out. */
  trace?: (line: string) => void;
}

export class VhostUserServer {
  readonly #listen: OwnedFd;
  readonly #watch: FdWatcher;
  #session: BackendSession | null = null;
  /** Called when a front-end connects and when it goes. */
  onSession: (s: BackendSession | null, reason?: string) => void = () => {};

  constructor(
    readonly path: string,
    readonly device: VhostUserDevice,
    readonly options: ServerOptions = {},
  ) {
    this.#listen = listenUnix(path);
    this.#watch = new FdWatcher(this.#listen.fd, () => this.#accept());
  }

  get session(): BackendSession | null {
    return this.#session;
  }

  #accept(): void {
    for (let fd = acceptUnix(this.#listen.fd); fd; fd = acceptUnix(this.#listen.fd)) {
      if (this.#session) {
        this.options.log?.('a second front-end connected while one is served: refused');
        fd.close();
        continue;
      }
      const conn = new VhostConnection(fd, { trace: this.options.trace });
      // Set before the session wraps it (the session tears itself down first, then this runs).
      conn.onClose = reason => {
        this.#session = null;
        this.onSession(null, reason);
      };
      const session = new BackendSession(conn, this.device, this.options);
      this.#session = session;
      this.onSession(session);
    }
  }

  close(): void {
    this.#watch.close();
    this.#listen.close();
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
