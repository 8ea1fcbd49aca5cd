// Payload codecs for commands 2-18. Decoders take the payload (after the header) and return a
// typed message or a ProtocolError with the reference's errno; data fields are zero-copy views
// into the payload, so nothing is allocated from a length the peer chose.
import { Bytes, MAX_SAFE } from './bytes.js';
import { Command, DirtyPagesFlag, DmaUnmapFlag, FeatureFlag, Flag, Irq, IrqSetFlag, MIB, RegionCapId } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import { frame } from './header.js';

export interface DmaMap { argsz: number; flags: number; offset: number; address: number; size: number }
export interface BitmapSpec { pgsize: number; size: number }
export interface DmaUnmap { argsz: number; flags: number; address: number; size: number; bitmap?: BitmapSpec }
export interface DmaUnmapReply extends DmaUnmap { bitmapData?: Uint8Array }
export interface DeviceInfo { argsz: number; flags: number; numRegions: number; numIrqs: number }
export interface RegionInfoRequest { argsz: number; index: number }
export type RegionCap =
  | { id: typeof RegionCapId.SPARSE_MMAP; areas: { offset: number; size: number }[] }
  | { id: typeof RegionCapId.TYPE; type: number; subtype: number };
export interface RegionInfo { argsz: number; flags: number; index: number; capOffset: number; size: number; offset: number; caps: RegionCap[] }
export interface IoFdsRequest { argsz: number; flags: number; index: number; count: number }
export interface IrqInfoRequest { argsz: number; index: number }
export interface IrqInfo { argsz: number; flags: number; index: number; count: number }
export interface SetIrqs { argsz: number; flags: number; index: number; start: number; count: number; bools?: Uint8Array }
export interface RegionAccess { offset: number; region: number; count: number; data?: Uint8Array }
export interface DmaTransfer { address: number; count: number; data?: Uint8Array }
export interface DirtyRange { iova: number; size: number; pgsize: number; bitmapSize: number }
export interface DirtyPages { argsz: number; flags: number; range?: DirtyRange; bitmap?: Uint8Array }
export interface WriteMulti { writes: RegionAccess[] }
export interface FeatureMessage { argsz: number; flags: number; data: Uint8Array }
export interface MigData { argsz: number; size: number; data?: Uint8Array }

/** A client's command, decoded. */
export type Request =
  | { cmd: Command.DMA_MAP; body: DmaMap }
  | { cmd: Command.DMA_UNMAP; body: DmaUnmap }
  | { cmd: Command.DEVICE_GET_INFO; body: { argsz: number } }
  | { cmd: Command.DEVICE_GET_REGION_INFO; body: RegionInfoRequest }
  | { cmd: Command.DEVICE_GET_REGION_IO_FDS; body: IoFdsRequest }
  | { cmd: Command.DEVICE_GET_IRQ_INFO; body: IrqInfoRequest }
  | { cmd: Command.DEVICE_SET_IRQS; body: SetIrqs }
  | { cmd: Command.REGION_READ; body: RegionAccess }
  | { cmd: Command.REGION_WRITE; body: RegionAccess }
  | { cmd: Command.DEVICE_RESET; body: Record<string, never> }
  | { cmd: Command.DIRTY_PAGES; body: DirtyPages }
  | { cmd: Command.REGION_WRITE_MULTI; body: WriteMulti }
  | { cmd: Command.DEVICE_FEATURE; body: FeatureMessage }
  | { cmd: Command.MIG_DATA_READ; body: MigData }
  | { cmd: Command.MIG_DATA_WRITE; body: MigData };

export interface DecodeLimits {
  /** Largest `count` the server takes in REGION_READ/WRITE (its own max_data_xfer_size). */
  maxRegionXfer: number;
  /** Largest MIG_DATA size: the client's max_data_xfer_size (§8.6). */
  maxMigXfer: number;
}
export const defaultLimits: DecodeLimits = { maxRegionXfer: MIB, maxMigXfer: MIB };

const need = (p: Bytes, n: number, what: string) => p.length < n ? einval(`${what}: payload of ${p.length} bytes, need at least ${n}`) : null;
const argsz = (v: number, n: number, what: string) => v < n ? einval(`${what}: argsz ${v} is smaller than ${n}`) : null;
const oneBit = (v: number) => v !== 0 && (v & (v - 1)) === 0;

