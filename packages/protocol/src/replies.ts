// Reply decoders (client side): each checks that the reply holds what it claims.
import { Bytes } from './bytes.js';
import { DmaUnmapFlag } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import { decodeRegionCaps } from './region-caps.js';
import type {
  DeviceInfo,
  RegionInfo,
  IrqInfo,
  FeatureMessage,
  DmaUnmapReply,
  DirtyPages,
} from './types.js';

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
    const r: RegionInfo = {
      argsz: p.u32(0),
      flags: p.u32(4),
      index: p.u32(8),
      capOffset: p.u32(12),
      size: p.u64(16),
      offset: p.u64(24),
      caps: [],
    };
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
    if (b.length < 8 + n)
      return einval(`MIG_DATA_READ reply claims ${n} bytes but carries ${b.length - 8}`);
    return b.subarray(8, 8 + n);
  },
  dmaUnmap(b: Uint8Array): DmaUnmapReply | ProtocolError {
    if (b.length < 24) return einval('DMA_UNMAP reply shorter than 24 bytes');
    const p = new Bytes(b);
    const r: DmaUnmapReply = {
      argsz: p.u32(0),
      flags: p.u32(4),
      address: p.u64(8),
      size: p.u64(16),
    };
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
