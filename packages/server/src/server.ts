import { Listener, Connection } from '@vfu/transport';
import { Errno, type DmaLayout } from '@vfu/protocol';
import type { OwnedFd } from '@vfu/native';
import type { PciDevice } from '@vfu/pci';
import { Session } from './session.js';
import { deviceHandlers, type HandlerTable } from './handlers.js';
import { defaultLimits, type ServerLimits } from './limits.js';
import { Migration } from './migration/index.js';
import { silentLogger, type Logger } from './logger.js';

export interface ServerOptions {
  device: PciDevice;
  socketPath: string;
  limits?: Partial<ServerLimits>;
  /**
   * Layout of DMA_READ/DMA_WRITE. 'spec' (default): u64 count, data at 16 — what QEMU 11.1.3
   * actually accepts and sends (tested against it). 'qemu': u32 count, data at 12, the layout
   * QEMU's client declares (VFIOUserDMARW, protocol.md §3.9); kept for builds that use it.
   */
  dmaLayout?: DmaLayout;
  /**
   * What a client's disconnect does to the device: reset it (default) or keep its state for the
   * next client.
   */
  onDisconnect?: 'reset' | 'keep';
  /** Advertise migration (v2 features and the v1 region). */
  migration?: { v1Region?: boolean } | false;
  /** Where the server logs, by level (a pino logger fits); nothing is logged without one. */
  log?: Logger;
  trace?: (line: string) => void;
  /**
   * How long (µs) the connection waits in recvmsg for a client's next message after answering
   * all of a wake-up's messages in place, before it returns to the event loop (default 50; 0
   * never waits). Saves the event loop's wake-up on round trips; other work waits up to this
   * long meanwhile.
   */
  lingerUs?: number;
}

/** A round-trip client's next message comes within a few µs of our reply; 50 µs covers it. */
const DEFAULT_LINGER_US = 50;

/**
 * A vfio-user server for one device: one client at a time (a second is refused with EBUSY);
 * when a client goes, its fds and mappings are released and the next one can attach.
 */
export class VfioUserServer {
  readonly device: PciDevice;
  readonly limits: ServerLimits;
  readonly migration: Migration | null;
  #listener: Listener | null = null;
  #session: Session | null = null;
  #sessions = 0;
  #waiters: (() => void)[] = [];
  readonly #log: Logger;

  constructor(readonly options: ServerOptions) {
    this.device = options.device;
    this.limits = { ...defaultLimits, ...options.limits };
    this.#log = options.log ?? silentLogger;
    this.device.log = m => this.#log.warn(`device: ${m}`);
    this.migration =
      options.migration === false
        ? null
        : new Migration(this.device, {
            v1Region: options.migration?.v1Region ?? true,
            log: this.#log,
          });
  }

  listen(): this {
    this.#listener = Listener.listen(this.options.socketPath, fd => this.#accept(fd));
    this.#listener.onError = e => this.#log.error(`failed to accept a connection: ${e.message}`);
    return this;
  }

  get connected(): boolean {
    return this.#session !== null;
  }
  get sessionsServed(): number {
    return this.#sessions;
  }

  /** Resolves when the current client (if any) has gone. */
  idle(): Promise<void> {
    return this.#session ? new Promise(r => this.#waiters.push(r)) : Promise.resolve();
  }

  #accept(fd: OwnedFd): void {
    const conn = new Connection(fd, {
      maxMessageSize: this.limits.maxMessageSize,
      maxFdsPerMessage: this.limits.maxMsgFds,
      trace: this.options.trace,
      lingerUs: this.options.lingerUs ?? DEFAULT_LINGER_US,
    });
    if (this.#session) {
      this.#log.warn('refused a second client: one client at a time (EBUSY)');
      conn.onMessage = m => {
        m.fds.forEach(f => f.close());
        conn.replyError(m.header, Errno.EBUSY);
        conn.close('busy');
      };
      return;
    }
    const handlers: HandlerTable = {
      ...deviceHandlers,
      ...(this.migration?.handlers ?? {}),
    };
    const session = new Session(
      conn,
      this.device,
      this.limits,
      {
        handlers,
        extraRegions: this.migration?.extraRegions ?? [],
        regionCaps: this.migration?.regionCaps ?? new Map(),
        onReset: reason => this.migration?.onDeviceReset(reason),
        migration: this.migration !== null,
      },
      this.#log,
      this.options.dmaLayout ?? 'spec',
    );
    this.#session = session;
    this.#sessions++;
    this.#log.info('client connected');
    conn.onClose = reason => {
      session.end();
      this.migration?.v1?.clientLeft();
      if ((this.options.onDisconnect ?? 'reset') === 'reset') {
        this.device.reset();
        this.migration?.onDeviceReset('client disconnected');
        this.device.setRunning(true);
      } else this.migration?.clientGone();
      this.#session = null;
      this.#log.info(`client disconnected (${reason}); ready for the next`);
      for (const w of this.#waiters.splice(0)) w();
    };
  }

  close(): void {
    this.#listener?.close();
    this.#listener = null;
    this.#session?.conn.close('server shutting down');
  }
}