/** Decodes a client command's payload (structural checks only; device-dependent checks are the server's). */
export function decodeRequest(cmd: number, payload: Uint8Array, fdCount: number, lim: DecodeLimits = defaultLimits): Request | ProtocolError {
  const p = new Bytes(payload);
  let e: ProtocolError | null;
  switch (cmd) {
    case Command.DMA_MAP: {
      if ((e = need(p, 32, 'DMA_MAP'))) return e;
      const body = { argsz: p.u32(0), flags: p.u32(4), offset: p.u64(8), address: p.u64(16), size: p.u64(24) };
      if ((e = argsz(body.argsz, 32, 'DMA_MAP'))) return e;
      return { cmd, body };
    }
    case Command.DMA_UNMAP: {
      if ((e = need(p, 24, 'DMA_UNMAP'))) return e;
      const body: DmaUnmap = { argsz: p.u32(0), flags: p.u32(4), address: p.u64(8), size: p.u64(16) };
      if (body.flags !== 0 && body.flags !== DmaUnmapFlag.GET_DIRTY_BITMAP && body.flags !== DmaUnmapFlag.ALL) return einval(`DMA_UNMAP flags 0x${body.flags.toString(16)}: only GET_DIRTY_BITMAP (1) or ALL (2)`);
      if ((e = argsz(body.argsz, 24, 'DMA_UNMAP'))) return e;
      if (body.argsz > MIB) return einval(`DMA_UNMAP argsz ${body.argsz} exceeds 1 MiB`);
      if (body.flags === DmaUnmapFlag.ALL && (body.address !== 0 || body.size !== 0)) return einval('DMA_UNMAP ALL with a non-zero address or size');
      if (body.flags === DmaUnmapFlag.GET_DIRTY_BITMAP) {
        if ((e = need(p, 40, 'DMA_UNMAP with GET_DIRTY_BITMAP'))) return e;
        body.bitmap = { pgsize: p.u64(24), size: p.u64(32) };
        if (body.argsz < 40 + body.bitmap.size) return einval(`DMA_UNMAP argsz ${body.argsz} cannot hold a ${body.bitmap.size}-byte bitmap`);
      }
      return { cmd, body };
    }
    case Command.DEVICE_GET_INFO: {
      if ((e = need(p, 16, 'DEVICE_GET_INFO'))) return e;
      const body = { argsz: p.u32(0) };
      if ((e = argsz(body.argsz, 16, 'DEVICE_GET_INFO'))) return e;
      return { cmd, body };
    }
    case Command.DEVICE_GET_REGION_INFO: {
      if ((e = need(p, 32, 'DEVICE_GET_REGION_INFO'))) return e;
      const body = { argsz: p.u32(0), index: p.u32(8) };
      if ((e = argsz(body.argsz, 32, 'DEVICE_GET_REGION_INFO'))) return e;
      return { cmd, body };
    }
    case Command.DEVICE_GET_REGION_IO_FDS: {
      if ((e = need(p, 16, 'DEVICE_GET_REGION_IO_FDS'))) return e;
      const body = { argsz: p.u32(0), flags: p.u32(4), index: p.u32(8), count: p.u32(12) };
      if (body.flags !== 0 || body.count !== 0) return einval('DEVICE_GET_REGION_IO_FDS flags and count must be 0');
      if ((e = argsz(body.argsz, 16, 'DEVICE_GET_REGION_IO_FDS'))) return e;
      if (body.argsz > MIB) return einval(`DEVICE_GET_REGION_IO_FDS argsz ${body.argsz} exceeds 1 MiB`);
      return { cmd, body };
    }
    case Command.DEVICE_GET_IRQ_INFO: {
      if ((e = need(p, 16, 'DEVICE_GET_IRQ_INFO'))) return e;
      const body = { argsz: p.u32(0), index: p.u32(8) };
      if ((e = argsz(body.argsz, 16, 'DEVICE_GET_IRQ_INFO'))) return e;
      if (body.index >= Irq.COUNT) return einval(`IRQ index ${body.index} does not exist (0-4)`);
      return { cmd, body };
    }
    case Command.DEVICE_SET_IRQS: {
      if ((e = need(p, 20, 'DEVICE_SET_IRQS'))) return e;
      const body: SetIrqs = { argsz: p.u32(0), flags: p.u32(4), index: p.u32(8), start: p.u32(12), count: p.u32(16) };
      if ((e = argsz(body.argsz, 20, 'DEVICE_SET_IRQS'))) return e;
      if ((e = checkSetIrqs(body, p.length, fdCount))) return e;
      if (body.flags & IrqSetFlag.DATA_BOOL) body.bools = payload.subarray(20, 20 + body.count);
      return { cmd, body };
    }
    case Command.REGION_READ:
    case Command.REGION_WRITE: {
      const name = Command[cmd];
      if ((e = need(p, 16, name))) return e;
      const body: RegionAccess = { offset: p.u64(0), region: p.u32(8), count: p.u32(12) };
      if (body.count > lim.maxRegionXfer) return einval(`${name} count ${body.count} exceeds max_data_xfer_size ${lim.maxRegionXfer}`);
      if (cmd === Command.REGION_WRITE) {
        if (p.length - 16 !== body.count) return einval(`REGION_WRITE carries ${p.length - 16} data bytes but count is ${body.count}`);
        body.data = payload.subarray(16);
      }
      return { cmd, body };
    }
    case Command.DEVICE_RESET:
      return { cmd, body: {} };
    case Command.DIRTY_PAGES: {
      if ((e = need(p, 8, 'DIRTY_PAGES'))) return e;
      const body: DirtyPages = { argsz: p.u32(0), flags: p.u32(4) };
      if ((e = argsz(body.argsz, 8, 'DIRTY_PAGES'))) return e;
      const op = body.flags;
      if (!oneBit(op) || (op & ~(DirtyPagesFlag.START | DirtyPagesFlag.STOP | DirtyPagesFlag.GET_BITMAP)) !== 0) return einval(`DIRTY_PAGES flags 0x${op.toString(16)}: exactly one of START, STOP, GET_BITMAP`);
      if (op === DirtyPagesFlag.GET_BITMAP) {
        if ((e = need(p, 40, 'DIRTY_PAGES GET_BITMAP'))) return e;
        if (body.argsz > MIB) return einval(`DIRTY_PAGES argsz ${body.argsz} exceeds 1 MiB`);
        body.range = { iova: p.u64(8), size: p.u64(16), pgsize: p.u64(24), bitmapSize: p.u64(32) };
      }
      return { cmd, body };
    }
    case Command.REGION_WRITE_MULTI: {
      if ((e = need(p, 8, 'REGION_WRITE_MULTI'))) return e;
      const n = p.u64(0);
      if (n > (p.length - 8) / 24) return einval(`REGION_WRITE_MULTI announces ${n} writes but carries room for ${Math.floor((p.length - 8) / 24)}`);
      const writes: RegionAccess[] = [];
      for (let i = 0; i < n; i++) {
        const o = 8 + 24 * i;
        const count = p.u32(o + 12);
        if (count > 8) return einval(`REGION_WRITE_MULTI entry ${i} count ${count} exceeds 8`);
        writes.push({ offset: p.u64(o), region: p.u32(o + 8), count, data: payload.subarray(o + 16, o + 16 + count) });
      }
      return { cmd, body: { writes } };
    }
    case Command.DEVICE_FEATURE: {
      if ((e = need(p, 8, 'DEVICE_FEATURE'))) return e;
      const body = { argsz: p.u32(0), flags: p.u32(4), data: payload.subarray(8) };
      if ((e = argsz(body.argsz, 8, 'DEVICE_FEATURE'))) return e;
      const ops = body.flags & (FeatureFlag.GET | FeatureFlag.SET | FeatureFlag.PROBE);
      if (body.flags >>> 19 !== 0) return einval(`DEVICE_FEATURE flags 0x${body.flags.toString(16)}: bits 19-31 must be 0`);
      if (ops === 0) return einval('DEVICE_FEATURE without GET, SET or PROBE');
      if ((ops & FeatureFlag.PROBE) === 0 && (ops & FeatureFlag.GET) && (ops & FeatureFlag.SET)) return einval('DEVICE_FEATURE GET and SET together without PROBE');
      return { cmd, body };
    }
    case Command.MIG_DATA_READ:
    case Command.MIG_DATA_WRITE: {
      const name = Command[cmd];
      if ((e = need(p, 8, name))) return e;
      const body: MigData = { argsz: p.u32(0), size: p.u32(4) };
      if (body.size > lim.maxMigXfer) return einval(`${name} size ${body.size} exceeds max_data_xfer_size ${lim.maxMigXfer}`);
      if (cmd === Command.MIG_DATA_READ) {
        if (body.argsz < 8 + body.size) return einval(`MIG_DATA_READ argsz ${body.argsz} cannot hold ${body.size} bytes`);
      } else {
        if (p.length < 8 + body.size) return einval(`MIG_DATA_WRITE carries ${p.length - 8} data bytes, fewer than size ${body.size}`);
        body.data = payload.subarray(8, 8 + body.size);
      }
      return { cmd, body };
    }
    default:
      return einval(`unknown or unexpected command ${cmd}`);
  }
}

