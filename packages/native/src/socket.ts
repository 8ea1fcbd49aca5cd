import { c, errno, addressOf, stableBuffer } from './libc.js';
import { NativeError } from './errors.js';
import { OwnedFd } from './fd.js';

const AF_UNIX = 1,
  SOCK_STREAM = 1,
  SOCK_NONBLOCK = 0o4000,
  SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1,
  SCM_RIGHTS = 1;
const MSG_CTRUNC = 0x8,
  MSG_DONTWAIT = 0x40,
  MSG_NOSIGNAL = 0x4000,
  MSG_CMSG_CLOEXEC = 0x40000000;
const EAGAIN = 11,
  EINTR = 4;

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

/** A non-blocking listening UNIX stream socket bound to `path`. */
export function listenUnix(path: string, backlog = 16): OwnedFd {
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
export function connectUnix(path: string): OwnedFd {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new NativeError('socket', errno());
  const owned = new OwnedFd(fd);
  const sa = sockaddrUn(path);
  if (c.connect(fd, sa, sa.length) < 0) {
    const e = errno();
    owned.close();
    throw new NativeError('connect', e, path);
  }
  setNonBlocking(fd);
  setBufferSizes(fd);
  return owned;
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
export function setBufferSizes(fd: number, bytes = 4 << 20): void {
  c.setsockopt(fd, SOL_SOCKET, 7 /* SO_SNDBUF */, [bytes], 4);
  c.setsockopt(fd, SOL_SOCKET, 8 /* SO_RCVBUF */, [bytes], 4);
}

export function setNonBlocking(fd: number): void {
  const fl = c.fcntl(fd, 3 /* F_GETFL */, 0);
  if (fl < 0 || c.fcntl(fd, 4 /* F_SETFL */, fl | 0o4000) < 0)
    throw new NativeError('fcntl', errno());
}

export interface Received {
  /** Bytes now in the buffer passed to recv; 0 means the peer closed. */
  bytes: number;
  /** fds that arrived with these bytes, owned by the caller. */
  fds: OwnedFd[];
  /** The kernel dropped fds because the control buffer was too small (MSG_CTRUNC). */
  truncated: boolean;
}

/**
 * sendmsg/recvmsg with SCM_RIGHTS over one socket, with the msghdr, iovec and control
 * buffers allocated once. Not thread-safe (Node has one thread here).
 */
export class MessageSocket {
  readonly #msg = stableBuffer(56);
  readonly #iov = stableBuffer(16);
  readonly #control: Buffer;
  #sendBuf = stableBuffer(64 * 1024);

  readonly #ctlAddr: bigint;
  #sendAddr: bigint;
  #lastBuf: Uint8Array | null = null;
  #lastAddr = 0n;

  constructor(
    readonly fd: number,
    readonly maxFds = MAX_FDS_PER_SENDMSG,
  ) {
    this.#control = stableBuffer(16 + Math.ceil((maxFds * 4) / 8) * 8);
    this.#ctlAddr = addressOf(this.#control);
    this.#sendAddr = addressOf(this.#sendBuf);
    this.#msg.writeBigUInt64LE(addressOf(this.#iov), 16);
    this.#msg.writeBigUInt64LE(1n, 24);
  }

  /** Address of `buf`'s first byte; views of the last buffer seen cost no FFI call. */
  #addr(buf: Uint8Array): bigint {
    const last = this.#lastBuf;
    if (last && last.buffer === buf.buffer)
      return this.#lastAddr + BigInt(buf.byteOffset - last.byteOffset);
    this.#lastBuf = buf;
    this.#lastAddr = addressOf(buf);
    return this.#lastAddr;
  }

  /**
   * Reads what is available into `buf`. Returns null on EAGAIN (nothing to read now).
   * Throws NativeError on a socket error (ECONNRESET etc.).
   */
  recv(buf: Uint8Array): Received | null {
    const msg = this.#msg,
      ctl = this.#control;
    this.#iov.writeBigUInt64LE(this.#addr(buf), 0);
    this.#iov.writeBigUInt64LE(BigInt(buf.length), 8);
    msg.writeBigUInt64LE(this.#ctlAddr, 32);
    msg.writeBigUInt64LE(BigInt(ctl.length), 40);
    msg.writeInt32LE(0, 48);
    let n: number;
    for (;;) {
      n = Number(c.recvmsg(this.fd, msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT));
      if (n >= 0) break;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return null;
      throw new NativeError('recvmsg', e);
    }
    const fds: OwnedFd[] = [];
    const controllen = Number(msg.readBigUInt64LE(40));
    let off = 0;
    while (off + 16 <= controllen) {
      const len = Number(ctl.readBigUInt64LE(off));
      if (len < 16) break;
      if (ctl.readInt32LE(off + 8) === SOL_SOCKET && ctl.readInt32LE(off + 12) === SCM_RIGHTS) {
        for (let p = off + 16; p + 4 <= off + len; p += 4)
          fds.push(new OwnedFd(ctl.readInt32LE(p)));
      }
      off += Math.ceil(len / 8) * 8;
    }
    return { bytes: n, fds, truncated: (msg.readInt32LE(48) & MSG_CTRUNC) !== 0 };
  }

  /**
   * Sends as much of `data` as the socket takes now, with `fds` (borrowed, not closed) attached
   * to the first byte. Returns bytes sent (0 on EAGAIN). fds are only sent when at least one
   * byte is; a caller re-sending the rest must pass no fds.
   */
  send(data: Uint8Array, fds: readonly number[] = []): number {
    if (fds.length > this.maxFds)
      throw new NativeError('sendmsg', 22, `${fds.length} fds exceed ${this.maxFds}`);
    const msg = this.#msg;
    if (data.byteLength >= 64 * 1024) {
      // Large arrays always live off the V8 heap (their bytes never move): send them in place.
      this.#iov.writeBigUInt64LE(this.#addr(data), 0);
    } else {
      this.#sendBuf.set(data, 0);
      this.#iov.writeBigUInt64LE(this.#sendAddr, 0);
    }
    this.#iov.writeBigUInt64LE(BigInt(data.length), 8);
    if (fds.length > 0) {
      const ctl = this.#control;
      const len = 16 + 4 * fds.length;
      ctl.writeBigUInt64LE(BigInt(len), 0);
      ctl.writeInt32LE(SOL_SOCKET, 8);
      ctl.writeInt32LE(SCM_RIGHTS, 12);
      fds.forEach((f, i) => ctl.writeInt32LE(f, 16 + 4 * i));
      msg.writeBigUInt64LE(this.#ctlAddr, 32);
      msg.writeBigUInt64LE(BigInt(Math.ceil(len / 8) * 8), 40);
    } else {
      msg.writeBigUInt64LE(0n, 32);
      msg.writeBigUInt64LE(0n, 40);
    }
    for (;;) {
      const n = Number(c.sendmsg(this.fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT));
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return 0;
      throw new NativeError('sendmsg', e);
    }
  }
}
