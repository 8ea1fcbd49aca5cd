// Reply decoders (client side): each checks that the reply holds what it claims.
import { Bytes } from './bytes.js';
import { DmaUnmapFlag, RegionFlag } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import * as Layout from './layout.js';
import { decodeRegionCaps } from './region-caps.js';
import type {
  DeviceInfo,
  RegionInfo,
  IrqInfo,
  FeatureMessage,
  DmaUnmapReply,
  DirtyPages,
} from './types.js';

export const decodeReply = {
  deviceInfo(b: Uint8Array): DeviceInfo | ProtocolError {
    const L = Layout.DeviceInfo;
    if (b.length < L.SIZE) return einval(`DEVICE_GET_INFO reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    return {
      argsz: p.get(L.argsz),
      flags: p.get(L.flags),
      numRegions: p.get(L.numRegions),
      numIrqs: p.get(L.numIrqs),
    };
  },
  regionInfo(b: Uint8Array): RegionInfo | ProtocolError {
    const L = Layout.RegionInfo;
    if (b.length < L.SIZE)
      return einval(`DEVICE_GET_REGION_INFO reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    const r: RegionInfo = {
      argsz: p.get(L.argsz),
      flags: p.get(L.flags),
      index: p.get(L.index),
      capOffset: p.get(L.capOffset),
      size: p.get(L.size),
      offset: p.get(L.offset),
      caps: [],
    };
    if (r.flags & RegionFlag.CAPS && r.capOffset) {
      const caps = decodeRegionCaps(b, r.capOffset);
      if (caps instanceof ProtocolError) return caps;
      r.caps = caps;
    }
    return r;
  },
  irqInfo(b: Uint8Array): IrqInfo | ProtocolError {
    const L = Layout.IrqInfo;
    if (b.length < L.SIZE) return einval(`DEVICE_GET_IRQ_INFO reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    return {
      argsz: p.get(L.argsz),
      flags: p.get(L.flags),
      index: p.get(L.index),
      count: p.get(L.count),
    };
  },
  regionRead(b: Uint8Array, count: number): Uint8Array | ProtocolError {
    const at = Layout.RegionAccess.SIZE;
    if (b.length < at + count) return einval(`REGION_READ reply lacks ${count} data bytes`);
    return b.subarray(at, at + count);
  },
  feature(b: Uint8Array): FeatureMessage | ProtocolError {
    const L = Layout.Feature;
    if (b.length < L.SIZE) return einval(`DEVICE_FEATURE reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    return { argsz: p.get(L.argsz), flags: p.get(L.flags), data: b.subarray(L.SIZE) };
  },
  migDataRead(b: Uint8Array): Uint8Array | ProtocolError {
    const L = Layout.MigData;
    if (b.length < L.SIZE) return einval(`MIG_DATA_READ reply shorter than ${L.SIZE} bytes`);
    const n = new Bytes(b).get(L.size);
    if (b.length < L.SIZE + n)
      return einval(`MIG_DATA_READ reply claims ${n} bytes but carries ${b.length - L.SIZE}`);
    return b.subarray(L.SIZE, L.SIZE + n);
  },
  dmaUnmap(b: Uint8Array): DmaUnmapReply | ProtocolError {
    const L = Layout.DmaUnmap;
    const B = Layout.DmaUnmapBitmap;
    if (b.length < L.SIZE) return einval(`DMA_UNMAP reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    const r: DmaUnmapReply = {
      argsz: p.get(L.argsz),
      flags: p.get(L.flags),
      address: p.get(L.address),
      size: p.get(L.size),
    };
    if (r.flags & DmaUnmapFlag.GET_DIRTY_BITMAP) {
      if (b.length < B.SIZE) return einval(`DMA_UNMAP bitmap reply shorter than ${B.SIZE} bytes`);
      r.bitmap = { pgsize: p.get(B.pgsize), size: p.get(B.size) };
      if (b.length < B.SIZE + r.bitmap.size) return einval('DMA_UNMAP bitmap truncated');
      r.bitmapData = b.subarray(B.SIZE, B.SIZE + r.bitmap.size);
    }
    return r;
  },
  dirtyPages(b: Uint8Array): DirtyPages | ProtocolError {
    const L = Layout.DirtyPages;
    const R = Layout.DirtyRange;
    if (b.length < L.SIZE) return einval(`DIRTY_PAGES reply shorter than ${L.SIZE} bytes`);
    const p = new Bytes(b);
    const d: DirtyPages = { argsz: p.get(L.argsz), flags: p.get(L.flags) };
    if (b.length >= R.SIZE) {
      d.range = {
        iova: p.get(R.iova),
        size: p.get(R.size),
        pgsize: p.get(R.pgsize),
        bitmapSize: p.get(R.bitmapSize),
      };
      if (b.length < R.SIZE + d.range.bitmapSize) return einval('DIRTY_PAGES bitmap truncated');
      d.bitmap = b.subarray(R.SIZE, R.SIZE + d.range.bitmapSize);
    }
    return d;
  },
};
