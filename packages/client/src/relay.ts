// Migration data relayed from one server to another without passing through this process.
import { SplicePipe, SpliceError, recvExact, sendExact } from '@vfu/native';
import {
  encode,
  decodeHeader,
  commandName,
  Command,
  Flag,
  HEADER_SIZE,
  type Header,
} from '@vfu/protocol';
import { RemoteError } from '@vfu/transport';
import type { VfioUserClient } from './client.js';

/** A MIG_DATA_READ reply's or MIG_DATA_WRITE's header and its argsz and size fields. */
const HEAD = HEADER_SIZE + 8;
/** Most payload an error reply may carry that we read and drop (the spec gives it none). */
const MAX_ERROR_PAYLOAD = 4096;

/** The source or destination broke the protocol: the relay cannot know where it is. */
export class RelayError extends Error {
  override readonly name = 'RelayError';
}

/**
 * MIG_DATA_READ replies relayed as MIG_DATA_WRITEs (vfio-user.rst, "VFIO_USER_MIG_DATA_READ"
 * and "VFIO_USER_MIG_DATA_WRITE"): each reply's header is read and checked here, and its data
 * goes from the source's socket to the destination's through a pipe, by splice(2), so the kernel
 * hands the pages on instead of copying them into this process and out again.
 *
 * Both connections are lent to the relay (Connection.lend) until close(): nothing else may be
 * sent or awaited on them meanwhile. Each call waits for its peer, blocking this thread, at most
 * `timeoutMs` whenever the peer makes no progress (a chunk takes well under a millisecond between
 * live servers). A source or destination that breaks the protocol, or dies halfway through a
 * message, leaves its stream at an unknown place: close() then closes that connection. The
 * other side's half-relayed message is finished first, so that its stream stays usable.
 */
export class MigDataRelay {
  #readId = -1;
  #readMax = 0;
  #writeId = -1;
  #srcBroken = false;
  #dstBroken = false;
  #closed = false;

  private constructor(
    readonly src: VfioUserClient,
    readonly dst: VfioUserClient,
    readonly srcFd: number,
    readonly dstFd: number,
    readonly pipe: SplicePipe,
    readonly timeoutMs: number,
  ) {}

  /**
   * A relay between two clients, or null when one cannot be lent now (a request is awaited or
   * a message half read) or may receive DMA requests from its server (RAM without an fd).
   */
  static open(src: VfioUserClient, dst: VfioUserClient, timeoutMs = 5000): MigDataRelay | null {
    if (src.dmaByMessage || dst.dmaByMessage) return null;
    const srcFd = src.conn.lend();
    if (srcFd === null) return null;
    const dstFd = dst.conn.lend();
    if (dstFd === null) {
      src.conn.giveBack();
      return null;
    }
    return new MigDataRelay(src, dst, srcFd, dstFd, SplicePipe.open(), timeoutMs);
  }

  /** Asks the source for its next bytes, at most `max`: the next relay() answers. */
  ask(max: number): void {
    this.#usable();
    if (max > this.dst.serverCaps.maxDataXferSize)
      throw new RangeError(`${max} bytes: more than the destination takes in one message`);
    this.#readId = this.src.nextId();
    this.#readMax = max;
    this.#onSource(() =>
      sendExact(this.srcFd, encode.migDataRead(this.#readId, max), this.timeoutMs),
    );
  }

  /**
   * Relays the source's answer to the last ask() to the destination as a MIG_DATA_WRITE, and
   * returns its length (0: the source had nothing; nothing is written). An error reply from the
   * source throws RemoteError (the streams stay in step).
   */
  relay(): number {
    this.#usable();
    const h = this.#onSource(() => this.#readReplyHeader(this.srcFd, this.#readId, 'source'));
    if (h.flags & Flag.ERROR) {
      this.#onSource(() => this.#drop(this.srcFd, h.size - HEADER_SIZE, 'source'));
      throw new RemoteError(h.error, commandName(Command.MIG_DATA_READ));
    }
    const n = this.#onSource(() => this.#readSize(h));
    if (n === 0) return 0;
    this.#writeId = this.dst.nextId();
    // Until the data has moved, a failure leaves the source's reply half read and the
    // destination's write half sent.
    this.#srcBroken = this.#dstBroken = true;
    try {
      sendExact(this.dstFd, encode.migDataWriteHead(this.#writeId, n), this.timeoutMs);
      this.pipe.move(this.srcFd, this.dstFd, n, this.timeoutMs);
    } catch (e) {
      this.#finishOnLiveSide(e, n);
      throw e;
    }
    this.#srcBroken = this.#dstBroken = false;
    return n;
  }

  /**
   * After a failure in the middle of a relayed message, finishes it on the side that still
   * works, so that its stream stays in step: the rest of the source's reply is read (the
   * source can then be set running again), or the destination's write is made up to its
   * announced length with zeros (which fail its checks: it refuses the write, and the driver
   * can still reset it).
   */
  #finishOnLiveSide(e: unknown, n: number): void {
    const spliced = e instanceof SpliceError ? e : null;
    if (spliced?.side === 'source') {
      const done = this.#fill(this.dstFd, n - spliced.given);
      if (done) this.#dstBroken = false;
      return;
    }
    if (this.#drain(this.srcFd, n - (spliced?.taken ?? 0))) this.#srcBroken = false;
  }

  /** Reads and drops `left` bytes; false if the peer fails meanwhile. */
  #drain(fd: number, left: number): boolean {
    return this.#inPieces(left, piece => recvExact(fd, piece, this.timeoutMs));
  }

  /** Writes `left` zero bytes; false if the peer fails meanwhile. */
  #fill(fd: number, left: number): boolean {
    return this.#inPieces(left, piece => sendExact(fd, piece, this.timeoutMs));
  }

  /** Runs `step` over `left` bytes in zeroed pieces of up to 64 KiB; false if a step throws. */
  #inPieces(left: number, step: (piece: Uint8Array) => void): boolean {
    const buf = new Uint8Array(Math.min(left, 1 << 16));
    try {
      for (let at = 0; at < left; at += buf.length)
        step(buf.subarray(0, Math.min(buf.length, left - at)));
      return true;
    } catch {
      return false;
    }
  }

