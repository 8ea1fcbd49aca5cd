import { c, errno, addressOf, stableBuffer } from './libc.js';
import { NativeError } from './errors.js';
import { OwnedFd } from './fd.js';

const AF_UNIX = 1,
  SOCK_STREAM = 1,
  SOCK_NONBLOCK = 0o4000,
  SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1,
  SCM_RIGHTS = 1;
const MSG_PEEK = 0x2,
  MSG_CTRUNC = 0x8,
  MSG_DONTWAIT = 0x40,
  MSG_NOSIGNAL = 0x4000,
  MSG_CMSG_CLOEXEC = 0x40000000;
const EAGAIN = 11,
  EINTR = 4;

/** Most parts (iovecs) one send() takes. */
const MAX_PARTS = 128;

/** The kernel's limit of fds in one SCM_RIGHTS message (SCM_MAX_FD). */
export const MAX_FDS_PER_SENDMSG = 253;

function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path);
  if (p.length === 0 || p.length > 107)
    throw new NativeError('sockaddr_un', 36, `socket path must be 1-107 bytes: ${path}`);
  const sa = Buffer.alloc(110);
  sa.writeUInt16LE(AF_UNIX, 0);
  p.copy(sa, 2);
  return sa;
}

/**
 * A non-blocking listening UNIX stream socket bound to `path`. The backlog is the kernel's
 * maximum (it caps the value at net.core.somaxconn): clients arriving while the server is busy
 * wait in the queue; past a full queue a non-blocking connect fails with EAGAIN.
 */
export function listenUnix(path: string, backlog = 4096): OwnedFd {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new NativeError('socket', errno());
  const owned = new OwnedFd(fd);
  const sa = sockaddrUn(path);
  if (c.bind(fd, sa, sa.length) < 0) {
    const e = errno();
    owned.close();
    throw new NativeError('bind', e, path);
  }
  if (c.listen(fd, backlog) < 0) {
    const e = errno();
    owned.close();
    throw new NativeError('listen', e, path);
  }
  return owned;
}

/** Accepts one pending connection (non-blocking, close-on-exec), or null if none is pending. */
export function acceptUnix(listenFd: number): OwnedFd | null {
  const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    const e = errno();
    if (e === EAGAIN || e === EINTR || e === 103 /* ECONNABORTED */) return null;
    throw new NativeError('accept4', e);
  }
  setBufferSizes(fd);
  return new OwnedFd(fd);
}

/** Connects to a UNIX stream socket; the returned socket is non-blocking. */
/**
 * Connects to a UNIX stream socket without blocking: a server whose queue of pending
 * connections is full answers EAGAIN at once (a blocking connect would wait, and with it the
 * whole event loop, until the server accepts). `dial` in @vfu/transport retries within a bound.
 */
export function connectUnix(path: string): OwnedFd {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new NativeError('socket', errno());
  const owned = new OwnedFd(fd);
  const sa = sockaddrUn(path);
  if (c.connect(fd, sa, sa.length) < 0) {
    const e = errno();
    owned.close();
    const why = e === EAGAIN ? `${path}: the server's queue of pending connections is full` : path;
    throw new NativeError('connect', e, why);
  }
  setBufferSizes(fd);
  return owned;
}

/**
 * Whether a process listens on the socket at `path`: a connect is taken, or refused only because
 * the listener's queue is full (it is alive, just busy).
 */
export function someoneListens(path: string): boolean {
  try {
    connectUnix(path).close();
    return true;
  } catch (e) {
    return e instanceof NativeError && e.errno === EAGAIN;
  }
}

/** A connected pair of non-blocking UNIX stream sockets. */
export function socketPair(): [OwnedFd, OwnedFd] {
  const sv = [0, 0];
  if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    throw new NativeError('socketpair', errno());
  return [new OwnedFd(sv[0]), new OwnedFd(sv[1])];
}

/**
 * Larger socket buffers (the kernel caps them at net.core.[rw]mem_max): a 1 MiB message then
 * crosses in one or two wake-ups instead of five.
 */
function setBufferSizes(fd: number, bytes = 4 << 20): void {
  c.setsockopt(fd, SOL_SOCKET, 7 /* SO_SNDBUF */, [bytes], 4);
  c.setsockopt(fd, SOL_SOCKET, 8 /* SO_RCVBUF */, [bytes], 4);
}

/** Lets another runnable thread or process have the CPU now (sched_yield). */
export function yieldCpu(): void {
  c.schedYield();
}

export function setNonBlocking(fd: number): void {
  const fl = c.fcntl(fd, 3 /* F_GETFL */, 0);
  if (fl < 0 || c.fcntl(fd, 4 /* F_SETFL */, fl | 0o4000) < 0)
    throw new NativeError('fcntl', errno());
}

const SIOCOUTQ = 0x5411;