/** SET_IRQS checks that need no knowledge of the device (lvu `device_set_irqs_validate`, kernel). */
function checkSetIrqs(b: SetIrqs, payloadLen: number, fdCount: number): ProtocolError | null {
  const data = b.flags & IrqSetFlag.DATA_TYPE_MASK, action = b.flags & IrqSetFlag.ACTION_TYPE_MASK;
  if (b.flags & ~(IrqSetFlag.DATA_TYPE_MASK | IrqSetFlag.ACTION_TYPE_MASK)) return einval(`SET_IRQS unknown flag bits 0x${b.flags.toString(16)}`);
  if (!oneBit(data)) return einval('SET_IRQS needs exactly one data type (NONE, BOOL or EVENTFD)');
  if (!oneBit(action)) return einval('SET_IRQS needs exactly one action (MASK, UNMASK or TRIGGER)');
  if (b.index >= Irq.COUNT) return einval(`IRQ index ${b.index} does not exist (0-4)`);
  if (data === IrqSetFlag.DATA_BOOL && payloadLen !== 20 + b.count) return einval(`SET_IRQS DATA_BOOL with ${payloadLen - 20} bytes for count ${b.count}`);
  if (b.count >= 0xffffffff - b.start) return einval('SET_IRQS start + count overflows');
  if ((b.index === Irq.ERR || b.index === Irq.REQ) && action !== IrqSetFlag.ACTION_TRIGGER) return einval('ERR and REQ interrupts take only TRIGGER');
  if ((b.index === Irq.ERR || b.index === Irq.REQ) && b.count > 1) return einval('ERR and REQ interrupts have one vector');
  if (b.count === 0 && b.start !== 0) return einval('SET_IRQS count 0 with a non-zero start');
  if (b.count === 0 && !(data === IrqSetFlag.DATA_NONE && action === IrqSetFlag.ACTION_TRIGGER)) return einval('SET_IRQS count 0 is only for TRIGGER|DATA_NONE (disable the index)');
  if (fdCount > 0 && data !== IrqSetFlag.DATA_EVENTFD) return einval('SET_IRQS carries fds but its data type is not EVENTFD');
  if (fdCount > 0 && fdCount !== b.count) return einval(`SET_IRQS carries ${fdCount} fds for ${b.count} vectors`);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Encoders. Requests are what the client sends; replies what the server sends (and vice versa for
// DMA_READ/DMA_WRITE, which flow server → client).

type Out = { msg: Uint8Array; p: Bytes };
const req = (id: number, cmd: Command, n: number, noReply = false, overwritten = false): Out => frame(id, cmd, Flag.COMMAND | (noReply ? Flag.NO_REPLY : 0), n, overwritten);
const rep = (id: number, cmd: Command, n: number, overwritten = false): Out => frame(id, cmd, Flag.REPLY, n, overwritten);

export const encode = {
  dmaMap(id: number, m: Omit<DmaMap, 'argsz'> & { argsz?: number }): Uint8Array {
    const { msg, p } = req(id, Command.DMA_MAP, 32);
    p.setU32(0, m.argsz ?? 32); p.setU32(4, m.flags); p.setU64(8, m.offset); p.setU64(16, m.address); p.setU64(24, m.size);
    return msg;
  },
  dmaUnmap(id: number, m: Omit<DmaUnmap, 'argsz'> & { argsz?: number }): Uint8Array {
    const n = m.bitmap ? 40 : 24;
    const { msg, p } = req(id, Command.DMA_UNMAP, n);
    p.setU32(0, m.argsz ?? (m.bitmap ? 40 + m.bitmap.size : 24)); p.setU32(4, m.flags); p.setU64(8, m.address); p.setU64(16, m.size);
    if (m.bitmap) { p.setU64(24, m.bitmap.pgsize); p.setU64(32, m.bitmap.size); }
    return msg;
  },
  dmaUnmapReply(id: number, m: DmaUnmap, bitmap?: Uint8Array): Uint8Array {
    const n = m.bitmap ? 40 + (bitmap?.length ?? 0) : 24;
    const { msg, p } = rep(id, Command.DMA_UNMAP, n);
    p.setU32(0, n); p.setU32(4, m.flags); p.setU64(8, m.address); p.setU64(16, m.size);
    if (m.bitmap) { p.setU64(24, m.bitmap.pgsize); p.setU64(32, m.bitmap.size); if (bitmap) p.u8.set(bitmap, 40); }
    return msg;
  },
  getInfo(id: number, argszV = 16): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_INFO, 16); p.setU32(0, argszV); return msg;
  },
  deviceInfo(id: number, i: Omit<DeviceInfo, 'argsz'>): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_INFO, 16);
    p.setU32(0, 16); p.setU32(4, i.flags); p.setU32(8, i.numRegions); p.setU32(12, i.numIrqs);
    return msg;
  },
  getRegionInfo(id: number, index: number, argszV = 32): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_REGION_INFO, 32); p.setU32(0, argszV); p.setU32(8, index); return msg;
  },
  /** Region info with its capability chain, cut to the client's argsz as §4.2 says. */
  regionInfo(id: number, clientArgsz: number, r: Omit<RegionInfo, 'argsz' | 'capOffset'>): { msg: Uint8Array; withCaps: boolean } {
    const caps = encodeRegionCaps(r.caps);
    const full = 32 + caps.length;
    const withCaps = caps.length > 0 && clientArgsz >= full;
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_INFO, withCaps ? full : 32);
    p.setU32(0, full); p.setU32(4, r.flags | (withCaps ? 8 : 0)); p.setU32(8, r.index); p.setU32(12, withCaps ? 32 : 0);
    p.setU64(16, r.size); p.setU64(24, r.offset);
    if (withCaps) p.u8.set(caps, 32);
    return { msg, withCaps };
  },
  ioFdsReply(id: number, index: number): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_REGION_IO_FDS, 16); p.setU32(0, 16); p.setU32(8, index); return msg;
  },
  getIrqInfo(id: number, index: number, argszV = 16): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_GET_IRQ_INFO, 16); p.setU32(0, argszV); p.setU32(8, index); return msg;
  },
  irqInfo(id: number, i: Omit<IrqInfo, 'argsz'>): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_GET_IRQ_INFO, 16);
    p.setU32(0, 16); p.setU32(4, i.flags); p.setU32(8, i.index); p.setU32(12, i.count);
    return msg;
  },
  setIrqs(id: number, s: Omit<SetIrqs, 'argsz'>): Uint8Array {
    const n = 20 + (s.bools?.length ?? 0);
    const { msg, p } = req(id, Command.DEVICE_SET_IRQS, n);
    p.setU32(0, n); p.setU32(4, s.flags); p.setU32(8, s.index); p.setU32(12, s.start); p.setU32(16, s.count);
    if (s.bools) p.u8.set(s.bools, 20);
    return msg;
  },
  regionRead(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = req(id, Command.REGION_READ, 16);
    p.setU64(0, a.offset); p.setU32(8, a.region); p.setU32(12, a.count);
    return msg;
  },
  regionWrite(id: number, a: RegionAccess & { data: Uint8Array }, noReply = false): Uint8Array {
    const { msg, p } = req(id, Command.REGION_WRITE, 16 + a.data.length, noReply, true);
    p.setU64(0, a.offset); p.setU32(8, a.region); p.setU32(12, a.data.length); p.u8.set(a.data, 16);
    return msg;
  },
  /** REGION_READ reply: fill `data` (count bytes) in place to avoid a copy. */
  regionReadReply(id: number, a: RegionAccess): { msg: Uint8Array; data: Uint8Array } {
    const { msg, p } = rep(id, Command.REGION_READ, 16 + a.count, true); // the handler fills all `count` bytes
    p.setU64(0, a.offset); p.setU32(8, a.region); p.setU32(12, a.count);
    return { msg, data: p.u8.subarray(16) };
  },
  regionWriteReply(id: number, a: RegionAccess): Uint8Array {
    const { msg, p } = rep(id, Command.REGION_WRITE, 16);
    p.setU64(0, a.offset); p.setU32(8, a.region); p.setU32(12, a.count);
    return msg;
  },
  writeMulti(id: number, writes: (RegionAccess & { data: Uint8Array })[], noReply = true): Uint8Array {
    const { msg, p } = req(id, Command.REGION_WRITE_MULTI, 8 + 24 * writes.length, noReply);
    p.setU64(0, writes.length);
    writes.forEach((w, i) => {
      const o = 8 + 24 * i;
      if (w.data.length > 8) throw new RangeError('REGION_WRITE_MULTI entries carry at most 8 bytes');
      p.setU64(o, w.offset); p.setU32(o + 8, w.region); p.setU32(o + 12, w.data.length); p.u8.set(w.data, o + 16);
    });
    return msg;
  },
  writeMultiReply(id: number, done: number): Uint8Array {
    const { msg, p } = rep(id, Command.REGION_WRITE_MULTI, 8); p.setU64(0, done); return msg;
  },
  reset(id: number): Uint8Array { return req(id, Command.DEVICE_RESET, 0).msg; },
  empty(id: number, cmd: Command): Uint8Array { return rep(id, cmd, 0).msg; },
  dirtyPages(id: number, d: DirtyPages): Uint8Array {
    const { msg, p } = req(id, Command.DIRTY_PAGES, d.range ? 40 : 8);
    p.setU32(0, d.argsz); p.setU32(4, d.flags);
    if (d.range) { p.setU64(8, d.range.iova); p.setU64(16, d.range.size); p.setU64(24, d.range.pgsize); p.setU64(32, d.range.bitmapSize); }
    return msg;
  },
  /** DIRTY_PAGES GET_BITMAP reply; header-only (argsz set) when the client's argsz is too small (§6.2). */
  dirtyPagesReply(id: number, clientArgsz: number, range: DirtyRange, bitmap: Uint8Array): Uint8Array {
    const full = 40 + bitmap.length;
    if (clientArgsz < full) {
      const { msg, p } = rep(id, Command.DIRTY_PAGES, 8); p.setU32(0, full); p.setU32(4, DirtyPagesFlag.GET_BITMAP); return msg;
    }
    const { msg, p } = rep(id, Command.DIRTY_PAGES, full);
    p.setU32(0, full); p.setU32(4, DirtyPagesFlag.GET_BITMAP);
    p.setU64(8, range.iova); p.setU64(16, range.size); p.setU64(24, range.pgsize); p.setU64(32, range.bitmapSize);
    p.u8.set(bitmap, 40);
    return msg;
  },
  feature(id: number, flags: number, data: Uint8Array = new Uint8Array(0), argszV?: number): Uint8Array {
    const { msg, p } = req(id, Command.DEVICE_FEATURE, 8 + data.length);
    p.setU32(0, argszV ?? 8 + data.length); p.setU32(4, flags); p.u8.set(data, 8);
    return msg;
  },
  featureReply(id: number, flags: number, data: Uint8Array): Uint8Array {
    const { msg, p } = rep(id, Command.DEVICE_FEATURE, 8 + data.length);
    p.setU32(0, 8 + data.length); p.setU32(4, flags); p.u8.set(data, 8);
    return msg;
  },
  migDataRead(id: number, size: number, argszV = 8 + size): Uint8Array {
    const { msg, p } = req(id, Command.MIG_DATA_READ, 8); p.setU32(0, argszV); p.setU32(4, size); return msg;
  },
  /** MIG_DATA_READ reply with exactly the bytes there are (clients must trust `size`, §8.6). */
  migDataReadReply(id: number, data: Uint8Array): Uint8Array {
    const { msg, p } = rep(id, Command.MIG_DATA_READ, 8 + data.length, true);
    p.setU32(0, 8 + data.length); p.setU32(4, data.length); p.u8.set(data, 8);
    return msg;
  },
  migDataWrite(id: number, data: Uint8Array): Uint8Array {
    const { msg, p } = req(id, Command.MIG_DATA_WRITE, 8 + data.length, false, true);
    p.setU32(0, 8 + data.length); p.setU32(4, data.length); p.u8.set(data, 8);
    return msg;
  },
};

