// What a region is to the device kit: a size, a way to read and write it, and optionally
// pages the client may map directly (memfd + sparse mmap areas), so hot pages skip the socket.
import { MappedMemory, memfdCreate, isHole, type OwnedFd } from '@vfu/native';
import { isPow2 } from './bits.js';

export interface RegionHandler {
  readonly size: number;
  read(offset: number, out: Uint8Array): void;
  /** `data` is valid during the call only (it may be the receive buffer): copy what is kept. */
  write(offset: number, data: Uint8Array): void;
  /**
   * write() of a 1, 2 or 4-byte access given as its little-endian value (optional): a register
   * file takes a guest's doorbell without the bytes being copied and decoded again.
   */
  writeValue?(offset: number, width: 1 | 2 | 4, value: number): void;
  /**
   * The bytes a read would return, where the region has them at hand (sent as they are, no
   * copy into a reply): valid until the handler's next call. Null (or absent): read().
   */
  view?(offset: number, len: number): Uint8Array | null;
  /**
   * Memory the client can map: the fd, and areas (relative to the region) it may map.
   * `handedOut` is called when the fd is given to a client.
   */
  readonly mappable?: {
    fd: OwnedFd;
    areas: { offset: number; size: number }[];
    handedOut?: () => void;
  };
}

export type BarKind = 'mem32' | 'mem64' | 'io';
export interface Bar {
  kind: BarKind;
  size: number;
  prefetchable: boolean;
  handler: RegionHandler;
  /** The bits a BAR register always reads back with. */
  readonly typeBits: number;
}

/**
 * Declares a BAR. Sizes must be powers of two (QEMU aborts otherwise), memory
 * BARs at least 16 bytes, I/O BARs at least 4 and at most 256 bytes.
 */
export function bar(kind: BarKind, handler: RegionHandler, prefetchable = false): Bar {
  const size = handler.size;
  if (!isPow2(size))
    throw new RangeError(`BAR size ${size} is not a power of two (QEMU would abort)`);
  if (kind !== 'io' && size < 16)
    throw new RangeError(`memory BAR of ${size} bytes: the minimum is 16`);
  if (kind === 'io' && (size < 4 || size > 256))
    throw new RangeError(`I/O BAR of ${size} bytes: 4 to 256 allowed`);
  if (kind === 'mem32' && size > 2 ** 31)
    throw new RangeError('a 32-bit memory BAR is at most 2 GiB; use mem64');
  if (kind === 'io' && prefetchable) throw new RangeError('an I/O BAR cannot be prefetchable');
  const typeBits = kind === 'io' ? 1 : (kind === 'mem64' ? 0b100 : 0) | (prefetchable ? 0b1000 : 0);
  return { kind, size, prefetchable, handler, typeBits };
}

// ---------------------------------------------------------------------------------------------
// Register maps: a table of registers, each with its offset, width and handlers.

export interface Register<S> {
  offset: number;
  width: 1 | 2 | 4 | 8;
  name?: string;
  read?: (state: S) => number | bigint;
  write?: (state: S, value: number | bigint) => void;
}

export interface RegisterMapOptions {
  /** Accept accesses narrower than a register (read the bytes of its value / merge on write). */
  partial?: boolean;
}

/**
 * A region made of registers. Accesses must hit a register at its offset and width (or, with
 * `partial`, bytes inside one); other accesses read as zero and ignore writes, as unimplemented
 * registers of real hardware do.
 */
export function registers<S>(
  size: number,
  state: S,
  regs: Register<S>[],
  opts: RegisterMapOptions = {},
): RegionHandler {
  // Register by `offset * 16 + width` (widths 1, 2, 4, 8), as an array: the posted-write path
  // looks a register up per message. An access wider than 8 bytes matches none.
  const byAccess: (Register<S> | undefined)[] = new Array(
    regs.reduce((m, r) => Math.max(m, r.offset * 16 + r.width + 1), 0),
  );
  const lookup = (offset: number, width: number) =>
    width <= 8 ? byAccess[offset * 16 + width] : undefined;
  // Byte -> register, only as far as the last register (a huge BAR with few registers stays small).
  const cover: (Register<S> | undefined)[] = new Array(
    regs.reduce((m, r) => Math.max(m, r.offset + r.width), 0),
  );
  for (const r of regs) {
    if (r.offset + r.width > size)
      throw new RangeError(`register ${r.name ?? r.offset} beyond the region`);
    byAccess[r.offset * 16 + r.width] = r;
    for (let i = 0; i < r.width; i++)
      if (!cover[r.offset + i] || cover[r.offset + i]!.width < r.width) cover[r.offset + i] = r;
  }
  const dv = new DataView(new ArrayBuffer(8));
  const get = (r: Register<S>) => {
    const v = r.read ? r.read(state) : 0;
    dv.setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
  };
  const write = (offset: number, data: Uint8Array) => {
    const r = lookup(offset, data.length);
    if (r?.write) {
      r.write(state, data.length === 8 ? u64Of(data) : uintOf(data, r.width));
      return;
    }
    if (r || !(opts.partial || data.length === 1)) return;
    for (let i = 0; i < data.length; i++) {
      const c = cover[offset + i];
      if (!c?.write) continue;
      get(c);
      dv.setUint8(offset + i - c.offset, data[i]);
      const v = dv.getBigUint64(0, true);
      c.write(state, c.width === 8 ? v : Number(v & ((1n << BigInt(8 * c.width)) - 1n)));
    }
  };
  return {
    size,
    read(offset, out) {
      const r = lookup(offset, out.length);
      if (r) {
        get(r);
        out.set(new Uint8Array(dv.buffer, 0, r.width));
        return;
      }
      for (let i = 0; i < out.length; i++) {
        const c = cover[offset + i];
        if (c && (opts.partial || out.length === 1)) {
          get(c);
          out[i] = dv.getUint8(offset + i - c.offset);
        } else out[i] = 0;
      }
    },
    write,
    writeValue(offset, width, value) {
      const r = lookup(offset, width);
      if (r?.write) r.write(state, value);
      else if (!r) write(offset, bytesOf(value, width));
    },
  };
}

