import {
  FdWatcher,
  MessageSocket,
  NativeError,
  type OwnedFd,
  type Received,
  dupFd,
  closeAll,
} from '@vfu/native';
import {
  HEADER_SIZE,
  Flag,
  checkHeader,
  decodeHeader,
  encodeErrorReply,
  describeMessage,
  commandName,
  Errno,
  type Header,
  type ProtocolError,
} from '@vfu/protocol';
import { ConnectionClosedError, RemoteError, TimeoutError } from './errors.js';

/**
 * A whole message as it arrived, with the fds that came with its first byte (now owned by the
 * receiver).
 */
export interface Incoming {
  header: Header;
  payload: Uint8Array;
  fds: OwnedFd[];
  /**
   * Set when the message cannot be handled as sent (too many fds, fds lost to MSG_CTRUNC, too
   * large).
   */
  error?: ProtocolError | { errno: number; message: string };
}

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
}

interface Pending {
  resolve: (m: Incoming) => void;
  reject: (e: Error) => void;
  cmd: number;
  deadline: number;
  timeoutMs: number;
}
interface Queued {
  bytes: Uint8Array;
  fds: OwnedFd[];
}

const RECV_CHUNK = 256 * 1024;

/**
 * One vfio-user connection over a non-blocking UNIX socket: cuts the byte stream into
 * messages, attaches fds to the message whose first byte carried them (§1.1), routes replies to
 * the request waiting for them, and queues what the socket does not take at once.
 */
export class Connection {
  readonly #sock: OwnedFd;
  readonly #ms: MessageSocket;
  readonly #watch: FdWatcher;
  readonly #recv = Buffer.from(new ArrayBuffer(RECV_CHUNK));
  #asm: Buffer | null = null; // the message being assembled (a view of #asmStore when it fits)
  #asmStore = Buffer.from(new ArrayBuffer(64 * 1024));
  #asmHave = 0;
  #hdrBuf = Buffer.from(new ArrayBuffer(HEADER_SIZE));
  #hdrHave = 0;
  #header: Header | null = null;
  #fds: OwnedFd[] = [];
  #ctrunc = false;
  #skip = 0; // body bytes of a refused message still to discard
  #queue: Queued[] = [];
  #queued = 0;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #sweep: NodeJS.Timeout | null = null;
  #closed = false;
  #closeWaiters: (() => void)[] = [];

