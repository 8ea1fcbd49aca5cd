// The client's memory as the device sees it: the DMA map table (§3.1, §3.2, §6.1), device reads
// and writes of guest memory (mapped fds directly; fd-less ranges through DMA_READ/DMA_WRITE
// messages), and dirty-page logging of the device's writes (§6.2-§6.4).
import { MappedMemory, fileIdentity, type OwnedFd } from '@vfu/native';
import { Errno, DmaMapFlag, bitmapBytes, setBit, type DmaMap, type LogRange } from '@vfu/protocol';
import { isPow2 } from './bits.js';
import { DmaError, PciError } from './errors.js';

interface Mapping {
  address: number;
  size: number;
  flags: number;
  offset: number;
  fd?: OwnedFd;
  map?: MappedMemory;
  identity?: string;
}

/** How fd-less ranges are reached: the server sends DMA_READ/DMA_WRITE to the client. */
export interface MessageDma {
  read(address: number, len: number): Promise<Uint8Array>;
  write(address: number, data: Uint8Array): Promise<void>;
}

export interface GuestMemoryLimits {
  maxMaps: number;
  pageSize: number;
  maxMapSize: number;
}

export class GuestMemory {
  #maps: Mapping[] = []; // sorted by address
  #logPage = 0; // dirty logging page size; 0 = off
  #dirty = new Set<number>(); // dirty pages (iova / #logPage)
  messages: MessageDma | null = null;

  constructor(readonly limits: GuestMemoryLimits) {}