/**
 * Whether the peer of UNIX stream socket `fd` has read everything sent on it: SIOCOUTQ reports
 * the memory still held by sent data the peer has not read (unix(7)), 0 once it has read all.
 * For tests that must know a server has taken bytes in (e.g. to make it read them one by one).
 */
export function peerHasReadAll(fd: number): boolean {
  const out = [0];
  if (c.ioctlInt(fd, SIOCOUTQ, out) < 0) throw new NativeError('ioctl', errno(), 'SIOCOUTQ');
  return out[0] === 0;
}

export interface Received {
  /** Bytes now in the buffer passed to recv; 0 means the peer closed. */
  bytes: number;
  /** fds that arrived with these bytes, owned by the caller. */
  fds: OwnedFd[];
  /** The kernel dropped fds because the control buffer was too small (MSG_CTRUNC). */
  truncated: boolean;
}

const NO_FDS: OwnedFd[] = []; // never handed out where it could be filled

/**
 * sendmsg/recvmsg with SCM_RIGHTS over one socket, with the msghdr, iovec and control
 * buffers allocated once and written through 32-bit views (no BigInt per call). Buffer
 * addresses are looked up once per ArrayBuffer (their stores never move once their address
 * is taken). Not thread-safe (Node has one thread here).
 */
export class MessageSocket {
  readonly #msg = stableBuffer(56);
  readonly #msg32 = new Uint32Array(this.#msg.buffer, 0, 14);
  readonly #msgAddr = Number(addressOf(this.#msg));
  readonly #iov32 = new Uint32Array(stableBuffer(16 * MAX_PARTS).buffer, 0, 4 * MAX_PARTS);
  readonly #control: Buffer;
  readonly #ctl32: Int32Array;
  readonly #sendBuf = stableBuffer(64 * 1024);
  #scratch: Buffer | null = null; // where discard() reads to (made at its first use)
  readonly #sendAddr: number;
  readonly #ctlAddr: number;
  readonly #addrs = new WeakMap<ArrayBufferLike, number>();
  #lastStore: ArrayBufferLike | null = null;
  #lastAddr = 0;