  /** Waits for the destination's reply to the last relay()'s write (RemoteError if refused). */
  written(): void {
    this.#usable();
    this.#dstBroken = true;
    const h = this.#readReplyHeader(this.dstFd, this.#writeId, 'destination');
    this.#drop(this.dstFd, h.size - HEADER_SIZE, 'destination');
    this.#dstBroken = false;
    if (h.flags & Flag.ERROR) throw new RemoteError(h.error, commandName(Command.MIG_DATA_WRITE));
  }

  /**
   * Gives both connections back. One left mid-message (a failure above) is closed: its peer
   * sees the connection end rather than a stream it cannot frame.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.pipe.close();
    this.src.conn.giveBack();
    this.dst.conn.giveBack();
    if (this.#srcBroken) this.src.conn.close('migration data relay failed mid-message');
    if (this.#dstBroken) this.dst.conn.close('migration data relay failed mid-message');
  }

  #usable(): void {
    if (this.#closed) throw new Error('MigDataRelay: closed');
    if (this.#srcBroken || this.#dstBroken)
      throw new RelayError('an earlier relay step failed mid-message');
  }

  /** Runs a step on the source's stream: if it throws, the stream is at an unknown place. */
  #onSource<T>(step: () => T): T {
    this.#srcBroken = true;
    const r = step();
    this.#srcBroken = false;
    return r;
  }

  #readReplyHeader(fd: number, id: number, who: string): Header {
    const b = new Uint8Array(HEADER_SIZE);
    recvExact(fd, b, this.timeoutMs);
    const h = decodeHeader(b);
    const reply = (h.flags & Flag.TYPE_MASK) === Flag.REPLY;
    if (!reply || h.id !== id || h.size < HEADER_SIZE)
      throw new RelayError(
        `the ${who} sent ${commandName(h.cmd)} (id ${h.id}, flags 0x${h.flags.toString(16)}, ` +
          `${h.size} bytes) where the reply to message ${id} was due`,
      );
    return h;
  }

  /** A MIG_DATA_READ reply's argsz and size; its size must be what its header leaves room for. */
  #readSize(h: Header): number {
    const f = new Uint8Array(8);
    if (h.size < HEAD) throw new RelayError(`MIG_DATA_READ reply of ${h.size} bytes: too short`);
    recvExact(this.srcFd, f, this.timeoutMs);
    const size = new DataView(f.buffer).getUint32(4, true);
    if (h.cmd !== Command.MIG_DATA_READ || h.size !== HEAD + size || size > this.#readMax)
      throw new RelayError(
        `MIG_DATA_READ reply of ${h.size} bytes says ${size} bytes of data ` +
          `(at most ${this.#readMax} were asked for)`,
      );
    return size;
  }

  /** Reads and drops a reply's payload (an error reply's; a write reply has none). */
  #drop(fd: number, n: number, who: string): void {
    if (n === 0) return;
    if (n > MAX_ERROR_PAYLOAD) throw new RelayError(`the ${who}'s reply carries ${n} bytes`);
    recvExact(fd, new Uint8Array(n), this.timeoutMs);
  }
}
