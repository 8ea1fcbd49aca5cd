import { closeAll } from '@vfu/native';
import { Flag, commandName } from '@vfu/protocol';
import { ConnectionClosedError, RemoteError, TimeoutError } from './errors.js';
import type { Incoming } from './incoming.js';

interface Waiting {
  resolve: (m: Incoming) => void;
  reject: (e: Error) => void;
  cmd: number;
  deadline: number;
  timeoutMs: number;
}

/** How often the deadlines of requests in flight are checked (one timer for all of them). */
const SWEEP_MS = 50;

/**
 * The requests a connection sent that still wait for their reply, by message id: ids for new
 * ones, replies matched to them (same id and command, §1.2), deadlines, and what is owed to
 * each when the connection ends.
 */
export class Requests {
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 1;
  #sweep: NodeJS.Timeout | null = null;

  get size(): number {
    return this.#waiting.size;
  }

  /** A message id (16 bits, wraps, skipping ids still awaiting replies). */
  nextId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) & 0xffff;
      if (!this.#waiting.has(id)) return id;
    }
    throw new Error('65536 requests in flight');
  }

  /**
   * Waits for the reply to command `cmd` sent with `id`: `resolve` gets it, `reject` an error
   * reply, the end of the connection, or timeoutMs passing first (0: no timeout).
   */
  add(
    id: number,
    cmd: number,
    timeoutMs: number,
    resolve: (m: Incoming) => void,
    reject: (e: Error) => void,
  ): void {
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    this.#waiting.set(id, { resolve, reject, cmd, deadline, timeoutMs });
    if (timeoutMs > 0 && !this.#sweep) this.#sweep = setInterval(() => this.#expire(), SWEEP_MS);
  }

  /**
   * Settles the request `m` answers: true when it was one (an error reply rejects it with
   * RemoteError), false when nothing waits for it (the caller hands it on).
   */
  settle(m: Incoming): boolean {
    const isReply = (m.header.flags & Flag.TYPE_MASK) === Flag.REPLY;
    const w = isReply && !m.error ? this.#waiting.get(m.header.id) : undefined;
    if (!w || w.cmd !== m.header.cmd) return false;
    this.#waiting.delete(m.header.id);
    if (m.header.flags & Flag.ERROR) {
      closeAll(m.fds);
      w.reject(new RemoteError(m.header.error, commandName(m.header.cmd)));
    } else w.resolve(m);
    return true;
  }

  /** The request `id` was never sent: nothing waits for its reply. */
  forget(id: number): void {
    this.#waiting.delete(id);
    if (this.#waiting.size === 0) this.#stopSweep();
  }

  /** The connection ended: every request still waiting fails with `reason`. */
  rejectAll(reason: string): void {
    this.#stopSweep();
    for (const w of this.#waiting.values()) w.reject(new ConnectionClosedError(reason));
    this.#waiting.clear();
  }

  #expire(): void {
    const now = Date.now();
    for (const [id, w] of this.#waiting)
      if (w.deadline <= now) {
        this.#waiting.delete(id);
        w.reject(new TimeoutError(commandName(w.cmd), w.timeoutMs));
      }
    if (this.#waiting.size === 0) this.#stopSweep();
  }

  #stopSweep(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = null;
  }
}
