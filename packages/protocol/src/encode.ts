import { Bytes } from './bytes.js';
import { Command, DirtyPagesFlag, Flag, HEADER_SIZE, RegionFlag } from './constants.js';
import { request as req, reply as rep, writeHeader } from './header.js';
import * as Layout from './layout.js';
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
    const L = Layout.DmaMap;
    const { msg, p } = req(id, Command.DMA_MAP, L.SIZE);
    p.set(L.argsz, m.argsz ?? L.SIZE);
    p.set(L.flags, m.flags);
    p.set(L.offset, m.offset);
    p.set(L.address, m.address);
    p.set(L.size, m.size);
    return msg;
  },
  dmaUnmap(id: number, m: Omit<DmaUnmap, 'argsz'> & { argsz?: number }): Uint8Array {
    const L = Layout.DmaUnmap;
    const B = Layout.DmaUnmapBitmap;
    const n = m.bitmap ? B.SIZE : L.SIZE;
    const { msg, p } = req(id, Command.DMA_UNMAP, n);
    p.set(L.argsz, m.argsz ?? (m.bitmap ? B.SIZE + m.bitmap.size : L.SIZE));
    p.set(L.flags, m.flags);
    p.set(L.address, m.address);
    p.set(L.size, m.size);
    if (m.bitmap) {
      p.set(B.pgsize, m.bitmap.pgsize);
      p.set(B.size, m.bitmap.size);
    }
    return msg;
  },
  dmaUnmapReply(id: number, m: DmaUnmap, bitmap?: Uint8Array): Uint8Array {
    const L = Layout.DmaUnmap;
    const B = Layout.DmaUnmapBitmap;
    const n = m.bitmap ? B.SIZE + (bitmap?.length ?? 0) : L.SIZE;
    const { msg, p } = rep(id, Command.DMA_UNMAP, n);
    p.set(L.argsz, n);
    p.set(L.flags, m.flags);
    p.set(L.address, m.address);
    p.set(L.size, m.size);
    if (m.bitmap) {
      p.set(B.pgsize, m.bitmap.pgsize);
      p.set(B.size, m.bitmap.size);
      if (bitmap) p.u8.set(bitmap, B.SIZE);
    }
    return msg;
  },
  getInfo(id: number, argszV: number = Layout.DeviceInfo.SIZE): Uint8Array {
    const L = Layout.DeviceInfo;
    const { msg, p } = req(id, Command.DEVICE_GET_INFO, L.SIZE);
    p.set(L.argsz, argszV);
    return msg;
  },
  deviceInfo(id: number, i: Omit<DeviceInfo, 'argsz'>): Uint8Array {
    const L = Layout.DeviceInfo;
    const { msg, p } = rep(id, Command.DEVICE_GET_INFO, L.SIZE);
    p.set(L.argsz, L.SIZE);
    p.set(L.flags, i.flags);
    p.set(L.numRegions, i.numRegions);
    p.set(L.numIrqs, i.numIrqs);
    return msg;
  },
  getRegionInfo(id: number, index: number, argszV: number = Layout.RegionInfo.SIZE): Uint8Array {
    const L = Layout.RegionInfo;
    const { msg, p } = req(id, Command.DEVICE_GET_REGION_INFO, L.SIZE);
    p.set(L.argsz, argszV);
    p.set(L.index, index);
    return msg;
  },
  /** Region info with its capability chain, cut to the client's argsz as §4.2 says. */
  regionInfo(
    id: number,
    clientArgsz: number,
    r: Omit<RegionInfo, 'argsz' | 'capOffset'>,
  ): { msg: Uint8Array; withCaps: boolean } {
    const L = Layout.RegionInfo;
    const caps = encodeRegionCaps(r.caps);
    const full = L.SIZE + caps.length;
    const withCaps = caps.length > 0 && clientArgsz >= full;
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_INFO, withCaps ? full : L.SIZE);
    p.set(L.argsz, full);
    p.set(L.flags, r.flags | (withCaps ? RegionFlag.CAPS : 0));
    p.set(L.index, r.index);
    p.set(L.capOffset, withCaps ? L.SIZE : 0);
    p.set(L.size, r.size);
    p.set(L.offset, r.offset);
    if (withCaps) p.u8.set(caps, L.SIZE);
    return { msg, withCaps };
  },
  ioFdsReply(id: number, index: number): Uint8Array {
    const L = Layout.IoFds;
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_IO_FDS, L.SIZE);
    p.set(L.argsz, L.SIZE);
    p.set(L.index, index);
    return msg;
  },
  getIrqInfo(id: number, index: number, argszV: number = Layout.IrqInfo.SIZE): Uint8Array {
    const L = Layout.IrqInfo;
    const { msg, p } = req(id, Command.DEVICE_GET_IRQ_INFO, L.SIZE);
    p.set(L.argsz, argszV);
    p.set(L.index, index);
    return msg;
  },
  irqInfo(id: number, i: Omit<IrqInfo, 'argsz'>): Uint8Array {
    const L = Layout.IrqInfo;
    const { msg, p } = rep(id, Command.DEVICE_GET_IRQ_INFO, L.SIZE);
    p.set(L.argsz, L.SIZE);
    p.set(L.flags, i.flags);
    p.set(L.index, i.index);
    p.set(L.count, i.count);
    return msg;
  },
  setIrqs(id: number, s: Omit<SetIrqs, 'argsz'>): Uint8Array {
    const L = Layout.SetIrqs;
    const n = L.SIZE + (s.bools?.length ?? 0);
    const { msg, p } = req(id, Command.DEVICE_SET_IRQS, n);
    p.set(L.argsz, n);
    p.set(L.flags, s.flags);
    p.set(L.index, s.index);
    p.set(L.start, s.start);
    p.set(L.count, s.count);
    if (s.bools) p.u8.set(s.bools, L.SIZE);
    return msg;
  },
  regionRead(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = req(id, Command.REGION_READ, Layout.RegionAccess.SIZE);
    writeAccess(p, a.offset, a.region, a.count);
    return msg;
  },
  regionWrite(id: number, a: RegionAccess & { data: Uint8Array }, noReply = false): Uint8Array {
    const n = Layout.RegionAccess.SIZE + a.data.length;
    const { msg, p } = req(id, Command.REGION_WRITE, n, noReply, true);
    writeAccess(p, a.offset, a.region, a.data.length);
    p.u8.set(a.data, Layout.RegionAccess.SIZE);
    return msg;
  },
  /** The first 32 bytes of a REGION_WRITE of `a.count` bytes, for sending them beside it. */
  regionWriteHead(id: number, a: RegionAccess, noReply = false): Uint8Array {
    return accessHead(id, Command.REGION_WRITE, noReply ? Flag.NO_REPLY : 0, a);
  },
  /** REGION_READ reply: fill `data` (count bytes) in place to avoid a copy. */
  regionReadReply(id: number, a: RegionAccess): { msg: Uint8Array; data: Uint8Array } {
    // The handler fills all `count` bytes.
    const { msg, p } = rep(id, Command.REGION_READ, Layout.RegionAccess.SIZE + a.count, true);
    writeAccess(p, a.offset, a.region, a.count);
    return { msg, data: p.u8.subarray(Layout.RegionAccess.SIZE) };
  },
  /** The first 32 bytes of a REGION_READ reply, for sending its `count` bytes beside it. */
  regionReadReplyHead(id: number, a: RegionAccess): Uint8Array {
    return accessHead(id, Command.REGION_READ, Flag.REPLY, a);
  },
  regionWriteReply(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = rep(id, Command.REGION_WRITE, Layout.RegionAccess.SIZE);
    writeAccess(p, a.offset, a.region, a.count);
    return msg;
  },
  writeMulti(
    id: number,
    writes: (RegionAccess & { data: Uint8Array })[],
    noReply = true,
  ): Uint8Array {
    const L = Layout.WriteMulti;
    const W = Layout.WriteMultiEntry;
    const { msg, p } = req(
      id,
      Command.REGION_WRITE_MULTI,
      L.SIZE + W.SIZE * writes.length,
      noReply,
    );
    p.set(L.count, writes.length);
    writes.forEach((w, i) => {
      const o = L.SIZE + W.SIZE * i;
      if (w.data.length > W.MAX_DATA)
        throw new RangeError(`REGION_WRITE_MULTI entries carry at most ${W.MAX_DATA} bytes`);
      p.setAt(o, W.offset, w.offset);
      p.setAt(o, W.region, w.region);
      p.setAt(o, W.count, w.data.length);
      p.u8.set(w.data, o + W.DATA);
    });
    return msg;
  },
  writeMultiReply(id: number, done: number): Uint8Array {
    const L = Layout.WriteMulti;
    const { msg, p } = rep(id, Command.REGION_WRITE_MULTI, L.SIZE);
    p.set(L.count, done);
    return msg;
  },
  reset(id: number): Uint8Array {
    return req(id, Command.DEVICE_RESET, 0).msg;
  },
  empty(id: number, cmd: Command): Uint8Array {
    return rep(id, cmd, 0).msg;
  },
  dirtyPages(id: number, d: DirtyPages): Uint8Array {
    const L = Layout.DirtyPages;
    const { msg, p } = req(id, Command.DIRTY_PAGES, d.range ? Layout.DirtyRange.SIZE : L.SIZE);
    p.set(L.argsz, d.argsz);
    p.set(L.flags, d.flags);
    if (d.range) writeDirtyRange(p, d.range);
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
    const L = Layout.DirtyPages;
    const R = Layout.DirtyRange;
    const full = R.SIZE + bitmap.length;
    const fits = clientArgsz >= full;
    const { msg, p } = rep(id, Command.DIRTY_PAGES, fits ? full : L.SIZE);
    p.set(L.argsz, full);
    p.set(L.flags, DirtyPagesFlag.GET_BITMAP);
    if (!fits) return msg;
    writeDirtyRange(p, range);
    p.u8.set(bitmap, R.SIZE);
    return msg;
  },
  feature(
    id: number,
    flags: number,
    data: Uint8Array = new Uint8Array(0),
    argszV?: number,
  ): Uint8Array {
    const L = Layout.Feature;
    const { msg, p } = req(id, Command.DEVICE_FEATURE, L.SIZE + data.length);
    p.set(L.argsz, argszV ?? L.SIZE + data.length);
    p.set(L.flags, flags);
    p.u8.set(data, L.SIZE);
    return msg;
  },
  featureReply(id: number, flags: number, data: Uint8Array): Uint8Array {
    const L = Layout.Feature;
    const { msg, p } = rep(id, Command.DEVICE_FEATURE, L.SIZE + data.length);
    p.set(L.argsz, L.SIZE + data.length);
    p.set(L.flags, flags);
    p.u8.set(data, L.SIZE);
    return msg;
  },
  migDataRead(id: number, size: number, argszV = Layout.MigData.SIZE + size): Uint8Array {
    const L = Layout.MigData;
    const { msg, p } = req(id, Command.MIG_DATA_READ, L.SIZE);
    p.set(L.argsz, argszV);
    p.set(L.size, size);
    return msg;
  },
  /** MIG_DATA_READ reply with exactly the bytes there are (clients must trust `size`, §8.6). */
  migDataReadReply(id: number, data: Uint8Array): Uint8Array {
    const { msg } = rep(id, Command.MIG_DATA_READ, Layout.MigData.SIZE + data.length, true);
    msg.set(data, MIG_DATA_AT);
    return encode.migDataReadReplyIn(msg, id, data.length);
  },
  /** The same reply around `n` data bytes already placed at offset 24 of `buf` (no copy). */
  migDataReadReplyIn(buf: Uint8Array, id: number, n: number): Uint8Array {
    const msg = buf.subarray(0, MIG_DATA_AT + n);
    writeHeader(msg, {
      id,
      cmd: Command.MIG_DATA_READ,
      size: msg.length,
      flags: Flag.REPLY,
      error: 0,
    });
    writeMigData(msg, n);
    return msg;
  },
  /** The first 24 bytes of a MIG_DATA_READ reply with `n` data bytes (sent beside them). */
  migDataReadReplyHead(id: number, n: number): Uint8Array {
    return migDataHead(id, Command.MIG_DATA_READ, Flag.REPLY, n);
  },
  /** The first 24 bytes of a MIG_DATA_WRITE of `n` bytes, for sending its data beside it. */
  migDataWriteHead(id: number, n: number): Uint8Array {
    return migDataHead(id, Command.MIG_DATA_WRITE, 0, n);
  },
  migDataWrite(id: number, data: Uint8Array): Uint8Array {
    const L = Layout.MigData;
    const { msg, p } = req(id, Command.MIG_DATA_WRITE, L.SIZE + data.length, false, true);
    p.set(L.argsz, L.SIZE + data.length);
    p.set(L.size, data.length);
    p.u8.set(data, L.SIZE);
    return msg;
  },
};