export function encodeRegionCaps(caps: RegionCap[]): Uint8Array {
  const sizes = caps.map(c => (c.id === RegionCapId.SPARSE_MMAP ? 16 + 16 * c.areas.length : 16));
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  const b = new Bytes(out);
  let off = 0;
  caps.forEach((c, i) => {
    const next = i + 1 < caps.length ? 32 + off + sizes[i] : 0;
    b.setU16(off, c.id); b.setU16(off + 2, 1); b.setU32(off + 4, next);
    if (c.id === RegionCapId.SPARSE_MMAP) {
      b.setU32(off + 8, c.areas.length);
      c.areas.forEach((a, j) => { b.setU64(off + 16 + 16 * j, a.offset); b.setU64(off + 24 + 16 * j, a.size); });
    } else { b.setU32(off + 8, c.type); b.setU32(off + 12, c.subtype); }
    off += sizes[i];
  });
  return out;
}

/** Walks a region-info capability chain (offsets are from the start of the region-info struct). */
export function decodeRegionCaps(info: Uint8Array, capOffset: number): RegionCap[] | ProtocolError {
  const b = new Bytes(info);
  const caps: RegionCap[] = [];
  const seen = new Set<number>();
  for (let off = capOffset; off !== 0;) {
    if (off < 32 || off + 8 > b.length || seen.has(off)) return einval(`capability at ${off} lies outside the reply or loops`);
    seen.add(off);
    const id = b.u16(off), next = b.u32(off + 4);
    if (id === RegionCapId.SPARSE_MMAP) {
      if (off + 16 > b.length) return einval('sparse mmap capability truncated');
      const n = b.u32(off + 8);
      if (off + 16 + 16 * n > b.length) return einval(`sparse mmap capability with ${n} areas is truncated`);
      const areas = Array.from({ length: n }, (_, j) => ({ offset: b.u64(off + 16 + 16 * j), size: b.u64(off + 24 + 16 * j) }));
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas });
    } else if (id === RegionCapId.TYPE) {
      if (off + 16 > b.length) return einval('type capability truncated');
      caps.push({ id: RegionCapId.TYPE, type: b.u32(off + 8), subtype: b.u32(off + 12) });
    }
    off = next;
  }
  return caps;
}

