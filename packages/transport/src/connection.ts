import {
  FdWatcher,
  MessageSocket,
  NativeError,
  SendQueue,
  type OwnedFd,
  closeAll,
  yieldCpu,
} from '@vfu/native';
import {
  HEADER_SIZE,
  Flag,
  checkHeader,
  decodeHeader,
  encodeErrorReply,
  describeMessage,
  Errno,
  type Header,
} from '@vfu/protocol';
import { ConnectionClosedError } from './errors.js';
import type { Incoming } from './incoming.js';
import { LargeMessage } from './large-message.js';
import { Requests } from './requests.js';

export interface ConnectionOptions {
  /**
   * Largest message (header included) we accept; a larger one is refused without reading its body.
   */
  maxMessageSize: number;
  /** Most fds one message may carry (our advertised max_msg_fds). */
  maxFdsPerMessage: number;
  /** Stop reading while more than this many bytes wait to be sent (a peer that never reads). */
  sendHighWater?: number;
  /** Called with one line per message in and out. */
  trace?: (line: string) => void;
  /**
   * After a wake-up whose messages were all answered in place, keep looking for the client's
   * next message for up to this many microseconds (yielding the CPU between looks) instead of
   * going back to the event loop (0 or absent: never). See #linger.
   */
  lingerUs?: number;
}

/** One read takes up to this much; every complete message in it is handled before the next. */
const RECV_SIZE = 256 * 1024;
/** Replies of one wake-up gather here and leave in one sendmsg. */
const OUT_SIZE = 256 * 1024;
/** Reads per wake-up before the event loop gets its turn (level-triggered: it calls again). */
const READS_PER_WAKE = 16;
/** Most time one wake-up spends lingering before the event loop gets its turn again. */
const LINGER_BUDGET_MS = 1;
/**
 * Most bytes a lingering connection peeks before taking them out of the socket: 16 requests of
 * 32 bytes. The trip that takes them out pays for freeing each; at 4 KiB (128 requests) that
 * doubled our Node client's p99 round trip (tools/bench/README.md). Peeked messages also hold
 * the client's send buffer: each small one its own kernel buffer of about 700 bytes or more.
 */
const PEEKED_MAX = 512;
/** A message starting this close to the end of the receive buffer moves to its start first. */
const COMPACT_BELOW = 64 * 1024;
/**
 * Where a borrower (lend()) leaves the stream when it stops in the middle of a message: `unread`,
 * the bytes it read of a message whose rest is still in the socket (they are framed with what
 * follows); or `skip`, how many bytes of the message it leaves there (read and dropped); and
 * `owed`, the rest of a message it began sending (sent before anything else).
 */
export interface LentStreamLeft {
  unread?: Uint8Array;
  skip?: number;
  owed?: Uint8Array;
}

/** fds of one read, waiting for the message that owns them (the one holding byte `at`). */
interface ArrivedFds {
  at: number;
  fds: OwnedFd[];
  lost: boolean;
}

/**
 * Takes the complete command at `off` in place, and any whole messages after it before `limit`
 * (none of them carried fds): returns the bytes taken, 0 to have the command delivered as an
 * Incoming instead. The bytes are only valid during the call.
 */
export type InPlaceHandler = (buf: Buffer, off: number, limit: number, dv: DataView) => number;

/**
 * One vfio-user connection over a non-blocking UNIX socket: cuts the byte stream into
 * messages, attaches fds to the message that carried them (§1.1), routes replies to the
 * request waiting for them, and queues what the socket does not take at once.
 *
 * Framing is a state machine over one receive buffer: each wake-up reads as much as is there
 * (up to RECV_SIZE per read) and handles every complete message in it; a message larger than
 * the buffer is assembled in its own (reads then bounded to it); a message over the limit is
 * refused at its header and its body skipped. Replies sent while a wake-up is handled are
 * batched into one sendmsg (a reply with fds goes alone, after what is batched before it).
 *
 * fds: Linux ends a stream read right after the chunk (one sendmsg) that carried SCM_RIGHTS
 * (af_unix.c, unix_stream_read_generic), so fds returned by a read arrived with its last
 * bytes: they belong to the message holding the read's last byte, the last message starting
 * in it. A sender that sends each message with one sendmsg (QEMU, libvfio-user) thus has its
 * fds land on the right message however reads split or join its messages.
 */