/** The value of a 1, 2 or 4-byte little-endian access (no DataView per write: doorbells). */
function uintOf(data: Uint8Array, width: number): number {
  if (width === 1) return data[0];
  if (width === 2) return data[0] | (data[1] << 8);
  return (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0;
}

const u64Of = (data: Uint8Array) =>
  new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);

/** A 1, 2 or 4-byte access's little-endian bytes (the slow way, for partial writes). */
function bytesOf(value: number, width: number): Uint8Array {
  const out = new Uint8Array(width);
  for (let i = 0; i < width; i++) out[i] = (value >>> (8 * i)) & 0xff;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared memory: a memfd the server maps too; the client may map all of it.

/** Bytes per flag of SharedMemory.writes. */
export const WRITE_BLOCK = 256 * 1024;

export interface SharedMemory extends RegionHandler {
  /** A view of the memory, handed out: writes through it are not seen (see writes). */
  readonly bytes: (offset: number, len: number) => Uint8Array;
  /**
   * A view for the migration's own use (a source reading, a destination loading checked
   * records): unlike bytes(), it does not count as handed out.
   */
  readonly view: (offset: number, len: number) => Uint8Array;
  /**
   * Which WRITE_BLOCK-sized blocks write() changed since the flag was last cleared (1 = written;
   * the caller clears flags). Null once writes can bypass the server: the fd was given to a
   * client (it may map it) or a view was handed out by bytes().
   */
  writes(): Uint8Array | null;
  /** Whether [offset, offset + len) was never written (no page backs it: it reads as zeros). */
  isHole(offset: number, len: number): boolean;
  release(): void;
}

export function sharedMemory(
  name: string,
  size: number,
  opts: { mappable?: boolean } = {},
): SharedMemory {
  const fd = memfdCreate(name, size);
  const map = MappedMemory.map(fd.fd, 0, size);
  const written = new Uint8Array(Math.ceil(size / WRITE_BLOCK));
  let unseen = false; // writes may bypass write(): through a client's mapping or a view
  const unseenFromNow = () => {
    unseen = true;
  };
  return {
    size,
    read(offset, out) {
      out.set(map.bytes(offset, out.length));
    },
    write(offset, data) {
      map.bytes(offset, data.length).set(data);
      if (data.length === 0) return;
      const first = Math.floor(offset / WRITE_BLOCK),
        last = Math.floor((offset + data.length - 1) / WRITE_BLOCK);
      written.fill(1, first, last + 1);
    },
    mappable:
      opts.mappable === false
        ? undefined
        : { fd, areas: [{ offset: 0, size }], handedOut: unseenFromNow },
    bytes: (offset, len) => {
      unseen = true;
      return map.bytes(offset, len);
    },
    view: (offset, len) => map.bytes(offset, len),
    writes: () => (unseen ? null : written),
    isHole: (offset, len) => isHole(fd.fd, offset, len),
    release() {
      map.release();
      fd.close();
    },
  };
}

/** Parses sizes such as 4096, 64K, 64M, 1G, 1T (binary units; "iB" or "B" may follow). */
export function parseSize(s: string): number {
  const m = /^(\d+)([KMGT]?)(?:iB|B)?$/i.exec(s.trim());
  if (!m) throw new RangeError(`not a size: "${s}" (examples: 4096, 64K, 64M, 1G, 1T)`);
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[
    m[2].toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ];
  const n = Number(m[1]) * unit;
  if (n === 0) throw new RangeError(`a size of zero ("${s}") leaves nothing to emulate`);
  if (!Number.isSafeInteger(n)) throw new RangeError(`"${s}" is too large a size`);
  return n;
}
