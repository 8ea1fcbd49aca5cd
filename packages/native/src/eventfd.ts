import { readlinkSync } from 'node:fs';
import { c, errno } from './libc.js';
import { E, NativeError } from './errors.js';
import { OwnedFd } from './fd.js';

const EFD_NONBLOCK = 0o4000,
  EFD_CLOEXEC = 0o2000000;
const scratch = Buffer.alloc(8);

/** A non-blocking, close-on-exec eventfd. */
export function eventfdCreate(initial = 0): OwnedFd {
  const fd = c.eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw new NativeError('eventfd', errno());
  return new OwnedFd(fd);
}

/** Adds `value` to an eventfd's counter (this is how an interrupt is raised). */
export function eventfdWrite(fd: number, value = 1n): void {
  scratch.writeBigUInt64LE(value);
  for (;;) {
    const n = Number(c.write(fd, scratch, 8));
    if (n === 8) return;
    const e = errno();
    if (n < 0 && e === E.EINTR) continue;
    throw new NativeError('eventfd write', n < 0 ? e : E.EIO);
  }
}

/** Reads and resets the counter; null if it is zero (EAGAIN). */
export function eventfdRead(fd: number): bigint | null {
  for (;;) {
    const n = Number(c.read(fd, scratch, 8));
    if (n === 8) return scratch.readBigUInt64LE();
    const e = errno();
    if (n < 0 && e === E.EINTR) continue;
    if (n < 0 && e === E.EAGAIN) return null;
    throw new NativeError('eventfd read', n < 0 ? e : E.EIO);
  }
}

/** Whether `fd` is an eventfd (as SET_IRQS fds must be): the kernel names its inode so. */
export function isEventfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}