export class Connection {
  readonly #sock: OwnedFd;
  readonly #ms: MessageSocket;
  readonly #watch: FdWatcher;
  readonly #in = Buffer.from(new ArrayBuffer(RECV_SIZE));
  readonly #inView = new DataView(this.#in.buffer);
  #start = 0; // first byte not yet handled
  #end = 0; // end of the bytes read
  #arrived: ArrivedFds[] = []; // oldest first; `at` is an offset in #in
  readonly #large = new LargeMessage(); // a message larger than #in; spare bodies for the next
  #lent = false; // the socket is the borrower's (lend()) until giveBack()
  #skip = 0; // body bytes of a refused message still to discard
  readonly #out = Buffer.from(new ArrayBuffer(OUT_SIZE));
  #outLen = 0;
  #corked = false;
  readonly #queue: SendQueue;
  readonly #requests = new Requests();
  #closed = false;
  #batchReplied = false; // replies went out since the wake-up (or the linger's last read)
  #batchDelivered = false; // a message went to onMessage or a request since then
  #lastReplyAt = Number.NEGATIVE_INFINITY; // performance.now() when replies last went out
  readonly #canPeek: boolean; // lingering reads peek (the socket has a peek offset)
  #peeked = 0; // bytes peeked and handled, still in the socket

  /** Commands (and unsolicited replies) from the peer. */
  onMessage: (m: Incoming) => void = m => closeAll(m.fds);
  /** Called once when the connection ends. */
  onClose: (reason: string) => void = () => {};
  /**
   * Complete commands without fds or header errors go here first (not while tracing); what it
   * takes is never built into an Incoming or copied.
   */
  onCommandInPlace: InPlaceHandler | null = null;

