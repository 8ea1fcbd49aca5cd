// Moving bytes between two sockets the caller has to itself for a while (c/relay.c): exact
// reads and writes that wait with a bound, and a pipe through which splice(2) hands pages from
// one socket to the other without copying them through this process.
import { relayIo } from './libc.js';
import { NativeError } from './errors.js';
import { OwnedFd } from './fd.js';

function check(call: string, r: number, detail: string): void {
  if (r < 0) throw new NativeError(call, -r, detail);
}

/** The C side's timeout: whole ms from now, clamped; -1 (no limit) for Infinity. */
function cTimeout(ms: number): number {
  if (ms === Number.POSITIVE_INFINITY) return -1;
  return Math.max(0, Math.min(Math.ceil(ms), 2 ** 31 - 1));
}

/** A recvExact or sendExact that failed after `done` of its bytes had moved. */
export class ShortIoError extends NativeError {
  constructor(
    syscall: string,
    errno: number,
    detail: string,
    readonly done: number,
  ) {
    super(syscall, errno, detail);
  }
}

function exact(call: 'recv' | 'send', fd: number, buf: Uint8Array, timeoutMs: number): void {
  const done = [0];
  const io = call === 'recv' ? relayIo.recvExact : relayIo.sendExact;
  const r = io(fd, buf, buf.length, cTimeout(timeoutMs), done);
  if (r < 0) throw new ShortIoError(call, -r, `${done[0]} of ${buf.length} bytes`, done[0]);
}

/**
 * Reads exactly `buf.length` bytes from a socket within `timeoutMs` (Infinity: no limit) or
 * throws ShortIoError (ETIMEDOUT, EPIPE if the peer closes first) saying how many came. fds
 * sent with them are closed, never received.
 */
export function recvExact(fd: number, buf: Uint8Array, timeoutMs: number): void {
  exact('recv', fd, buf, timeoutMs);
}

/** Writes all of `buf` to a socket within `timeoutMs`, or throws ShortIoError. */
export function sendExact(fd: number, buf: Uint8Array, timeoutMs: number): void {
  exact('send', fd, buf, timeoutMs);
}

/**
 * A SplicePipe.move() that failed: by then `taken` bytes had left the source socket and
 * `given` reached the destination; `side` is the one that failed.
 */
export class SpliceError extends NativeError {
  constructor(
    errno: number,
    detail: string,
    readonly side: 'source' | 'destination',
    readonly taken: number,
    readonly given: number,
  ) {
    super('splice', errno, `${detail} (the ${side} failed)`);
  }
}

/** A pipe that splice(2) moves bytes through, socket to socket. */
export class SplicePipe {
  #spoiled = false;

  private constructor(
    readonly readEnd: OwnedFd,
    readonly writeEnd: OwnedFd,
  ) {}

  static open(): SplicePipe {
    const fds = [0, 0];
    check('pipe2', relayIo.pipe(fds), 'a relay pipe');
    return new SplicePipe(new OwnedFd(fds[0]), new OwnedFd(fds[1]));
  }

  /**
   * Moves exactly `n` bytes (below 4 GiB) from socket `src` to socket `dst` within `timeoutMs`
   * (Infinity: no limit), or throws SpliceError. After a failure the pipe may hold bytes of the
   * stream: it refuses to move more (open another).
   */
  move(src: number, dst: number, n: number, timeoutMs: number): void {
    if (this.#spoiled) throw new Error('SplicePipe: an earlier move failed; open another pipe');
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32) throw new RangeError(`move of ${n} bytes`);
    const moved = [0, 0],
      dstFailed = [0];
    const pipe = [this.readEnd.fd, this.writeEnd.fd];
    const ms = cTimeout(timeoutMs);
    const e = relayIo.spliceExact(src, dst, pipe[0], pipe[1], n, ms, moved, dstFailed);
    if (e === 0) return;
    this.#spoiled = true;
    const side = dstFailed[0] ? 'destination' : 'source';
    throw new SpliceError(-e, `${n} bytes from fd ${src} to fd ${dst}`, side, moved[0], moved[1]);
  }

  close(): void {
    this.readEnd.close();
    this.writeEnd.close();
  }
}
