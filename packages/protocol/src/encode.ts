import { Bytes } from './bytes.js';
import { Command, DirtyPagesFlag, Flag } from './constants.js';
import { request as req, reply as rep, writeHeader } from './header.js';
import { encodeRegionCaps } from './region-caps.js';
import type {
  DmaMap,
  DmaUnmap,
  DeviceInfo,
  RegionInfo,
  IrqInfo,
  SetIrqs,
  RegionAccess,
  DirtyPages,
  DirtyRange,
} from './types.js';

// Encoders. Requests are what the client sends; replies what the server sends (and vice versa for
// DMA_READ/DMA_WRITE, which flow server → client).

export const encode = {
  dmaMap(id: number, m: Omit<DmaMap, 'argsz'> & { argsz?: number }): Uint8Array {
    const { msg, p } = req(id, Command.DMA_MAP, 32);
    p.setU32(0, m.argsz ?? 32);
    p.setU32(4, m.flags);
    p.setU64(8, m.offset);
    p.setU64(16, m.address);
    p.setU64(24, m.size);
    return msg;
  },
  dmaUnmap(id: number, m: Omit<DmaUnmap, 'argsz'> & { argsz?: number }): Uint8Array {
    const n = m.bitmap ? 40 : 24;
    const { msg, p } = req(id, Command.DMA_UNMAP, n);
    p.setU32(0, m.argsz ?? (m.bitmap ? 40 + m.bitmap.size : 24));
    p.setU32(4, m.flags);
    p.setU64(8, m.address);
    p.setU64(16, m.size);
    if (m.bitmap) {
      p.setU64(24, m.bitmap.pgsize);
      p.setU64(32, m.bitmap.size);
    }
    return msg;
  },
  dmaUnmapReply(id: number, m: DmaUnmap, bitmap?: Uint8Array): Uint8Array {
    const n = m.bitmap ? 40 + (bitmap?.length ?? 0) : 24;
    const { msg, p } = rep(id, Command.DMA_UNMAP, n);
    p.setU32(0, n);
    p.setU32(4, m.flags);
    p.setU64(8, m.address);
    p.setU64(16, m.size);
    if (m.bitmap) {
      p.setU64(24, m.bitmap.pgsize);
      p.setU64(32, m.bitmap.size);
      if (bitmap) p.u8.set(bitmap, 40);
    }
    return msg;
  },
  getInfo(id: number, argszV = 16): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_INFO, 16);
    p.setU32(0, argszV);
    return msg;
  },
  deviceInfo(id: number, i: Omit<DeviceInfo, 'argsz'>): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_INFO, 16);
    p.setU32(0, 16);
    p.setU32(4, i.flags);
    p.setU32(8, i.numRegions);
    p.setU32(12, i.numIrqs);
    return msg;
  },
  getRegionInfo(id: number, index: number, argszV = 32): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_REGION_INFO, 32);
    p.setU32(0, argszV);
    p.setU32(8, index);
    return msg;
  },
  /** Region info with its capability chain, cut to the client's argsz as §4.2 says. */
  regionInfo(
    id: number,
    clientArgsz: number,
    r: Omit<RegionInfo, 'argsz' | 'capOffset'>,
  ): { msg: Uint8Array; withCaps: boolean } {
    const caps = encodeRegionCaps(r.caps);
    const full = 32 + caps.length;
    const withCaps = caps.length > 0 && clientArgsz >= full;
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_INFO, withCaps ? full : 32);
    p.setU32(0, full);
    p.setU32(4, r.flags | (withCaps ? 8 : 0));
    p.setU32(8, r.index);
    p.setU32(12, withCaps ? 32 : 0);
    p.setU64(16, r.size);
    p.setU64(24, r.offset);
    if (withCaps) p.u8.set(caps, 32);
    return { msg, withCaps };
  },
  ioFdsReply(id: number, index: number): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_IO_FDS, 16);
    p.setU32(0, 16);
    p.setU32(8, index);
    return msg;
  },
  getIrqInfo(id: number, index: number, argszV = 16): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_IRQ_INFO, 16);
    p.setU32(0, argszV);
    p.setU32(8, index);
    return msg;
  },
  irqInfo(id: number, i: Omit<IrqInfo, 'argsz'>): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_IRQ_INFO, 16);
    p.setU32(0, 16);
    p.setU32(4, i.flags);
    p.setU32(8, i.index);
    p.setU32(12, i.count);
    return msg;
  },
  setIrqs(id: number, s: Omit<SetIrqs, 'argsz'>): Uint8Array {
    const n = 20 + (s.bools?.length ?? 0);
    const { msg, p } = req(id, Command.DEVICE_SET_IRQS, n);
    p.setU32(0, n);
    p.setU32(4, s.flags);
    p.setU32(8, s.index);
    p.setU32(12, s.start);
    p.setU32(16, s.count);
    if (s.bools) p.u8.set(s.bools, 20);
    return msg;
  },
  regionRead(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = req(id, Command.REGION_READ, 16);
    p.setU64(0, a.offset);
    p.setU32(8, a.region);
    p.setU32(12, a.count);
    return msg;
  },
  regionWrite(id: number, a: RegionAccess & { data: Uint8Array }, noReply = false): Uint8Array {
    const { msg, p } = req(id, Command.REGION_WRITE, 16 + a.data.length, noReply, true);
    p.setU64(0, a.offset);
    p.setU32(8, a.region);
    p.setU32(12, a.data.length);
    p.u8.set(a.data, 16);
    return msg;
  },
  /** REGION_READ reply: fill `data` (count bytes) in place to avoid a copy. */
  regionReadReply(id: number, a: RegionAccess): { msg: Uint8Array; data: Uint8Array } {
    // The handler fills all `count` bytes.
    const { msg, p } = rep(id, Command.REGION_READ, 16 + a.count, true);
    p.setU64(0, a.offset);
    p.setU32(8, a.region);
    p.setU32(12, a.count);
    return { msg, data: p.u8.subarray(16) };
  },
  regionWriteReply(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = rep(id, Command.REGION_WRITE, 16);
    p.setU64(0, a.offset);
    p.setU32(8, a.region);
    p.setU32(12, a.count);
    return msg;
  },
  writeMulti(
    id: number,
    writes: (RegionAccess & { data: Uint8Array })[],
    noReply = true,
  ): Uint8Array {
    const { msg, p } = req(id, Command.REGION_WRITE_MULTI, 8 + 24 * writes.length, noReply);
    p.setU64(0, writes.length);
    writes.forEach((w, i) => {
      const o = 8 + 24 * i;
      if (w.data.length > 8)
        throw new RangeError('REGION_WRITE_MULTI entries carry at most 8 bytes');
      p.setU64(o, w.offset);
      p.setU32(o + 8, w.region);
      p.setU32(o + 12, w.data.length);
      p.u8.set(w.data, o + 16);
    });
    return msg;
  },
  writeMultiReply(id: number, done: number): Uint8Array {
    const { msg, p } = rep(id, Command.REGION_WRITE_MULTI, 8);
    p.setU64(0, done);
    return msg;
  },
  reset(id: number): Uint8Array {
    return req(id, Command.DEVICE_RESET, 0).msg;
  },
  empty(id: number, cmd: Command): Uint8Array {
    return rep(id, cmd, 0).msg;
  },
  dirtyPages(id: number, d: DirtyPages): Uint8Array {
    const { msg, p } = req(id, Command.DIRTY_PAGES, d.range ? 40 : 8);
    p.setU32(0, d.argsz);
    p.setU32(4, d.flags);
    if (d.range) {
      p.setU64(8, d.range.iova);
      p.setU64(16, d.range.size);
      p.setU64(24, d.range.pgsize);
      p.setU64(32, d.range.bitmapSize);
    }
    return msg;
  },
  /**
   * DIRTY_PAGES GET_BITMAP reply; header-only (argsz set) when the client's argsz is too small
   * (§6.2).
   */
  dirtyPagesReply(
    id: number,
    clientArgsz: number,
    range: DirtyRange,
    bitmap: Uint8Array,
  ): Uint8Array {
    const full = 40 + bitmap.length;
    if (clientArgsz < full) {
      const { msg, p } = rep(id, Command.DIRTY_PAGES, 8);
      p.setU32(0, full);
      p.setU32(4, DirtyPagesFlag.GET_BITMAP);
      return msg;
    }
    const { msg, p } = rep(id, Command.DIRTY_PAGES, full);
    p.setU32(0, full);
    p.setU32(4, DirtyPagesFlag.GET_BITMAP);
    p.setU64(8, range.iova);
    p.setU64(16, range.size);
    p.setU64(24, range.pgsize);
    p.setU64(32, range.bitmapSize);
    p.u8.set(bitmap, 40);
    return msg;
  },
  feature(
    id: number,
    flags: number,
    data: Uint8Array = new Uint8Array(0),
    argszV?: number,
  ): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_FEATURE, 8 + data.length);
    p.setU32(0, argszV ?? 8 + data.length);
    p.setU32(4, flags);
    p.u8.set(data, 8);
    return msg;
  },
  featureReply(id: number, flags: number, data: Uint8Array): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_FEATURE, 8 + data.length);
    p.setU32(0, 8 + data.length);
    p.setU32(4, flags);
    p.u8.set(data, 8);
    return msg;
  },
  migDataRead(id: number, size: number, argszV = 8 + size): Uint8Array {
    const { msg, p } = req(id, Command.MIG_DATA_READ, 8);
    p.setU32(0, argszV);
    p.setU32(4, size);
    return msg;
  },
  /** MIG_DATA_READ reply with exactly the bytes there are (clients must trust `size`, §8.6). */
  migDataReadReply(id: number, data: Uint8Array): Uint8Array {
    const { msg } = rep(id, Command.MIG_DATA_READ, 8 + data.length, true);
    msg.set(data, 24);
    return encode.migDataReadReplyIn(msg, id, data.length);
  },
  /** The same reply around `n` data bytes already placed at offset 24 of `buf` (no copy). */
  migDataReadReplyIn(buf: Uint8Array, id: number, n: number): Uint8Array {
    const msg = buf.subarray(0, 24 + n);
    writeHeader(msg, {
      id,
      cmd: Command.MIG_DATA_READ,
      size: msg.length,
      flags: Flag.REPLY,
      error: 0,
    });
    const p = new Bytes(msg.subarray(16));
    p.setU32(0, 8 + n);
    p.setU32(4, n);
    return msg;
  },
  /** The first 24 bytes of a MIG_DATA_READ reply with `n` data bytes (sent beside them). */
  migDataReadReplyHead(id: number, n: number): Uint8Array {
    const msg = new Uint8Array(24);
    writeHeader(msg, { id, cmd: Command.MIG_DATA_READ, size: 24 + n, flags: Flag.REPLY, error: 0 });
    const p = new Bytes(msg.subarray(16));
    p.setU32(0, 8 + n);
    p.setU32(4, n);
    return msg;
  },
  /** The first 24 bytes of a MIG_DATA_WRITE of `n` bytes, for sending its data beside it. */
  migDataWriteHead(id: number, n: number): Uint8Array {
    const msg = new Uint8Array(24);
    writeHeader(msg, { id, cmd: Command.MIG_DATA_WRITE, size: 24 + n, flags: 0, error: 0 });
    const p = new Bytes(msg.subarray(16));
    p.setU32(0, 8 + n);
    p.setU32(4, n);
    return msg;
  },
  migDataWrite(id: number, data: Uint8Array): Uint8Array {
    const { msg, p } = req(id, Command.MIG_DATA_WRITE, 8 + data.length, false, true);
    p.setU32(0, 8 + data.length);
    p.setU32(4, data.length);
    p.u8.set(data, 8);
    return msg;
  },
};
