// Migration data relayed from one server to another without passing through this process.
import { SplicePipe, SpliceError, ShortIoError, recvExact, sendExact } from '@vfu/native';
import {
  encode,
  decodeHeader,
  commandName,
  Command,
  Flag,
  HEADER_SIZE,
  Layout,
  type Header,
} from '@vfu/protocol';
import { RemoteError, type LentStreamLeft } from '@vfu/transport';
import type { VfioUserClient } from './client.js';

/** A MIG_DATA_READ reply's or MIG_DATA_WRITE's header and its argsz and size fields. */
const HEAD = HEADER_SIZE + Layout.MigData.SIZE;
/** Most payload an error reply may carry that we read and drop (the spec gives it none). */
const MAX_ERROR_PAYLOAD = 4096;

/** The source or destination broke the protocol: the relay cannot know where it is. */
export class RelayError extends Error {
  override readonly name = 'RelayError';
}

/** What a side's connection is left with when the relay gives it back (Connection.giveBack). */
interface Leftover extends LentStreamLeft {
  lost?: boolean; // the stream's place is unknown: the connection is closed
}

/**
 * MIG_DATA_READ replies relayed as MIG_DATA_WRITEs (vfio-user.rst, "VFIO_USER_MIG_DATA_READ"
 * and "VFIO_USER_MIG_DATA_WRITE"): each reply's header is read and checked here, and its data
 * goes from the source's socket to the destination's through a pipe, by splice(2), so the kernel
 * hands the pages on instead of copying them into this process and out again.
 *
 * Both connections are lent to the relay (Connection.lend) until close(): nothing else may be
 * sent or awaited on them meanwhile. Each call waits for its peers, blocking this thread (timers
 * and signal handlers wait too), at most `timeoutMs` per message (0 or less: no limit), as a
 * request's timeout bounds its reply; a chunk takes well under a millisecond between live
 * servers. After any failure but an error reply the relay is done (close it), and each
 * connection goes back in step wherever its stream's place is known: what was read of a
 * message the source has not finished is handed back, what it still has to send is dropped as
 * it comes, and a write begun to the destination is finished with zeros (the migration has
 * failed; the driver resets the destination). Only a peer that breaks the protocol leaves its
 * stream at an unknown place: its connection is closed.
 */
export class MigDataRelay {
  readonly timeoutMs: number;
  #readId = -1;
  #readMax = 0;
  #writeId = -1;
  #src: Leftover = {};
  #dst: Leftover = {};
  #failed = false;
  #closed = false;

  private constructor(
    readonly src: VfioUserClient,
    readonly dst: VfioUserClient,
    readonly srcFd: number,
    readonly dstFd: number,
    readonly pipe: SplicePipe,
    timeoutMs: number,
  ) {
    this.timeoutMs = timeoutMs > 0 ? timeoutMs : Number.POSITIVE_INFINITY;
  }

  /**
   * A relay between two clients, or null when one cannot be lent now (a request is awaited or
   * a message half read), may receive DMA requests from its server (RAM without an fd), or no
   * pipe can be had.
   */
  static open(src: VfioUserClient, dst: VfioUserClient, timeoutMs = 5000): MigDataRelay | null {
    if (src.dmaByMessage || dst.dmaByMessage) return null;
    let pipe: SplicePipe;
    try {
      pipe = SplicePipe.open(); // first: a failure here must leave no connection lent
    } catch {
      return null;
    }
    const srcFd = src.conn.lend();
    const dstFd = srcFd === null ? null : dst.conn.lend();
    if (srcFd === null || dstFd === null) {
      src.conn.giveBack();
      pipe.close();
      return null;
    }
    return new MigDataRelay(src, dst, srcFd, dstFd, pipe, timeoutMs);
  }

