// One wire connection (TCP or TLS): frames out with the socket's backpressure, messages in
// through FrameDecoder, read one at a time (the socket pauses while a message is handled, so a
// fast sender waits for a slow destination), every wait bounded.
import type { Socket } from 'node:net';
import {
  FrameDecoder,
  WireError,
  Msg,
  MAX_DATA,
  controlFrame,
  dataFrame,
  msgName,
  type Message,
  type MsgType,
} from './codec.js';

/** The connection ended or went silent: `why` says which. */
class LinkClosed extends Error {}

export class Link {
  readonly #decoder = new FrameDecoder();
  readonly #queue: Message[] = [];
  #waiter: (() => void) | null = null;
  #closed: Error | null = null;
  /** Bytes received and sent (all frames). */
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    readonly socket: Socket,
    readonly timeoutMs: number,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#take(chunk));
    socket.on('error', e => this.#end(new LinkClosed(`connection error: ${e.message}`)));
    socket.on('close', () => this.#end(new LinkClosed('the connection was closed')));
    socket.on('end', () => this.#end(new LinkClosed('the peer closed the connection')));
  }

  /** The handshake is done: stream data may come. */
  trust(): void {
    this.#decoder.maxData = MAX_DATA;
  }

  get closed(): Error | null {
    return this.#closed;
  }
  get peer(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  #take(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    try {
      this.#queue.push(...this.#decoder.push(chunk));
    } catch (e) {
      this.#end(e as Error);
      this.socket.destroy();
      return;
    }
    if (this.#queue.length > 4) this.socket.pause();
    this.#wake();
  }

  #end(e: Error): void {
    this.#closed ??= e;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  /** A message already received, or null: never waits. */
  poll(): Message | null {
    const m = this.#queue.shift() ?? null;
    if (this.#queue.length <= 1) this.socket.resume();
    return m;
  }

  /** The next message; throws LinkClosed (or WireError) when none can come. */
  async next(timeoutMs = this.timeoutMs): Promise<Message> {
    for (;;) {
      const m = this.#queue.shift();
      if (m) {
        if (this.#queue.length <= 1) this.socket.resume();
        return m;
      }
      if (this.#closed) throw this.#closed;
      await this.#wait(timeoutMs);
    }
  }

  #wait(timeoutMs: number): Promise<void> {
    return new Promise<void>(resolve => {
      const timer = setTimeout(() => {
        this.#end(new LinkClosed(`nothing from ${this.peer} for ${timeoutMs} ms`));
        this.socket.destroy();
      }, timeoutMs);
      this.#waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** The next message, which must be `type` (an ABORT is returned as it is, for the caller). */
  async expect<T extends MsgType>(
    type: T,
    timeoutMs = this.timeoutMs,
  ): Promise<Extract<Message, { type: T }> | AbortMessage> {
    const m = await this.next(timeoutMs);
    if (m.type !== type && m.type !== Msg.ABORT)
      throw new WireError(`expected ${msgName(type)}, got ${msgName(m.type)}`);
    return m as Extract<Message, { type: T }> | AbortMessage;
  }

  send(type: Exclude<MsgType, typeof Msg.DATA>, body: object): Promise<void> {
    return this.#write([controlFrame(type, body)]);
  }

  /** Stream bytes, cut into frames of at most MAX_DATA. */
  async sendData(data: Uint8Array): Promise<void> {
    for (let off = 0; off < data.length; off += MAX_DATA)
      await this.#write(dataFrame(data.subarray(off, off + MAX_DATA)), true);
  }

  /**
   * Queues `parts` on the socket. `hold`: the last part is the caller's memory, which it reuses
   * once this resolves (a received chunk given back): resolves only when the socket no longer
   * holds it, not merely when its queue is under the high-water mark.
   */
  async #write(parts: Uint8Array[], hold = false): Promise<void> {
    // A peer that said something (its ABORT, its reason) and went: what it said is read next.
    if (this.#closed && this.#queue.length) return;
    if (this.#closed) throw this.#closed;
    let full = false;
    let flushed: Promise<void> | null = null;
    for (const [i, p] of parts.entries()) {
      this.bytesOut += p.length;
      if (hold && i === parts.length - 1)
        flushed = new Promise(res => {
          full = !this.socket.write(p, () => res()) || full;
        });
      else full = !this.socket.write(p) || full;
    }
    if (full) await this.#drained();
    else if (flushed && this.socket.writableLength > 0) await this.#drained(flushed);
  }

  /**
   * The socket took what was queued (or `flushed` settled: the write it stands for left);
   * a peer that takes nothing for too long is given up.
   */
  #drained(flushed?: Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#end(new LinkClosed(`${this.peer} took nothing for ${this.timeoutMs} ms`));
        this.socket.destroy();
      }, this.timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.socket.off('drain', done);
        this.socket.off('close', done);
        if (this.#closed) reject(this.#closed);
        else resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
      flushed?.then(done);
    });
  }

  /** Ends the connection once what was sent is out. */
  close(): Promise<void> {
    return new Promise<void>(resolve => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    });
  }
}

type AbortMessage = Extract<Message, { type: typeof Msg.ABORT }>;