/** Server → client DMA_READ/DMA_WRITE, in the spec's layout or in QEMU 11's (§3.9). */
export type DmaLayout = 'spec' | 'qemu';
export const dma = {
  readRequest(id: number, layout: DmaLayout, address: number, count: number): Uint8Array {
    const { msg, p } = req(id, Command.DMA_READ, layout === 'spec' ? 16 : 16); // QEMU: u64 + u32 + pad
    p.setU64(0, address);
    if (layout === 'spec') p.setU64(8, count); else p.setU32(8, count);
    return msg;
  },
  writeRequest(id: number, layout: DmaLayout, address: number, data: Uint8Array): Uint8Array {
    const at = layout === 'spec' ? 16 : 12;
    const { msg, p } = req(id, Command.DMA_WRITE, at + data.length);
    p.setU64(0, address);
    if (layout === 'spec') p.setU64(8, data.length); else p.setU32(8, data.length);
    p.u8.set(data, at);
    return msg;
  },
  /** Decodes the client's reply to our DMA_READ: the data, checked against what we asked. */
  readReply(layout: DmaLayout, payload: Uint8Array, address: number, count: number): Uint8Array | ProtocolError {
    const at = layout === 'spec' ? 16 : 12;
    if (payload.length < at + count) return einval(`DMA_READ reply of ${payload.length} bytes lacks ${count} data bytes`);
    const b = new Bytes(payload);
    const cnt = layout === 'spec' ? b.u64(8) : b.u32(8);
    if (b.u64(0) !== address || cnt !== count) return einval('DMA_READ reply does not echo address and count');
    return payload.subarray(at, at + count);
  },
  /** Client side: a DMA_READ/WRITE request from the server. */
  decodeRequest(cmd: number, layout: DmaLayout, payload: Uint8Array, maxCount: number): DmaTransfer | ProtocolError {
    const at = layout === 'spec' ? 16 : 12;
    if (payload.length < (layout === 'spec' ? 16 : 12)) return einval(`${Command[cmd]} payload too short`);
    const b = new Bytes(payload);
    const t: DmaTransfer = { address: b.u64(0), count: layout === 'spec' ? b.u64(8) : b.u32(8) };
    if (t.count > maxCount) return new ProtocolError(7, `${Command[cmd]} count ${t.count} exceeds ${maxCount}`);
    if (cmd === Command.DMA_WRITE) {
      if (payload.length < at + t.count) return einval('DMA_WRITE carries fewer bytes than count');
      t.data = payload.subarray(at, at + t.count);
    }
    return t;
  },
  readReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer, data: Uint8Array): Uint8Array {
    const at = layout === 'spec' ? 16 : 12;
    const { msg, p } = rep(id, Command.DMA_READ, at + data.length);
    p.setU64(0, t.address);
    if (layout === 'spec') p.setU64(8, t.count); else p.setU32(8, t.count);
    p.u8.set(data, at);
    return msg;
  },
  writeReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer): Uint8Array {
    if (layout === 'qemu') return rep(id, Command.DMA_WRITE, 0).msg;
    const { msg, p } = rep(id, Command.DMA_WRITE, 16);
    p.setU64(0, t.address); p.setU64(8, t.count);
    return msg;
  },
};

