import { readdirSync } from 'node:fs';
import { c, errno } from './libc.js';
import { E, NativeError } from './errors.js';

/**
 * One open file descriptor with one owner. `close()` closes it exactly once; `take()` hands
 * the number to a new owner (the old handle then refuses to be used).
 */
export class OwnedFd {
  #fd: number;
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`not an fd: ${fd}`);
    this.#fd = fd;
  }
  get fd(): number {
    if (this.#fd < 0)
      throw new NativeError('use', E.EBADF, 'file descriptor already closed or moved');
    return this.#fd;
  }
  get closed(): boolean {
    return this.#fd < 0;
  }
  /** Moves ownership out: the caller must close the returned fd. */
  take(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    if (c.close(fd) < 0) {
      const e = errno();
      if (e !== E.EINTR) throw new NativeError('close', e);
    }
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Closes raw fds that nobody took (e.g. fds that arrived with a message that had no use for them).
 */
export function closeAll(fds: Iterable<OwnedFd>): void {
  for (const f of fds) f.close();
}

/** Number of open fds of this process (for leak checks). */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

export function dupFd(fd: number): OwnedFd {
  const n = c.fcntl(fd, 1030 /* F_DUPFD_CLOEXEC */, 0);
  if (n < 0) throw new NativeError('fcntl(F_DUPFD_CLOEXEC)', errno());
  return new OwnedFd(n);
}

// Offsets in struct stat, the same on x86-64 and arm64.
const ST_DEV = 0;
const ST_INO = 8;
const ST_SIZE = 48;

/** fstat(2) of `fd`: the fields we use, or null with errno set. */
export function fileStat(fd: number): { dev: bigint; ino: bigint; size: number } | null {
  const st = Buffer.alloc(144);
  if (c.fstat(fd, st) < 0) return null;
  return {
    dev: st.readBigUInt64LE(ST_DEV),
    ino: st.readBigUInt64LE(ST_INO),
    size: Number(st.readBigInt64LE(ST_SIZE)),
  };
}

/** st_dev and st_ino, to tell whether two fds refer to the same file. */
export function fileIdentity(fd: number): string {
  const st = fileStat(fd);
  if (!st) throw new NativeError('fstat', errno());
  return `${st.dev}:${st.ino}`;
}
