// What the server tests share: a small device declared here, a server listening in a temporary
// directory of this process, and a raw client end that sees every message the server sends.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PciDevice,
  RegionAccessError,
  bar,
  defineDevice,
  registers,
  u32,
  type DeviceDefinition,
} from '@vfu/pci';
import { Errno, Flag, encodeVersion, type Header } from '@vfu/protocol';
import type { OwnedFd } from '@vfu/native';
import { Connection, dial, type Incoming } from '@vfu/transport';
import { VfioUserServer, type Logger, type ServerOptions } from '@vfu/server';

export const PROBE_ID = 0x5e1f7e57;
/** BAR 0 registers of the probe device. */
export const Reg = { ID: 0x0, SCRATCH: 0x4, DOORBELL: 0x8, BUSY: 0xc } as const;

/**
 * The probe: a register file, a doorbell that raises its interrupt, a register whose writes the
 * device refuses with EBUSY, and a mappable BAR 2 shared with the client.
 */
const probe = defineDevice({
  id: 'probe',
  version: 1,
  description: 'registers, a doorbell, a refusing register and a shared BAR',
  pci: { vendor: 0x1b36, device: 0x0110, classCode: 0xff0000, pin: 1 },
  state: { scratch: u32, rings: u32 },
  memories: () => ({ shared: 4096 }),
  bars: dev => ({
    0: bar(
      'mem32',
      registers(4096, dev.state, [
        { offset: Reg.ID, width: 4, read: () => PROBE_ID },
        {
          offset: Reg.SCRATCH,
          width: 4,
          read: s => s.scratch,
          write: (s, v) => {
            s.scratch = Number(v);
          },
        },
        {
          offset: Reg.DOORBELL,
          width: 4,
          read: s => s.rings,
          write: s => {
            s.rings++;
            dev.irq.raise();
          },
        },
        {
          offset: Reg.BUSY,
          width: 4,
          write: () => {
            throw new RegionAccessError(Errno.EBUSY, 'the probe is busy');
          },
        },
      ]),
    ),
    2: bar('mem32', dev.memory('shared')),
  }),
});

/** Warnings and errors the server logged, kept for assertions (never waited on). */
class LogLines implements Logger {
  readonly lines: string[] = [];
  error(m: string): void {
    this.lines.push(`error ${m}`);
  }
  warn(m: string): void {
    this.lines.push(`warn ${m}`);
  }
  info(): void {}
  debug(): void {}
}

export interface Served {
  server: VfioUserServer;
  device: PciDevice;
  socket: string;
  log: LogLines;
  stop(): void;
}

/** A probe device served on a socket in a fresh temporary directory. */
export function serve(options: Partial<ServerOptions> = {}): Served {
  const dir = mkdtempSync(join(tmpdir(), 'vfu-server-test-'));
  const socket = join(dir, 'probe.sock');
  // Any model, as the app holds them: the server takes a PciDevice of any state schema.
  const device: PciDevice = options.device ?? new PciDevice(probe as DeviceDefinition<any>);
  const log = new LogLines();
  const server = new VfioUserServer({ device, socketPath: socket, log, ...options }).listen();
  return {
    server,
    device,
    socket,
    log,
    stop: () => {
      server.close();
      device.release();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A client end that hands every message from the server to the test in arrival order (replies
 * and error replies alike), so a test sees exactly what was sent and what was not.
 */
export class Wire {
  readonly conn: Connection;
  /** Resolves with the reason once the connection has ended. */
  readonly ended: Promise<string>;
  readonly #got: Incoming[] = [];
  #waiter: ((m: Incoming) => void) | null = null;
  #nextId = 100;

  private constructor(fd: OwnedFd) {
    this.conn = new Connection(fd, { maxMessageSize: 2 << 20, maxFdsPerMessage: 16 });
    this.conn.onMessage = m => this.#arrived(m);
    this.ended = new Promise(resolve => {
      this.conn.onClose = resolve;
    });
  }

  /** Connects to the server at `socket`. */
  static async open(socket: string): Promise<Wire> {
    return new Wire(await dial(socket));
  }

  #arrived(m: Incoming): void {
    const w = this.#waiter;
    this.#waiter = null;
    if (w) w(m);
    else this.#got.push(m);
  }

  /** A message id not used before on this wire. */
  id(): number {
    return this.#nextId++ & 0xffff;
  }

  send(bytes: Uint8Array, fds: number[] = []): void {
    this.conn.send(bytes, fds);
  }

  /** The next message from the server (a test's timeout bounds the wait). */
  next(): Promise<Incoming> {
    const m = this.#got.shift();
    if (m) return Promise.resolve(m);
    return new Promise(resolve => {
      this.#waiter = resolve;
    });
  }

  /** Messages that arrived and were not taken yet. */
  get unread(): number {
    return this.#got.length;
  }

  /** Sends VERSION with `json` and returns the reply. */
  async negotiate(json = '{}'): Promise<Incoming> {
    this.send(encodeVersion(0, false, 0, 0, json));
    return this.next();
  }

  close(): void {
    this.conn.close();
  }
}

/** The errno of an error reply, or 0 for a successful one. */
export const errnoOf = (h: Header): number => (h.flags & Flag.ERROR ? h.error : 0);