  /** Asks the source for its next bytes, at most `max`: the next relay() answers. */
  ask(max: number): void {
    this.#usable();
    if (max > this.dst.serverCaps.maxDataXferSize)
      throw new RangeError(`${max} bytes: more than the destination takes in one message`);
    this.#readId = this.src.nextId();
    this.#readMax = max;
    const request = encode.migDataRead(this.#readId, max);
    this.#step(() => {
      try {
        sendExact(this.srcFd, request, this.timeoutMs);
      } catch (e) {
        // A request begun is finished (its framing); one not begun is not sent at all.
        if (e instanceof ShortIoError && e.done > 0) this.#src = { owed: request.subarray(e.done) };
        throw e;
      }
    });
  }

  /**
   * Relays the source's answer to the last ask() to the destination as a MIG_DATA_WRITE, and
   * returns its length (0: the source had nothing; nothing is written). An error reply from the
   * source throws RemoteError, with both streams in step: the relay goes on.
   */
  relay(): number {
    this.#usable();
    const end = this.#deadline();
    return this.#step(() => {
      const h = this.#replyHeader(this.srcFd, this.#readId, Command.MIG_DATA_READ, end());
      if (h.flags & Flag.ERROR) {
        this.#dropPayload(this.srcFd, h, end());
        throw new RemoteError(h.error, commandName(Command.MIG_DATA_READ));
      }
      const n = this.#dataSize(h, end());
      if (n > 0) this.#move(n, end);
      return n;
    }, true);
  }

  /** Waits for the destination's reply to the last relay()'s write (RemoteError if refused). */
  written(): void {
    this.#usable();
    const end = this.#deadline();
    this.#step(() => {
      const h = this.#replyHeader(this.dstFd, this.#writeId, Command.MIG_DATA_WRITE, end());
      this.#dropPayload(this.dstFd, h, end());
      if (h.flags & Flag.ERROR) throw new RemoteError(h.error, commandName(Command.MIG_DATA_WRITE));
    }, true);
  }

  /** Gives both connections back, each with what the relay left of its stream. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.pipe.close();
    for (const [client, left] of [
      [this.src, this.#src],
      [this.dst, this.#dst],
    ] as const) {
      client.conn.giveBack(left);
      if (left.lost) client.conn.close('migration data relay: the stream lost its place');
    }
  }

  /**
   * Runs one call's work. Any failure ends the relay, except an error reply (RemoteError) when
   * `errorRepliesGoOn`: that leaves both streams in step.
   */
  #step<T>(work: () => T, errorRepliesGoOn = false): T {
    try {
      return work();
    } catch (e) {
      if (!(errorRepliesGoOn && e instanceof RemoteError)) this.#failed = true;
      throw e;
    }
  }

  /** The data of a reply whose head was read: head to the destination, data by splice. */
  #move(n: number, end: () => number): void {
    this.#writeId = this.dst.nextId();
    const head = encode.migDataWriteHead(this.#writeId, n);
    try {
      sendExact(this.dstFd, head, end());
      this.pipe.move(this.srcFd, this.dstFd, n, end());
    } catch (e) {
      this.#leftMidMessage(e, head, n);
      throw e;
    }
  }

  /**
   * A failure in the middle of a relayed message: the source's connection drops what is left
   * of its reply as it comes; the destination's finishes the write with zeros, unless it was
   * the destination that failed.
   */
  #leftMidMessage(e: unknown, head: Uint8Array, n: number): void {
    if (e instanceof SpliceError) {
      this.#src = { skip: n - e.taken };
      if (e.side === 'destination') this.#dst = { lost: true };
      else this.#dst = { owed: new Uint8Array(n - e.given) };
      return;
    }
    this.#src = { skip: n };
    const sent = e instanceof ShortIoError ? e.done : 0;
    const owed = new Uint8Array(HEAD - sent + n);
    owed.set(head.subarray(sent));
    this.#dst = sent === 0 ? {} : { owed };
  }

  #usable(): void {
    if (this.#closed) throw new Error('MigDataRelay: closed');
    if (this.#failed) throw new RelayError('an earlier relay step failed; close the relay');
    // A connection closed meanwhile has closed its fd: its number may be another file's now.
    if (this.src.conn.closed || this.dst.conn.closed)
      throw new RelayError('a connection was closed while lent to the relay');
  }

  /** The remaining time of a budget of timeoutMs that starts now, as a function. */
  #deadline(): () => number {
    const end = performance.now() + this.timeoutMs;
    return () => Math.max(0, end - performance.now());
  }

  /** Where `fd`'s stream is left (the source's or the destination's). */
  #leftover(fd: number, left: Leftover): void {
    if (fd === this.srcFd) this.#src = left;
    else this.#dst = left;
  }

  /**
   * Reads the header of the reply to message `id`. One that does not come in time leaves the
   * stream in step (whatever of it came goes back to the connection, with the rest).
   */
  #replyHeader(
    fd: number,
    id: number,
    cmd: number,
    timeoutMs: number,
  ): Header & { raw: Uint8Array } {
    const who = fd === this.srcFd ? 'source' : 'destination';
    const b = new Uint8Array(HEADER_SIZE);
    try {
      recvExact(fd, b, timeoutMs);
    } catch (e) {
      if (e instanceof ShortIoError) this.#leftover(fd, { unread: b.subarray(0, e.done) });
      throw e;
    }
    const h = { ...decodeHeader(b), raw: b };
    const reply = (h.flags & Flag.TYPE_MASK) === Flag.REPLY;
    if (!reply || h.id !== id || h.cmd !== cmd || h.size < HEADER_SIZE) {
      this.#leftover(fd, { lost: true });
      throw new RelayError(
        `the ${who} sent ${commandName(h.cmd)} (id ${h.id}, flags 0x${h.flags.toString(16)}, ` +
          `${h.size} bytes) where the reply to message ${id} was due`,
      );
    }
    return h;
  }

  /** A MIG_DATA_READ reply's data size; it must be what its header leaves room for. */
  #dataSize(h: Header & { raw: Uint8Array }, timeoutMs: number): number {
    if (h.size < HEAD) {
      this.#src = { lost: true };
      throw new RelayError(`MIG_DATA_READ reply of ${h.size} bytes: too short`);
    }
    const head = new Uint8Array(HEAD);
    head.set(h.raw);
    try {
      recvExact(this.srcFd, head.subarray(HEADER_SIZE), timeoutMs);
    } catch (e) {
      // The connection frames the reply from what was read and drops it when the rest comes.
      if (e instanceof ShortIoError) this.#src = { unread: head.subarray(0, HEADER_SIZE + e.done) };
      throw e;
    }
    const size = new DataView(head.buffer).getUint32(HEADER_SIZE + Layout.MigData.size.at, true);
    if (h.size !== HEAD + size || size > this.#readMax) {
      this.#src = { lost: true };
      throw new RelayError(
        `MIG_DATA_READ reply of ${h.size} bytes says ${size} bytes of data ` +
          `(at most ${this.#readMax} were asked for)`,
      );
    }
    return size;
  }

  /** Reads and drops a reply's payload (an error reply's; a write reply has none). */
  #dropPayload(fd: number, h: Header, timeoutMs: number): void {
    const n = h.size - HEADER_SIZE;
    if (n === 0) return;
    if (n > MAX_ERROR_PAYLOAD) {
      this.#leftover(fd, { skip: n });
      throw new RelayError(`a reply of ${h.size} bytes where at most 16 were due`);
    }
    try {
      recvExact(fd, new Uint8Array(n), timeoutMs);
    } catch (e) {
      if (e instanceof ShortIoError) this.#leftover(fd, { skip: n - e.done });
      throw e;
    }
  }
}
