// `vfu-migrate receive`: the destination half on the destination's host. It listens, takes the
// first source half that completes the handshake (others are told why and dropped), and plays
// the destination's steps as that half's messages ask: ready the device, take the stream, load
// it and run at the switchover, or reset the device when the migration fails or the wire goes.
import type { Server, Socket } from 'node:net';
import type { VfioUserClient } from '@vfu/client';
import { deviceStatus } from './driver.js';
import { localDestination } from './endpoints.js';
import { deviceIdentity } from './identity.js';
import type { Progress, Report } from './report.js';
import { Msg, receiverNext, type Message, type ReceiverState } from './wire/codec.js';
import { handshake } from './wire/handshake.js';
import { Link } from './wire/link.js';
import { listenTcp, type Address, type TlsFiles } from './wire/socket.js';
import type { LocalDestination } from './destination.js';

export interface ReceiveOptions {
  destination: VfioUserClient;
  listen: Address;
  tls?: TlsFiles | null;
  secret?: Uint8Array;
  /** Longest silence of the source half, and longest wait for any answer (ms). */
  timeoutMs?: number;
  software?: string;
  onListening?: (a: Address) => void;
  onProgress?: (p: Progress) => void;
  /** Connections refused, and why. */
  onRefused?: (peer: string, why: string) => void;
  /** Stops listening if no source half has been taken yet (the report says so). */
  signal?: AbortSignal;
}

/** The destination half's account: the outcome here, and which side holds the device. */
export interface ReceiveReport {
  outcome: 'completed' | 'cancelled' | 'failed';
  protocol: 'v1' | 'v2' | '?';
  /** The side whose device holds the migrated state and may run. */
  holder: 'destination' | 'source';
  destination: { state: string };
  peer: string;
  /** Stream bytes this half passed to its device. */
  bytes: number;
  error?: string;
  /** The source half's own report, when it arrived. */
  source?: Report;
}

/** Listens until one source half has migrated (or failed to) into the destination. */
export function receive(o: ReceiveOptions): Promise<ReceiveReport> {
  return new Promise<ReceiveReport>((resolve, reject) => {
    let busy = false;
    const server: Server = listenTcp(o.tls ?? null, socket => {
      if (busy) return void socket.destroy();
      busy = true;
      accept(socket, o).then(
        rep => {
          busy = rep !== null; // refused at the handshake: listen on
          if (!rep) return;
          server.close();
          resolve(rep);
        },
        e => {
          server.close();
          reject(e);
        },
      );
    });
    server.on('tlsClientError', (e: Error, s: Socket) =>
      o.onRefused?.(`${s.remoteAddress}:${s.remotePort}`, `TLS: ${e.message}`),
    );
    server.once('error', reject);
    o.signal?.addEventListener('abort', () => {
      if (busy) return; // a migration runs: its own bounds end it
      server.close();
      resolve(notTaken(`stopped listening (${o.signal?.reason ?? 'aborted'})`));
    });
    server.listen(o.listen.port, o.listen.host, () => {
      const a = server.address();
      if (a && typeof a === 'object') o.onListening?.({ host: a.address, port: a.port });
    });
  });
}

/** The report of a destination half that took no migration: its device untouched. */
function notTaken(error: string): ReceiveReport {
  return {
    outcome: 'cancelled',
    protocol: '?',
    holder: 'source',
    destination: { state: 'untouched' },
    peer: '',
    bytes: 0,
    error,
  };
}

/** One connection: null if its handshake fails, else the migration's report. */
async function accept(socket: Socket, o: ReceiveOptions): Promise<ReceiveReport | null> {
  const link = new Link(socket, o.timeoutMs ?? 60_000);
  try {
    await handshake(link, {
      role: 'destination',
      secret: o.secret,
      software: o.software ?? 'vfu-migrate',
    });
  } catch (e) {
    o.onRefused?.(link.peer, (e as Error).message);
    socket.destroy();
    return null;
  }
  const rep = await new Session(link, o).run();
  await link.close();
  return rep;
}

class Session {
  readonly dest: LocalDestination;
  readonly rep: ReceiveReport;
  state: ReceiverState = 'device';
  /** Why this half gave up; it then waits for the source half's ABORT. */
  refused: string | null = null;
  runs = false;

  constructor(
    readonly link: Link,
    readonly o: ReceiveOptions,
  ) {
    this.dest = localDestination(o.destination);
    this.rep = {
      outcome: 'failed',
      protocol: '?',
      holder: 'source',
      destination: { state: '?' },
      peer: link.peer,
      bytes: 0,
    };
  }

