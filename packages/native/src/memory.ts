import { c, errno, viewOf } from './libc.js';
import { E, NativeError } from './errors.js';
import { OwnedFd, fileStat } from './fd.js';

const PROT_READ = 1,
  PROT_WRITE = 2,
  MAP_SHARED = 1,
  MAP_PRIVATE = 2,
  MAP_FIXED = 0x10,
  MAP_ANONYMOUS = 0x20,
  MAP_NORESERVE = 0x4000;
const WINDOW = 1 << 30; // views are cut in windows: a view over 4 GiB aborts the process
export const PAGE_SIZE = 4096;

// Once a mapping is released, its address range holds an anonymous overlay so that stale
// views read zeros instead of faulting; the overlay goes when every view is collected.
const overlays = new FinalizationRegistry<{ addr: number; len: number; views: number }>(r => {
  if (--r.views === 0) c.munmap(r.addr, r.len);
});

/** A shared mapping of (part of) a file, read and written through bounded views. */
export class MappedMemory {
  #addr: number;
  readonly #windows = new Map<number, Uint8Array>();
  readonly #views: ArrayBuffer[] = [];

  private constructor(
    addr: number,
    readonly length: number,
    readonly writable: boolean,
  ) {
    this.#addr = addr;
  }

  static map(fd: number, offset: number, length: number, writable = true): MappedMemory {
    if (length <= 0 || offset < 0 || offset % PAGE_SIZE !== 0)
      throw new NativeError('mmap', E.EINVAL, `offset ${offset} length ${length}`);
    const prot = PROT_READ | (writable ? PROT_WRITE : 0);
    const addr = c.mmap(0, length, prot, MAP_SHARED, fd, offset);
    if (addr === 0 || addr >= 2 ** 63)
      throw new NativeError('mmap', errno(), `fd ${fd} offset ${offset} length ${length}`);
    return new MappedMemory(addr, length, writable);
  }

  get mapped(): boolean {
    return this.#addr !== 0;
  }

  /** Bytes [offset, offset+len) as a zero-copy view. Valid until release(); then it reads zeros. */
  bytes(offset: number, len: number): Uint8Array {
    if (this.#addr === 0) throw new NativeError('access', E.EFAULT, 'mapping released');
    if (!(offset >= 0 && len >= 0 && offset + len <= this.length))
      throw new RangeError(`[${offset}, +${len}) outside mapping of ${this.length}`);
    const w = Math.floor(offset / WINDOW);
    const end = offset + len;
    if (len > 0 && Math.floor((end - 1) / WINDOW) !== w) {
      // Crosses a window boundary: a fresh view of exactly this range (rare).
      const ab = viewOf(this.#addr + offset, len);
      this.#views.push(ab);
      return new Uint8Array(ab);
    }
    let win = this.#windows.get(w);
    if (!win) {
      const ab = viewOf(this.#addr + w * WINDOW, Math.min(WINDOW, this.length - w * WINDOW));
      this.#views.push(ab);
      win = new Uint8Array(ab);
      this.#windows.set(w, win);
    }
    return win.subarray(offset - w * WINDOW, end - w * WINDOW);
  }

  /**
   * Unmaps. Views handed out before keep working but see zeros; the address is never reused by us.
   */
  release(): void {
    if (this.#addr === 0) return;
    const addr = this.#addr;
    this.#addr = 0;
    if (this.#views.length === 0) {
      c.munmap(addr, this.length);
      return;
    }
    const r = c.mmap(
      addr,
      this.length,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_NORESERVE,
      -1,
      0,
    );
    if (r !== addr) {
      c.munmap(addr, this.length);
      return;
    }
    const overlay = { addr, len: this.length, views: this.#views.length };
    for (const v of this.#views) overlays.register(v, overlay);
    this.#views.length = 0;
    this.#windows.clear();
  }
}

const MFD_CLOEXEC = 1,
  MFD_ALLOW_SEALING = 2;
const F_ADD_SEALS = 1033,
  F_SEAL_SEAL = 1,
  F_SEAL_SHRINK = 2,
  F_SEAL_GROW = 4;

/**
 * An anonymous shared-memory file (memfd) of `size` bytes, sealed at that size: a process it is
 * given to cannot shrink it under our mapping (a read past the end would kill us with SIGBUS),
 * nor grow it (memfd_create(2), F_SEAL_SHRINK and F_SEAL_GROW).
 */
export function memfdCreate(name: string, size: number): OwnedFd {
  const fd = c.memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw new NativeError('memfd_create', errno());
  const owned = new OwnedFd(fd);
  try {
    truncate(fd, size);
    if (c.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
      throw new NativeError('fcntl', errno(), 'F_ADD_SEALS');
  } catch (e) {
    owned.close();
    throw e;
  }
  return owned;
}

const F_GET_SEALS = 1034;
/**
 * Whether [offset, offset + length) of `fd` can be mapped without the mapping ever reaching past
 * the file's end: the file is that long and sealed against shrinking (F_SEAL_SHRINK), so whoever
 * sent it cannot truncate it under us. Touching a mapping past the end kills the process
 * (SIGBUS).
 */
export function safeToMap(fd: number, offset: number, length: number): boolean {
  const seals = c.fcntl(fd, F_GET_SEALS, 0);
  if (seals < 0 || (seals & F_SEAL_SHRINK) === 0) return false;
  const st = fileStat(fd);
  return st !== null && offset + length <= st.size;
}

export function truncate(fd: number, size: number): void {
  if (c.ftruncate(fd, size) < 0) throw new NativeError('ftruncate', errno());
}

const SEEK_DATA = 3;

/**
 * Whether bytes [offset, offset + len) of a memfd (or other file) were never written: no page
 * backs them, so they read as zeros (lseek's SEEK_DATA finds no data before their end).
 */
export function isHole(fd: number, offset: number, len: number): boolean {
  const at = Number(c.lseek(fd, offset, SEEK_DATA));
  if (at >= 0) return at >= offset + len;
  const e = errno();
  if (e === E.ENXIO) return true; // no data at or after `offset`
  throw new NativeError('lseek', e, `SEEK_DATA at ${offset}`);
}