  get mappings(): readonly { address: number; size: number; flags: number; hasFd: boolean }[] {
    return this.#maps.map(m => ({
      address: m.address,
      size: m.size,
      flags: m.flags,
      hasFd: !!m.fd,
    }));
  }

  /** DMA_MAP. Takes ownership of `fd`; a refused mapping throws a PciError (fd closed). */
  map(req: DmaMap, fd?: OwnedFd): void {
    const fail = (errno: number, why: string) => {
      fd?.close();
      const range = `0x${req.address.toString(16)}+0x${req.size.toString(16)}`;
      return new PciError(errno, `DMA_MAP ${range}: ${why}`);
    };
    const { pageSize, maxMapSize, maxMaps } = this.limits;
    if (req.flags & ~(DmaMapFlag.READ | DmaMapFlag.WRITE))
      throw fail(Errno.EINVAL, `unknown flags 0x${req.flags.toString(16)}`);
    if (req.size === 0 || req.address % pageSize || req.size % pageSize || req.offset % pageSize)
      throw fail(Errno.EINVAL, `empty, or not aligned to the ${pageSize}-byte page`);
    if (req.size > maxMapSize) throw fail(Errno.ENOSPC, `larger than ${maxMapSize} bytes`);
    if (
      req.address + req.size > Number.MAX_SAFE_INTEGER ||
      req.offset + req.size > Number.MAX_SAFE_INTEGER
    )
      throw fail(Errno.EINVAL, 'address or offset overflows');
    const identity = fd ? fileIdentity(fd.fd) : undefined;
    const over = this.#maps.find(
      m => req.address < m.address + m.size && m.address < req.address + req.size,
    );
    if (over) {
      const same =
        over.address === req.address &&
        over.size === req.size &&
        over.flags === req.flags &&
        over.identity === identity &&
        (!fd || over.offset === req.offset);
      if (same) {
        fd?.close(); // the same mapping again: nothing to do (QEMU repeats them)
        return;
      }
      throw fail(Errno.EINVAL, 'overlaps another mapping');
    }
    if (this.#maps.length >= maxMaps) throw fail(Errno.EINVAL, `more than ${maxMaps} mappings`);
    const m: Mapping = {
      address: req.address,
      size: req.size,
      flags: req.flags,
      offset: req.offset,
      fd,
      identity,
    };
    if (fd) {
      try {
        m.map = MappedMemory.map(fd.fd, req.offset, req.size, (req.flags & DmaMapFlag.WRITE) !== 0);
      } catch (e) {
        throw fail((e as { errno?: number }).errno ?? Errno.EFAULT, (e as Error).message);
      }
    }
    this.#maps.push(m);
    this.#maps.sort((a, b) => a.address - b.address);
  }

  /**
   * DMA_UNMAP of exactly one mapping (else a PciError, ENOENT). Returns its dirty bitmap, read
   * first, when `bitmapPage` is given.
   */
  unmap(address: number, size: number, bitmapPage?: number): Uint8Array | undefined {
    const i = this.#maps.findIndex(m => m.address === address && m.size === size);
    if (i < 0) {
      const range = `0x${address.toString(16)}+0x${size.toString(16)}`;
      throw new PciError(Errno.ENOENT, `DMA_UNMAP ${range}: no mapping with this address and size`);
    }
    const bitmap = bitmapPage === undefined ? undefined : this.report(address, size, bitmapPage);
    this.#release(this.#maps[i]);
    this.#maps.splice(i, 1);
    return bitmap;
  }

  unmapAll(): void {
    for (const m of this.#maps) this.#release(m);
    this.#maps = [];
  }

  #release(m: Mapping): void {
    m.map?.release();
    m.fd?.close();
  }

  #find(address: number, len: number): Mapping[] | null {
    const out: Mapping[] = [];
    let at = address;
    const end = address + len;
    for (const m of this.#maps) {
      if (m.address + m.size <= at) continue;
      if (m.address > at) return null; // hole
      out.push(m);
      at = m.address + m.size;
      if (at >= end) return out;
    }
    return at >= end ? out : null;
  }

  /**
   * Reads guest memory (the device's DMA). Throws DmaError (ENOENT unmapped, EACCES not readable).
   */
  async read(address: number, len: number): Promise<Uint8Array> {
    const ms = this.#find(address, len);
    if (!ms)
      throw new DmaError(
        Errno.ENOENT,
        `DMA read of [0x${address.toString(16)}, +${len}) outside mapped memory`,
      );
    const out = new Uint8Array(len);
    for (const m of ms) {
      if (!(m.flags & DmaMapFlag.READ))
        throw new DmaError(
          Errno.EACCES,
          `DMA read from a mapping without READ at 0x${m.address.toString(16)}`,
        );
      const s = Math.max(address, m.address),
        e = Math.min(address + len, m.address + m.size);
      if (m.map) out.set(m.map.bytes(s - m.address, e - s), s - address);
      else if (this.messages) out.set(await this.messages.read(s, e - s), s - address);
      else throw new DmaError(Errno.EFAULT, 'fd-less mapping and no message channel');
    }
    return out;
  }

  /**
   * A live view of guest memory for synchronous access, when [address, +len) lies in one
   * fd-backed mapping with the access allowed; throws DmaError otherwise. The view is valid
   * only until control returns to the event loop (a DMA_UNMAP may follow): never keep it.
   * Writers call dirtied() after writing so that dirty logging sees the pages.
   */
  view(address: number, len: number, write: boolean): Uint8Array {
    const m = this.#maps.find(x => address >= x.address && address < x.address + x.size);
    const at = `[0x${address.toString(16)}, +${len})`;
    if (!m || address + len > m.address + m.size)
      throw new DmaError(Errno.ENOENT, `guest memory ${at} is not inside one mapping`);
    if (!m.map) throw new DmaError(Errno.EFAULT, `guest memory ${at} is not fd-backed`);
    const need = write ? DmaMapFlag.WRITE : DmaMapFlag.READ;
    if (!(m.flags & need))
      throw new DmaError(
        Errno.EACCES,
        `guest memory ${at} is mapped without ${write ? 'WRITE' : 'READ'}`,
      );
    return m.map.bytes(address - m.address, len);
  }

  /** Records a device write through a view() for dirty logging. */
  dirtied(address: number, len: number): void {
    this.#markDirty(address, len);
  }

  /** Writes guest memory; marks the pages dirty while logging. */
  async write(address: number, data: Uint8Array): Promise<void> {
    const ms = this.#find(address, data.length);
    if (!ms)
      throw new DmaError(
        Errno.ENOENT,
        `DMA write of [0x${address.toString(16)}, +${data.length}) outside mapped memory`,
      );
    for (const m of ms)
      if (!(m.flags & DmaMapFlag.WRITE))
        throw new DmaError(
          Errno.EPERM,
          `DMA write to a read-only mapping at 0x${m.address.toString(16)}`,
        );
    for (const m of ms) {
      const s = Math.max(address, m.address),
        e = Math.min(address + data.length, m.address + m.size);
      const part = data.subarray(s - address, e - address);
      if (m.map) {
        m.map.bytes(s - m.address, e - s).set(part);
        this.#markDirty(s, e - s);
      } else if (this.messages)
        await this.messages.write(s, part); // the client sees these writes itself
      else throw new DmaError(Errno.EFAULT, 'fd-less mapping and no message channel');
    }
  }

  #markDirty(address: number, len: number): void {
    if (!this.#logPage || len === 0) return;
    for (
      let p = Math.floor(address / this.#logPage);
      p <= Math.floor((address + len - 1) / this.#logPage);
      p++
    )
      this.#dirty.add(p);
  }

  get logging(): boolean {
    return this.#logPage !== 0;
  }
  get logPageSize(): number {
    return this.#logPage;
  }

  /**
   * DMA_LOGGING_START / DIRTY_PAGES START. Ranges are checked (§6.4) but every mapped page is
   * logged.
   */
  startLogging(pageSize: number, ranges: LogRange[] = []): void {
    const refuse = (errno: number, why: string) =>
      new PciError(errno, `dirty logging at ${pageSize}-byte pages: ${why}`);
    if (!isPow2(pageSize) || pageSize < this.limits.pageSize)
      throw refuse(Errno.EINVAL, `not a power of two of at least ${this.limits.pageSize}`);
    const sorted = [...ranges].sort((a, b) => a.iova - b.iova);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i];
      if (r.iova % pageSize || r.length % pageSize || r.length === 0)
        throw refuse(Errno.EINVAL, 'a range is empty or not aligned to the page');
      if (r.iova + r.length > Number.MAX_SAFE_INTEGER)
        throw refuse(Errno.EOVERFLOW, 'a range overflows');
      if (i > 0 && sorted[i - 1].iova + sorted[i - 1].length > r.iova)
        throw refuse(Errno.EINVAL, 'ranges overlap');
    }
    if (this.#logPage === pageSize) return; // started already, at this page size
    if (this.#logPage) throw refuse(Errno.EINVAL, `logging runs at ${this.#logPage} already`);
    this.#logPage = pageSize;
    this.#dirty.clear();
  }

  stopLogging(): void {
    this.#logPage = 0;
    this.#dirty.clear();
  }

  /**
   * Dirty bitmap of [iova, iova+length) at `pageSize`, read-and-clear. Any range is accepted,
   * across mappings and holes (unmapped pages read 0), as QEMU's REPORT needs (§6.4).
   */
  report(iova: number, length: number, pageSize: number): Uint8Array {
    const refuse = (errno: number, why: string) =>
      new PciError(
        errno,
        `dirty bitmap of 0x${iova.toString(16)}+0x${length.toString(16)}: ${why}`,
      );
    if (!this.#logPage) throw refuse(Errno.EINVAL, 'dirty logging is not started');
    if (!isPow2(pageSize) || pageSize < 4096 || length === 0)
      throw refuse(Errno.EINVAL, `empty, or page size ${pageSize} not a power of two >= 4096`);
    if (iova + length > Number.MAX_SAFE_INTEGER) throw refuse(Errno.EOVERFLOW, 'overflows');
    const bm = new Uint8Array(bitmapBytes(length, pageSize));
    const lp = this.#logPage;
    const first = Math.floor(iova / lp),
      last = Math.floor((iova + length - 1) / lp);
    const visit = (p: number) => {
      const a = Math.max(p * lp, iova),
        b = Math.min((p + 1) * lp, iova + length) - 1;
      for (let q = Math.floor((a - iova) / pageSize); q <= Math.floor((b - iova) / pageSize); q++)
        setBit(bm, q);
      this.#dirty.delete(p);
    };
    if (last - first < this.#dirty.size) {
      for (let p = first; p <= last; p++) if (this.#dirty.has(p)) visit(p);
    } else for (const p of [...this.#dirty]) if (p >= first && p <= last) visit(p);
    return bm;
  }
}