  /** Commands (and unsolicited replies) from the peer. */
  onMessage: (m: Incoming) => void = m => closeAll(m.fds);
  /** Called once when the connection ends. */
  onClose: (reason: string) => void = () => {};

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
    if (ev.readable) this.#read();
  }

  get closed(): boolean {
    return this.#closed;
  }
  get fd(): number {
    return this.#sock.fd;
  }
  get pendingRequests(): number {
    return this.#pending.size;
  }

  /** A message id for a command we send (16 bits, wraps, skipping ids still awaiting replies). */
  nextId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) & 0xffff;
      if (!this.#pending.has(id)) return id;
    }
    throw new Error('65536 requests in flight');
  }

  /** Sends bytes (a whole encoded message) with borrowed fds. Never blocks; queues on EAGAIN. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) throw new ConnectionClosedError('send after close');
    if (this.options.trace)
      this.options.trace(
        describeMessage('->', decodeHeader(bytes), bytes.subarray(HEADER_SIZE), fds.length),
      );
    if (this.#queue.length === 0) {
      let n: number;
      try {
        n = this.#ms.send(bytes, fds);
      } catch (e) {
        this.close(`send failed: ${(e as Error).message}`);
        return;
      }
      if (n === bytes.length) return;
      if (n > 0) {
        this.#enqueue(bytes.subarray(n), []);
        return;
      }
    }
    // fds must stay valid until sent: the queue holds its own duplicates.
    this.#enqueue(
      bytes,
      fds.map(f => dupFd(f)),
    );
  }

  /** Sends a command and resolves with its reply; rejects with RemoteError on an error reply. */
  request(
    id: number,
    bytes: Uint8Array,
    fds: readonly number[] = [],
    timeoutMs = 0,
  ): Promise<Incoming> {
    const cmd = bytes[2] | (bytes[3] << 8); // the header's command field
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new ConnectionClosedError('request after close'));
        return;
      }
      const p: Pending = {
        resolve,
        reject,
        cmd,
        deadline: timeoutMs > 0 ? Date.now() + timeoutMs : Infinity,
        timeoutMs,
      };
      this.#pending.set(id, p);
      if (timeoutMs > 0 && !this.#sweep) {
        // One timer checks every deadline (cheaper than a timer per request).
        this.#sweep = setInterval(() => {
          const t = Date.now();
          for (const [k, q] of this.#pending)
            if (q.deadline <= t) {
              this.#pending.delete(k);
              q.reject(new TimeoutError(commandName(q.cmd), q.timeoutMs));
            }
          if (this.#pending.size === 0) {
            clearInterval(this.#sweep!);
            this.#sweep = null;
          }
        }, 50);
      }
      this.send(bytes, fds);
    });
  }

  /** More than `sendHighWater` bytes wait to be sent: a producer should wait for drained(). */
  get backlogged(): boolean {
    return this.#queued > (this.options.sendHighWater ?? 64 << 20);
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

  /** Resolves when the connection has closed. */
  closedPromise(): Promise<void> {
    return this.#closed ? Promise.resolve() : new Promise(r => this.#closeWaiters.push(r));
  }

  close(reason = 'closed locally'): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    this.#sock.close();
    closeAll(this.#fds);
    this.#fds = [];
    for (const q of this.#queue) closeAll(q.fds);
    this.#queue = [];
    this.#queued = 0;
    if (this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = null;
    }
    for (const p of this.#pending.values()) p.reject(new ConnectionClosedError(reason));
    this.#pending.clear();
    this.onClose(reason);
    for (const w of this.#closeWaiters.splice(0)) w();
    for (const w of this.#drainWaiters.splice(0)) w();
  }

  #enqueue(bytes: Uint8Array, fds: OwnedFd[]): void {
    this.#queue.push({ bytes: Uint8Array.from(bytes), fds });
    this.#queued += bytes.length;
    this.#watch.wantWritable(true);
    if (this.backlogged) this.#watch.wantReadable(false);
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const q = this.#queue[0];
      let n: number;
      try {
        n = this.#ms.send(
          q.bytes,
          q.fds.map(f => f.fd),
        );
      } catch (e) {
        this.close(`send failed: ${(e as Error).message}`);
        return;
      }
      if (n === 0) return;
      closeAll(q.fds);
      q.fds = [];
      this.#queued -= n;
      if (!this.backlogged) {
        this.#watch.wantReadable(true);
        for (const w of this.#drainWaiters.splice(0)) w();
      }
      if (n < q.bytes.length) {
        q.bytes = q.bytes.subarray(n);
        return;
      }
      this.#queue.shift();
    }
    if (this.#closed) return;
    this.#watch.wantWritable(false);
    this.#watch.wantReadable(true);
    for (const w of this.#drainWaiters.splice(0)) w();
  }

  // Every read is bounded to the rest of the current message (its header, then its body), so
  // fds that arrive can only have come with bytes of that message: the message whose first
  // byte carried them (§1.1). A read spanning two messages could hand the second one's fds to
  // the first.
  #read(toEnd = false): void {
    while (!this.#closed) {
      let target: Buffer;
      if (this.#skip > 0) target = this.#recv.subarray(0, Math.min(this.#skip, RECV_CHUNK));
      else if (!this.#header) target = this.#hdrBuf.subarray(this.#hdrHave);
      else target = this.#asm!.subarray(this.#asmHave);
      let r: Received | null;
      try {
        r = this.#ms.recv(target);
      } catch (e) {
        this.close(e instanceof NativeError ? `${e.code} from peer` : String(e));
        return;
      }
      if (r === null) return;
      if (r.bytes === 0) {
        closeAll(r.fds);
        this.close('peer hung up');
        return;
      }
      if (r.fds.length) this.#fds.push(...r.fds);
      if (r.truncated) this.#ctrunc = true;
      if (this.#skip > 0) {
        this.#skip -= r.bytes;
        continue;
      }
      if (!this.#header) {
        this.#hdrHave += r.bytes;
        if (this.#hdrHave < HEADER_SIZE) continue;
        this.#hdrHave = 0;
        this.#onHeader(decodeHeader(this.#hdrBuf));
      } else this.#asmHave += r.bytes;
      if (this.#header && this.#asmHave === this.#asm!.length) {
        this.#onComplete();
        // libuv's poll is level-triggered: if more bytes wait, it calls again. Returning here saves
        // the read that would only say EAGAIN in the usual request/reply ping-pong.
        if (!toEnd) return;
      }
    }
  }

  #onHeader(h: Header): void {
    const bad = checkHeader(h, this.options.maxMessageSize);
    if (bad && (h.size < HEADER_SIZE || h.size > this.options.maxMessageSize)) {
      // Will not hold this message: refuse it. Too large: skip its body and go on. Too small:
      // the stream cannot be framed any more, so the connection ends after the reply.
      this.#deliver({ header: h, payload: new Uint8Array(0), fds: this.#takeFds(), error: bad });
      if (h.size < HEADER_SIZE) this.close(`unframeable message (msg_size ${h.size})`);
      else this.#skip = h.size - HEADER_SIZE;
      return;
    }
    this.#header = h;
    const n = h.size - HEADER_SIZE;
    // Small messages assemble in a reused buffer (one copy out at the end); large ones in their
    // own.
    this.#asm =
      // filled by the reads
      n <= this.#asmStore.length ? this.#asmStore.subarray(0, n) : Buffer.allocUnsafeSlow(n);
    this.#asmHave = 0;
  }

  #onComplete(): void {
    const h = this.#header!,
      asm = this.#asm!;
    const payload = asm.buffer === this.#asmStore.buffer ? Buffer.from(asm) : asm;
    this.#header = null;
    this.#asm = null;
    const m: Incoming = { header: h, payload, fds: this.#takeFds() };
    const bad = checkHeader(h, this.options.maxMessageSize);
    if (bad) m.error = bad;
    this.#deliver(m);
  }

  /** The fds gathered for the message now complete; if some were lost, none are kept. */
  #takeFds(): OwnedFd[] {
    const fds = this.#fds;
    this.#fds = [];
    this.#lost = this.#ctrunc;
    this.#ctrunc = false;
    if (this.#lost) {
      closeAll(fds);
      return [];
    }
    return fds;
  }
  #lost = false;

  #deliver(m: Incoming): void {
    if (this.#lost) {
      this.#lost = false;
      m.error ??= { errno: Errno.EFAULT, message: 'file descriptors were lost (MSG_CTRUNC)' };
    } else if (m.fds.length > this.options.maxFdsPerMessage)
      m.error ??= {
        errno: Errno.EINVAL,
        message: `${m.fds.length} fds exceed max_msg_fds ${this.options.maxFdsPerMessage}`,
      };
    if (this.options.trace)
      this.options.trace(describeMessage('<-', m.header, m.payload, m.fds.length));
    const isReply = (m.header.flags & Flag.TYPE_MASK) === Flag.REPLY;
    const p = isReply && !m.error ? this.#pending.get(m.header.id) : undefined;
    if (p && p.cmd === m.header.cmd) {
      this.#pending.delete(m.header.id);
      if (m.header.flags & Flag.ERROR) {
        closeAll(m.fds);
        p.reject(new RemoteError(m.header.error, commandName(m.header.cmd)));
      } else p.resolve(m);
      return;
    }
    this.onMessage(m);
  }
}