// ---------------------------------------------------------------------------------------------
// Reply decoders (client side). Each checks that the reply holds what it claims.

export const decodeReply = {
  deviceInfo(b: Uint8Array): DeviceInfo | ProtocolError {
    if (b.length < 16) return einval('DEVICE_GET_INFO reply shorter than 16 bytes');
    const p = new Bytes(b);
    return { argsz: p.u32(0), flags: p.u32(4), numRegions: p.u32(8), numIrqs: p.u32(12) };
  },
  regionInfo(b: Uint8Array): RegionInfo | ProtocolError {
    if (b.length < 32) return einval('DEVICE_GET_REGION_INFO reply shorter than 32 bytes');
    const p = new Bytes(b);
    const r: RegionInfo = { argsz: p.u32(0), flags: p.u32(4), index: p.u32(8), capOffset: p.u32(12), size: p.u64(16), offset: p.u64(24), caps: [] };
    if (r.flags & 8 && r.capOffset) {
      const caps = decodeRegionCaps(b, r.capOffset);
      if (caps instanceof ProtocolError) return caps;
      r.caps = caps;
    }
    return r;
  },
  irqInfo(b: Uint8Array): IrqInfo | ProtocolError {
    if (b.length < 16) return einval('DEVICE_GET_IRQ_INFO reply shorter than 16 bytes');
    const p = new Bytes(b);
    return { argsz: p.u32(0), flags: p.u32(4), index: p.u32(8), count: p.u32(12) };
  },
  regionRead(b: Uint8Array, count: number): Uint8Array | ProtocolError {
    if (b.length < 16 + count) return einval(`REGION_READ reply lacks ${count} data bytes`);
    return b.subarray(16, 16 + count);
  },
  feature(b: Uint8Array): FeatureMessage | ProtocolError {
    if (b.length < 8) return einval('DEVICE_FEATURE reply shorter than 8 bytes');
    const p = new Bytes(b);
    return { argsz: p.u32(0), flags: p.u32(4), data: b.subarray(8) };
  },
  migDataRead(b: Uint8Array): Uint8Array | ProtocolError {
    if (b.length < 8) return einval('MIG_DATA_READ reply shorter than 8 bytes');
    const n = new Bytes(b).u32(4);
    if (b.length < 8 + n) return einval(`MIG_DATA_READ reply claims ${n} bytes but carries ${b.length - 8}`);
    return b.subarray(8, 8 + n);
  },
  dmaUnmap(b: Uint8Array): DmaUnmapReply | ProtocolError {
    if (b.length < 24) return einval('DMA_UNMAP reply shorter than 24 bytes');
    const p = new Bytes(b);
    const r: DmaUnmapReply = { argsz: p.u32(0), flags: p.u32(4), address: p.u64(8), size: p.u64(16) };
    if (r.flags & DmaUnmapFlag.GET_DIRTY_BITMAP) {
      if (b.length < 40) return einval('DMA_UNMAP bitmap reply shorter than 40 bytes');
      r.bitmap = { pgsize: p.u64(24), size: p.u64(32) };
      if (b.length < 40 + r.bitmap.size) return einval('DMA_UNMAP bitmap truncated');
      r.bitmapData = b.subarray(40, 40 + r.bitmap.size);
    }
    return r;
  },
  dirtyPages(b: Uint8Array): DirtyPages | ProtocolError {
    if (b.length < 8) return einval('DIRTY_PAGES reply shorter than 8 bytes');
    const p = new Bytes(b);
    const d: DirtyPages = { argsz: p.u32(0), flags: p.u32(4) };
    if (b.length >= 40) {
      d.range = { iova: p.u64(8), size: p.u64(16), pgsize: p.u64(24), bitmapSize: p.u64(32) };
      if (b.length < 40 + d.range.bitmapSize) return einval('DIRTY_PAGES bitmap truncated');
      d.bitmap = b.subarray(40, 40 + d.range.bitmapSize);
    }
    return d;
  },
};

export const isSafe = (v: number) => v <= MAX_SAFE;