  constructor(
    fd: OwnedFd,
    readonly options: ConnectionOptions,
  ) {
    this.#sock = fd;
    this.#ms = new MessageSocket(fd.fd);
    this.#watch = new FdWatcher(fd.fd, ev => {
      // Nothing may escape a poll callback: it would take the whole process down with it.
      try {
        this.#onEvent(ev);
      } catch (e) {
        this.close(`internal error: ${(e as Error).stack ?? e}`);
      }
    });
    this.#queue = new SendQueue(this.#ms, this.#watch);
    this.#canPeek = (options.lingerUs ?? 0) > 0 && this.#ms.usePeekOffset();
  }

  #onEvent(ev: { readable: boolean; writable: boolean; hangup: boolean }): void {
    if (ev.hangup) {
      // libuv may have stopped the handle (an error status): no more callbacks will come, so
      // take what the peer sent before it went, then end.
      this.#read(true);
      this.close('peer hung up');
      return;
    }
    if (ev.writable) this.#flush();
    if (!ev.readable) return;
    // Linger only for a client that came back within lingerUs of our last reply: one that
    // answers slower (or sends alone) would cost us lingerUs of CPU per wake-up for nothing.
    const lingerMs = (this.options.lingerUs ?? 0) / 1000;
    const quick = performance.now() - this.#lastReplyAt <= lingerMs;
    this.#read();
    if (quick) this.#linger();
  }

  /**
   * A client waiting for each answer (a vCPU's MMIO reads) sends its next message a few
   * microseconds after our reply: looking for it right away, instead of going back to the event
   * loop, saves the loop's wake-up (epoll, the poll callback) and the scheduling around it
   * (tools/bench/README.md, issue 9). Only while every message of the last read was answered in
   * place (no handler waits for a promise, none was delivered), nothing waits to be sent, and
   * for at most LINGER_BUDGET_MS: meanwhile other fds, timers and promises wait.
   */
  #linger(): void {
    const budgetEnd = performance.now() + LINGER_BUDGET_MS;
    while (this.#worthLingering() && performance.now() < budgetEnd) {
      this.#batchReplied = false;
      this.#batchDelivered = false;
      if (!this.#awaitNext(budgetEnd)) break;
    }
    this.#takePeeked(); // the event loop's reads start at the first unread byte
  }

  /**
   * Reads until something arrives (true), or lingerUs or the budget pass. Between empty reads
   * the CPU goes to whoever else can run (on one CPU: the client, about to send).
   *
   * The reads peek (where the socket has a peek offset): taking a request out of the socket
   * frees the client's send buffer, and Linux then wakes the client, asleep waiting for our
   * reply (unix_write_space), which on one CPU preempts us, finds nothing and sleeps again: two
   * context switches per round trip for nothing (tools/bench/README.md, issue 9). Peeked
   * requests are taken out in bulk: after PEEKED_MAX bytes, when a peek finds nothing (the
   * client is not waiting for us then), and when the lingering ends.
   */
  #awaitNext(budgetEnd: number): boolean {
    const end = Math.min(budgetEnd, performance.now() + (this.options.lingerUs ?? 0) / 1000);
    for (;;) {
      let got = -1;
      this.#batch(() => {
        got = this.#readOnce(this.#canPeek);
      });
      if (got >= 0) return true;
      if (this.#closed || performance.now() >= end) return false;
      this.#takePeeked();
      yieldCpu();
    }
  }

  /** Takes the bytes peeked (and handled) out of the socket. */
  #takePeeked(): void {
    if (this.#peeked === 0 || this.#closed) return;
    try {
      this.#ms.discard(this.#peeked);
    } catch (e) {
      this.close(e instanceof NativeError ? `${e.code} from peer` : String(e));
    }
    this.#peeked = 0;
  }

  /**
   * A peek into the receive buffer, as recvInto. A peek that brings fds is undone and the bytes
   * read for real: a peek installs copies of a chunk's fds each time it reads from the chunk
   * (one split across two peeks would bring them twice), a read only the first time.
   */
  #peekInto(want: number): number {
    const n = this.#ms.peekInto(this.#in, this.#end, want);
    if (n <= 0) return n;
    if (this.#ms.gotFds || this.#ms.truncated) {
      closeAll(this.#ms.takeFds()); // copies: the real read brings them again
      this.#takePeeked();
      if (this.#closed) return -1;
      this.#ms.usePeekOffset(); // peeking starts again at the first unread byte
      return this.#ms.recvInto(this.#in, this.#end, want);
    }
    this.#peeked += n;
    if (this.#peeked >= PEEKED_MAX) this.#takePeeked();
    return n;
  }

  #worthLingering(): boolean {
    if (this.#closed || this.backlogged || !this.#queue.empty) return false;
    if (this.#large.active || this.#skip > 0) return false;
    return this.#batchReplied && !this.#batchDelivered;
  }

  /**
   * Lends the socket to a caller that reads and writes it directly for a while (a relay of
   * migration data, splicing socket to socket): its fd, or null when a byte of ours could get
   * between theirs: a message half read, replies batched or queued, a request awaiting its
   * reply. Until giveBack() nothing is read (the watcher stops) and send() throws.
   */
  lend(): number | null {
    this.#flushOut();
    this.#takePeeked();
    if (this.#closed || this.#lent || this.#requests.size > 0 || !this.#queue.empty) return null;
    const halfRead = this.#start !== this.#end || this.#large.active || this.#skip > 0;
    if (halfRead || this.#arrived.length > 0) return null;
    this.#lent = true;
    this.#watch.wantReadable(false); // with nothing queued, no writability wanted: stopped
    return this.#sock.fd;
  }

  /** Ends a lend(); a borrower that stopped in the middle of a message says what it leaves. */
  giveBack(left: LentStreamLeft = {}): void {
    if (!this.#lent) return;
    this.#lent = false;
    if (this.#closed) return;
    if (left.owed?.length) this.#queueSend(left.owed);
    if (left.unread?.length) {
      this.#in.set(left.unread, 0);
      this.#start = 0;
      this.#end = left.unread.length;
    }
    this.#skip = left.skip ?? 0;
    if (!this.backlogged) this.#watch.wantReadable(true);
    if (this.#end > this.#start) this.#batch(() => this.#parse());
  }

  get closed(): boolean {
    return this.#closed;
  }
  get fd(): number {
    return this.#sock.fd;
  }

  /** A message id for a command we send (16 bits, wraps, skipping ids awaiting replies). */
  nextId(): number {
    return this.#requests.nextId();
  }

  /**
   * Sends bytes (a whole encoded message) with borrowed fds. Never blocks; queues on EAGAIN.
   * With `more`, the message is `bytes` followed by `more`, sent in one sendmsg without
   * joining them first (a header and a large payload); neither is referenced after the call.
   */
  send(bytes: Uint8Array, fds: readonly number[] = NO_FDS, more?: Uint8Array | Uint8Array[]): void {
    if (this.#closed) throw new ConnectionClosedError('send after close');
    if (this.#lent) throw new Error('send while the socket is lent (lend() without giveBack())');
    if (this.options.trace)
      this.options.trace(
        describeMessage('->', decodeHeader(bytes), bytes.subarray(HEADER_SIZE), fds.length),
      );
    if (fds.length === 0 && !more) {
      const at = this.reserve(bytes.length);
      if (at >= 0) {
        this.#out.set(bytes, at);
        this.#outLen += bytes.length;
        return;
      }
    }
    this.#flushOut();
    if (this.#closed) return;
    const parts = more === undefined ? [] : more instanceof Uint8Array ? [more] : more;
    this.#queueSend(bytes, fds, parts);
  }

  /** Sends through the send queue (what the socket does not take waits there). */
  #queueSend(bytes: Uint8Array, fds?: readonly number[], parts?: readonly Uint8Array[]): void {
    try {
      this.#queue.send(bytes, fds, parts);
    } catch (e) {
      this.close(`send failed: ${(e as Error).message}`);
      return;
    }
    if (this.backlogged) this.#watch.wantReadable(false);
  }

  /**
   * Hands back the payload of a received message larger than the receive buffer once its
   * bytes are no longer needed: the next such message is assembled in it instead of in fresh
   * memory (whose pages would all fault in again).
   */
  recycle(payload: Uint8Array): void {
    const store = payload.buffer as ArrayBuffer;
    if (store === this.#in.buffer || store === this.#out.buffer) return;
    if (store.byteLength > RECV_SIZE) this.#large.recycle(store);
  }

  /**
   * Room for an `n`-byte message in this wake-up's reply batch: its offset in `out`, where the
   * caller writes it and then calls commit(n). -1 when nothing is being batched now.
   */
  reserve(n: number): number {
    if (!this.#corked || !this.#queue.empty || n > OUT_SIZE) return -1;
    if (this.#outLen + n > OUT_SIZE) {
      this.#flushOut();
      if (!this.#queue.empty || this.#closed) return -1;
    }
    return this.#outLen;
  }

  /** The reply batch (see reserve). */
  get out(): Buffer {
    return this.#out;
  }

  /** Adds the `n` bytes written at reserve()'s offset to the batch. */
  commit(n: number): void {
    this.#outLen += n;
  }

  /** Sends the batched replies (what the socket does not take is queued). */
  #flushOut(): void {
    const n = this.#outLen;
    if (n === 0 || this.#closed) return;
    this.#outLen = 0;
    this.#batchReplied = true;
    if (this.options.lingerUs) this.#lastReplyAt = performance.now();
    this.#queueSend(this.#out.subarray(0, n));
  }

  /** Sends a command and resolves with its reply; rejects with RemoteError on an error reply. */
  request(
    id: number,
    bytes: Uint8Array,
    fds: readonly number[] = [],
    timeoutMs = 0,
    more?: Uint8Array | Uint8Array[],
  ): Promise<Incoming> {
    const cmd = bytes[2] | (bytes[3] << 8); // the header's command field
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new ConnectionClosedError('request after close'));
        return;
      }
      if (this.#lent) {
        reject(new Error('request while the socket is lent (lend() without giveBack())'));
        return;
      }
      this.#requests.add(id, cmd, timeoutMs, resolve, reject);
      try {
        this.send(bytes, fds, more);
      } catch (e) {
        this.#requests.forget(id); // not sent: no reply will come (the promise rejects with e)
        throw e;
      }
    });
  }

  /** More than `sendHighWater` bytes wait to be sent: a producer should wait for drained(). */
  get backlogged(): boolean {
    return this.#queue.bytes > (this.options.sendHighWater ?? 64 << 20);
  }
  #drainWaiters: (() => void)[] = [];
  /**
   * Resolves once the send backlog is below the high-water mark again (or the connection closed).
   */
  drained(): Promise<void> {
    return !this.backlogged || this.#closed
      ? Promise.resolve()
      : new Promise(r => this.#drainWaiters.push(r));
  }

  replyError(h: Header, errno: number): void {
    if (h.flags & Flag.NO_REPLY) return;
    this.send(encodeErrorReply(h.id, h.cmd, errno));
  }

  close(reason = 'closed locally'): void {
    if (this.#closed) return;
    // Replies already made (an error reply right before a close) still go, as far as they fit.
    if (this.#outLen > 0 && this.#queue.empty) {
      try {
        this.#ms.send(this.#out.subarray(0, this.#outLen));
      } catch {
        /* the peer is gone */
      }
    }
    this.#outLen = 0;
    this.#closed = true;
    this.#watch.close();
    this.#sock.close();
    for (const a of this.#arrived) closeAll(a.fds);
    this.#arrived = [];
    this.#large.clear();
    this.#queue.clear();
    this.#requests.rejectAll(reason);
    this.onClose(reason);
    for (const w of this.#drainWaiters.splice(0)) w();
  }

  /** The socket takes bytes again: send what waits, and read again below the high-water mark. */
  #flush(): void {
    try {
      this.#queue.flush();
    } catch (e) {
      this.close(`send failed: ${(e as Error).message}`);
      return;
    }
    if (!this.backlogged) this.#resume();
  }

  /** The backlog cleared: read again, and handle what was read but held back. */
  #resume(): void {
    this.#watch.wantReadable(true);
    for (const w of this.#drainWaiters.splice(0)) w();
    if (this.#end > this.#start && !this.#corked) this.#batch(() => this.#parse());
  }

  /** Runs `fn` with replies batched, then sends the batch. */
  #batch(fn: () => void): void {
    this.#corked = true;
    try {
      fn();
    } finally {
      this.#corked = false;
      this.#flushOut();
    }
  }

  #read(toEnd = false): void {
    this.#batchReplied = false;
    this.#batchDelivered = false;
    this.#batch(() => {
      for (let i = 0; (toEnd || i < READS_PER_WAKE) && !this.#closed && !this.backlogged; i++) {
        if (this.#readOnce() <= 0) return;
      }
    });
  }

  /**
   * One recvmsg and the messages it completes. Returns -1 when nothing was read (or the
   * connection ended), 1 when another read may find more, 0 when the read drained the socket.
   */
  #readOnce(peek = false): number {
    let n: number, want: number;
    peek &&= !this.#large.active && this.#skip === 0;
    if (!peek) this.#takePeeked(); // a read takes what follows the peeked bytes
    if (this.#closed) return -1;
    try {
      if (this.#large.active) {
        const body = this.#large.body;
        want = body.length - this.#large.have;
        n = this.#ms.recvInto(body, this.#large.have, want);
      } else if (this.#skip > 0) {
        want = Math.min(this.#skip, RECV_SIZE);
        n = this.#ms.recvInto(this.#in, 0, want);
      } else {
        this.#makeRoom();
        want = RECV_SIZE - this.#end;
        if (want === 0) return -1; // held back by the send backlog
        n = peek ? this.#peekInto(want) : this.#ms.recvInto(this.#in, this.#end, want);
      }
    } catch (e) {
      this.close(e instanceof NativeError ? `${e.code} from peer` : String(e));
      return -1;
    }
    if (n < 0) return -1;
    const fds = this.#ms.takeFds(),
      lost = this.#ms.truncated;
    if (n === 0) {
      closeAll(fds);
      this.close('peer hung up');
      return -1;
    }
    if (this.#large.active) this.#largeRead(n, fds, lost);
    else if (this.#skip > 0) {
      closeAll(fds); // they came with the refused message's body
      this.#skip -= n;
    } else {
      this.#end += n;
      if (fds.length > 0 || lost) this.#arrived.push({ at: this.#end - 1, fds, lost });
      this.#parse();
    }
    // A short read drained the socket, unless it ended early at bytes that carried fds.
    return n === want || fds.length > 0 || lost ? 1 : 0;
  }

  /** Frees the buffer's tail for the next read: moves unhandled bytes to its start when low. */
  #makeRoom(): void {
    const s = this.#start;
    if (s === this.#end) {
      this.#start = this.#end = 0;
      for (const a of this.#arrived) a.at -= s;
      return;
    }
    if (RECV_SIZE - this.#end >= COMPACT_BELOW && s < RECV_SIZE / 2) return;
    this.#in.copyWithin(0, s, this.#end);
    this.#end -= s;
    this.#start = 0;
    for (const a of this.#arrived) a.at -= s;
  }

  /** Handles every complete message in the buffer (stops while the send backlog is high). */
  #parse(): void {
    const b = this.#in;
    while (!this.#closed && this.#skip === 0 && !this.#large.active) {
      const s = this.#start,
        have = this.#end - s;
      if (have < HEADER_SIZE) return;
      const size = this.#inView.getUint32(s + 4, true);
      if (size < HEADER_SIZE || size > this.options.maxMessageSize) {
        this.#refuse(decodeHeader(b.subarray(s, s + HEADER_SIZE)));
        continue;
      }
      if (size > RECV_SIZE) {
        this.#startLarge(decodeHeader(b.subarray(s, s + HEADER_SIZE)));
        return;
      }
      if (size > have || this.backlogged) return;
      if (!this.#inPlace(s, size)) this.#deliverAt(s, size);
    }
  }

  /** Offers a complete fd-less command to onCommandInPlace; true if it was taken. */
  #inPlace(s: number, size: number): boolean {
    const h = this.onCommandInPlace;
    if (!h || this.options.trace) return false;
    // Bytes up to the first that came with fds: the message holding that byte owns them.
    const limit = this.#arrived.length > 0 ? this.#arrived[0].at : this.#end;
    if (limit < s + size) return false;
    const flags = this.#inView.getUint32(s + 8, true);
    if ((flags & ~Flag.NO_REPLY) !== 0 || size === HEADER_SIZE) return false;
    this.#start = s + size;
    const took = h(this.#in, s, limit, this.#inView);
    this.#start = s + took;
    return took > 0;
  }

  /** Delivers the complete message at `s` as an Incoming (its payload copied out). */
  #deliverAt(s: number, size: number): void {
    const b = this.#in;
    const header = decodeHeader(b.subarray(s, s + HEADER_SIZE));
    const payload = new Uint8Array(size - HEADER_SIZE);
    payload.set(b.subarray(s + HEADER_SIZE, s + size));
    this.#start = s + size;
    const { fds, lost } = this.#takeArrived(s + size);
    const m: Incoming = { header, payload, fds };
    const bad = checkHeader(header, this.options.maxMessageSize);
    if (bad) m.error = bad;
    this.#deliver(m, lost);
  }

  /** fds that arrived with reads ending before `end` (they belong to the message ending there). */
  #takeArrived(end: number): { fds: OwnedFd[]; lost: boolean } {
    let fds: OwnedFd[] = [],
      lost = false;
    while (this.#arrived.length > 0 && this.#arrived[0].at < end) {
      const a = this.#arrived.shift()!;
      fds = fds.length === 0 ? a.fds : fds.concat(a.fds);
      lost ||= a.lost;
    }
    if (lost) {
      closeAll(fds);
      fds = [];
    }
    return { fds, lost };
  }

  /**
   * A header this connection will not hold a message for. Too large: refused now, its body
   * skipped. Too small: the stream cannot be framed any more, so the connection ends after the
   * reply.
   */
  #refuse(h: Header): void {
    const s = this.#start,
      inBuf = Math.min(this.#end - s, Math.max(h.size, HEADER_SIZE));
    this.#start = s + inBuf;
    const { fds, lost } = this.#takeArrived(s + inBuf);
    const bad = checkHeader(h, this.options.maxMessageSize)!;
    this.#deliver({ header: h, payload: new Uint8Array(0), fds, error: bad }, lost);
    if (h.size < HEADER_SIZE) this.close(`unframeable message (msg_size ${h.size})`);
    else this.#skip = h.size - inBuf;
  }

  /** A message larger than the receive buffer: its body is assembled in a buffer of its own. */
  #startLarge(h: Header): void {
    // The body first: should allocating it fail, the fds are still in #arrived for close().
    this.#large.start(h, this.#in.subarray(this.#start + HEADER_SIZE, this.#end));
    const { fds, lost } = this.#takeArrived(this.#end);
    this.#large.addFds(fds, lost);
    this.#start = this.#end;
  }

  #largeRead(n: number, fds: OwnedFd[], lost: boolean): void {
    const whole = this.#large.add(n, fds, lost);
    if (!whole) return;
    const bad = checkHeader(whole.m.header, this.options.maxMessageSize);
    if (bad) whole.m.error = bad;
    this.#deliver(whole.m, whole.lost);
  }

  #deliver(m: Incoming, lost: boolean): void {
    this.#batchDelivered = true;
    if (lost)
      m.error ??= { errno: Errno.EFAULT, message: 'file descriptors were lost (MSG_CTRUNC)' };
    else if (m.fds.length > this.options.maxFdsPerMessage)
      m.error ??= {
        errno: Errno.EINVAL,
        message: `${m.fds.length} fds exceed max_msg_fds ${this.options.maxFdsPerMessage}`,
      };
    if (this.options.trace)
      this.options.trace(describeMessage('<-', m.header, m.payload, m.fds.length));
    if (!this.#requests.settle(m)) this.onMessage(m);
  }
}

const NO_FDS: readonly number[] = [];