  async run(): Promise<ReceiveReport> {
    for (;;) {
      let m: Message;
      try {
        m = await this.link.next();
        if (!this.refused) this.state = receiverNext(this.state, m.type);
      } catch (e) {
        return this.cut(e as Error);
      }
      if (await this.handle(m)) break;
    }
    this.rep.destination.state = await this.dest.describe();
    return this.rep;
  }

  /** One message of the source half; true when the migration is over. */
  async handle(m: Message): Promise<boolean> {
    if (this.refused && m.type !== Msg.ABORT) return false; // in flight before it heard
    switch (m.type) {
      case Msg.DEVICE:
        await this.step(() => this.open(m.body.protocol));
        return false;
      case Msg.START:
        await this.step(async () => {
          await this.dest.start();
          await this.answer('start', true);
        });
        return false;
      case Msg.DATA:
        await this.step(async () => {
          await this.dest.write(m.data);
          this.rep.bytes += m.data.length;
        }, 'the destination refused the stream');
        return false;
      case Msg.PROGRESS:
        this.o.onProgress?.(m.body as Progress);
        return false;
      case Msg.SWITCHOVER:
        await this.switchover();
        return false;
      case Msg.RESULT:
        this.rep.source = m.body.report as unknown as Report;
        if (!this.runs) await this.dest.abort();
        this.rep.outcome = this.runs && m.body.ok ? 'completed' : 'failed';
        if (!m.body.ok) this.rep.error = this.rep.source?.error ?? 'the source half failed';
        return true;
      case Msg.ABORT:
        return this.aborted(m.body.reason);
    }
    return false;
  }

  async open(protocol: 'v1' | 'v2'): Promise<void> {
    this.rep.protocol = protocol;
    await this.dest.open(protocol);
    const identity = await deviceIdentity(this.o.destination);
    await this.link.send(Msg.DEVICE, { protocol, identity, state: await this.dest.describe() });
  }

  /** Runs a step; its failure is this half giving up (device reset, the source half told). */
  async step(fn: () => Promise<void>, what?: string): Promise<void> {
    try {
      await fn();
    } catch (e) {
      await this.giveUp(what ? `${what}: ${(e as Error).message}` : (e as Error).message);
    }
  }

  async giveUp(reason: string): Promise<void> {
    this.refused = reason;
    this.rep.error = reason;
    await this.dest.abort();
    const state = await this.dest.describe();
    await this.link.send(Msg.ABORT, { reason, state }).catch(() => {});
  }

  /** The stream is complete: the device loads it and runs, or refuses it (and is reset). */
  async switchover(): Promise<void> {
    try {
      await this.dest.finish();
      this.runs = true;
      this.rep.holder = 'destination';
      await this.answer('switchover', true);
    } catch (e) {
      if (this.runs) return; // ran, and the answer could not go: the wire says the rest
      const why = (await deviceStatus(this.o.destination))?.lastRefusal ?? (e as Error).message;
      this.rep.error = `the destination rejected the device state: ${why}`;
      await this.dest.abort();
      await this.answer('switchover', false, this.rep.error);
    }
  }

  async answer(step: 'start' | 'switchover', ok: boolean, error?: string): Promise<void> {
    const state = await this.dest.describe();
    await this.link.send(Msg.RESULT, { step, ok, state, error });
  }

  /** The source half gave up: the device goes back to usable, and the source half hears where. */
  async aborted(reason: string): Promise<boolean> {
    if (!this.refused) {
      this.rep.error = `the source gave up: ${reason}`;
      this.rep.outcome = /cancel/.test(reason) ? 'cancelled' : 'failed';
      await this.dest.abort();
    }
    const state = await this.dest.describe();
    await this.link.send(Msg.ABORT, { reason: 'acknowledged', state }).catch(() => {});
    return true;
  }

  /** The wire went (or broke its protocol): say honestly which side holds the device. */
  async cut(e: Error): Promise<ReceiveReport> {
    if (this.runs) {
      this.rep.outcome = 'completed';
      this.rep.error =
        `the connection ended before the source's final report (${e.message}); ` +
        'this destination runs the device; the source stays stopped';
    } else {
      await this.dest.abort();
      this.rep.error =
        this.refused ??
        `the connection ended before the switchover (${e.message}): this destination ` +
          'was reset; the device and its state stay with the source';
    }
    this.rep.destination.state = await this.dest.describe();
    return this.rep;
  }
}