/** Where a MIG_DATA message's data starts, counted from the header's first byte. */
const MIG_DATA_AT = HEADER_SIZE + Layout.MigData.SIZE;
const REGION_DATA_AT = HEADER_SIZE + Layout.RegionAccess.SIZE;

/** The MIG_DATA body (argsz, size) of a whole message `msg` carrying `n` data bytes. */
function writeMigData(msg: Uint8Array, n: number): void {
  const L = Layout.MigData;
  const p = new Bytes(msg.subarray(HEADER_SIZE));
  p.set(L.argsz, L.SIZE + n);
  p.set(L.size, n);
}

/** Header and access triple of a REGION_READ/WRITE message whose `a.count` bytes go beside. */
function accessHead(id: number, cmd: Command, flags: number, a: RegionAccess): Uint8Array {
  const msg = new Uint8Array(REGION_DATA_AT);
  writeHeader(msg, { id, cmd, size: REGION_DATA_AT + a.count, flags, error: 0 });
  writeAccess(new Bytes(msg.subarray(HEADER_SIZE)), a.offset, a.region, a.count);
  return msg;
}

/** Header and MIG_DATA body of a message whose `n` data bytes go beside it. */
function migDataHead(id: number, cmd: Command, flags: number, n: number): Uint8Array {
  const msg = new Uint8Array(MIG_DATA_AT);
  writeHeader(msg, { id, cmd, size: MIG_DATA_AT + n, flags, error: 0 });
  writeMigData(msg, n);
  return msg;
}

/** The REGION_READ/REGION_WRITE body, in requests and replies alike. */
function writeAccess(p: Bytes, offset: number, region: number, count: number): void {
  const L = Layout.RegionAccess;
  p.set(L.offset, offset);
  p.set(L.region, region);
  p.set(L.count, count);
}

/** DIRTY_PAGES' bitmap range, after its 8-byte body. */
function writeDirtyRange(p: Bytes, r: DirtyRange): void {
  const R = Layout.DirtyRange;
  p.set(R.iova, r.iova);
  p.set(R.size, r.size);
  p.set(R.pgsize, r.pgsize);
  p.set(R.bitmapSize, r.bitmapSize);
}