  constructor(
    readonly fd: number,
    readonly maxFds = MAX_FDS_PER_SENDMSG,
  ) {
    this.#control = stableBuffer(16 + Math.ceil((maxFds * 4) / 8) * 8);
    this.#ctl32 = new Int32Array(this.#control.buffer, 0, this.#control.length >> 2);
    this.#ctlAddr = Number(addressOf(this.#control));
    this.#sendAddr = Number(addressOf(this.#sendBuf));
    const iovAddr = Number(addressOf(new Uint8Array(this.#iov32.buffer)));
    setPtr(this.#msg32, 4, iovAddr);
  }

  /** Address of `buf`'s first byte: one FFI call per ArrayBuffer, then a lookup. */
  #addr(buf: Uint8Array): number {
    const store = buf.buffer;
    if (store !== this.#lastStore) {
      let a = this.#addrs.get(store);
      if (a === undefined) {
        a = Number(addressOf(new Uint8Array(store)));
        this.#addrs.set(store, a);
      }
      this.#lastStore = store;
      this.#lastAddr = a;
    }
    return this.#lastAddr + buf.byteOffset;
  }

  /**
   * Reads what is available into `buf`. Returns null on EAGAIN (nothing to read now).
   * Throws NativeError on a socket error (ECONNRESET etc.).
   */
  recv(buf: Uint8Array): Received | null {
    const n = this.recvInto(buf, 0, buf.length);
    if (n < 0) return null;
    return { bytes: n, fds: this.gotFds ? this.takeFds() : [], truncated: this.truncated };
  }

  /** fds of the last recvInto (owned by the caller from here on). */
  takeFds(): OwnedFd[] {
    const controllen = this.#msg32[10];
    if (controllen === 0) return NO_FDS;
    const ctl = this.#ctl32;
    const fds: OwnedFd[] = [];
    let off = 0;
    while (off + 16 <= controllen) {
      const len = ctl[off >> 2];
      if (len < 16) break;
      const i = off >> 2;
      if (ctl[i + 2] === SOL_SOCKET && ctl[i + 3] === SCM_RIGHTS) {
        for (let p = off + 16; p + 4 <= off + len; p += 4) fds.push(new OwnedFd(ctl[p >> 2]));
      }
      off += Math.ceil(len / 8) * 8;
    }
    this.#msg32[10] = 0;
    return fds;
  }

  /** The last recvInto lost fds to a control buffer too small (MSG_CTRUNC). */
  get truncated(): boolean {
    return (this.#msg32[12] & MSG_CTRUNC) !== 0;
  }

  /** The last recvInto brought fds (collect them with takeFds). */
  get gotFds(): boolean {
    return this.#msg32[10] !== 0;
  }

  /**
   * recvmsg into `buf[off, off + len)`: bytes read (0: the peer closed), or -1 on EAGAIN.
   * fds that came with them wait for takeFds(); `truncated` says whether some were lost.
   */
  recvInto(buf: Uint8Array, off: number, len: number): number {
    return this.#recv(buf, off, len, 0);
  }

  /**
   * Reads from the socket's peek offset on without taking the bytes out of it (MSG_PEEK), once
   * usePeekOffset() set one: each peek continues where the last ended. Returns as recvInto. fds
   * that come are copies (installed again when the bytes are read for real): close them.
   */
  peekInto(buf: Uint8Array, off: number, len: number): number {
    return this.#recv(buf, off, len, MSG_PEEK);
  }

  /**
   * Starts peeking at the first unread byte (SO_PEEK_OFF 0, unix(7)); false where the kernel
   * cannot. Reading for real moves the peek offset back by what is read.
   */
  usePeekOffset(): boolean {
    return c.setsockopt(this.fd, SOL_SOCKET, 42 /* SO_PEEK_OFF */, [0], 4) === 0;
  }

  /**
   * Takes up to `n` bytes out of the socket, already peeked (or not wanted), closing any fds
   * that came with them. Returns how many it took (fewer when the socket has fewer).
   */
  discard(n: number): number {
    let taken = 0;
    this.#scratch ??= stableBuffer(64 * 1024);
    const scratch = this.#scratch;
    while (taken < n) {
      const k = this.#recv(scratch, 0, Math.min(n - taken, scratch.length), 0);
      for (const fd of this.takeFds()) fd.close();
      if (k <= 0) break;
      taken += k;
    }
    return taken;
  }

  #recv(buf: Uint8Array, off: number, len: number, flags: number): number {
    const m = this.#msg32;
    setPtr(this.#iov32, 0, this.#addr(buf) + off);
    setPtr(this.#iov32, 2, len);
    setPtr(m, 6, 1);
    setPtr(m, 8, this.#ctlAddr);
    setPtr(m, 10, this.#control.length);
    m[12] = 0;
    for (;;) {
      const n = c.recvmsg(this.fd, this.#msgAddr, MSG_CMSG_CLOEXEC | MSG_DONTWAIT | flags);
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      m[10] = 0;
      m[11] = 0;
      if (e === EAGAIN) return -1;
      throw new NativeError('recvmsg', e);
    }
  }

  /**
   * Sends as much of `data` (then the `more` parts, in the same sendmsg: up to MAX_PARTS - 1
   * of them) as the socket takes now, with `fds` (borrowed, not closed) attached to the first
   * byte. Returns bytes sent (0 on EAGAIN). fds are only sent when at least one byte is; a
   * caller re-sending the rest must pass no fds.
   */
  send(
    data: Uint8Array,
    fds: readonly number[] = NO_NUMBERS,
    more: readonly Uint8Array[] = NO_PARTS,
  ): number {
    if (fds.length > this.maxFds)
      throw new NativeError('sendmsg', 22, `${fds.length} fds exceed ${this.maxFds}`);
    if (more.length >= MAX_PARTS)
      throw new NativeError('sendmsg', 22, `${more.length + 1} parts exceed ${MAX_PARTS}`);
    const m = this.#msg32,
      iov = this.#iov32;
    if (data.byteLength >= 64 * 1024) {
      // Large arrays always live off the V8 heap (their bytes never move): send them in place.
      setPtr(iov, 0, this.#addr(data));
    } else {
      this.#sendBuf.set(data, 0);
      setPtr(iov, 0, this.#sendAddr);
    }
    setPtr(iov, 2, data.length);
    for (let i = 0; i < more.length; i++) {
      setPtr(iov, 4 * (i + 1), this.#addr(more[i]));
      setPtr(iov, 4 * (i + 1) + 2, more[i].length);
    }
    setPtr(m, 6, 1 + more.length);
    if (fds.length > 0) {
      const ctl = this.#ctl32;
      const len = 16 + 4 * fds.length;
      setPtr(ctl, 0, len);
      ctl[2] = SOL_SOCKET;
      ctl[3] = SCM_RIGHTS;
      for (let i = 0; i < fds.length; i++) ctl[4 + i] = fds[i];
      setPtr(m, 8, this.#ctlAddr);
      setPtr(m, 10, Math.ceil(len / 8) * 8);
    } else {
      setPtr(m, 8, 0);
      setPtr(m, 10, 0);
    }
    for (;;) {
      const n = c.sendmsg(this.fd, this.#msgAddr, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return 0;
      throw new NativeError('sendmsg', e);
    }
  }
}

const NO_NUMBERS: readonly number[] = [];
const NO_PARTS: readonly Uint8Array[] = [];

/** A 64-bit field (pointer or size) at 32-bit index `i` of a little-endian view. */
function setPtr(v: Uint32Array | Int32Array, i: number, value: number): void {
  v[i] = value % 0x1_0000_0000;
  v[i + 1] = Math.floor(value / 0x1_0000_0000);
}
