// Region-info capability chains (§4.2): sparse mmap areas and region types.
import { Bytes } from './bytes.js';
import { RegionCapId } from './constants.js';
import { einval, type ProtocolError } from './errors.js';
import type { RegionCap } from './types.js';

export function encodeRegionCaps(caps: RegionCap[]): Uint8Array {
  const sizes = caps.map(c => (c.id === RegionCapId.SPARSE_MMAP ? 16 + 16 * c.areas.length : 16));
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  const b = new Bytes(out);
  let off = 0;
  caps.forEach((c, i) => {
    const next = i + 1 < caps.length ? 32 + off + sizes[i] : 0;
    b.setU16(off, c.id);
    b.setU16(off + 2, 1);
    b.setU32(off + 4, next);
    if (c.id === RegionCapId.SPARSE_MMAP) {
      b.setU32(off + 8, c.areas.length);
      c.areas.forEach((a, j) => {
        b.setU64(off + 16 + 16 * j, a.offset);
        b.setU64(off + 24 + 16 * j, a.size);
      });
    } else {
      b.setU32(off + 8, c.type);
      b.setU32(off + 12, c.subtype);
    }
    off += sizes[i];
  });
  return out;
}

/** Walks a region-info capability chain (offsets are from the start of the region-info struct). */
export function decodeRegionCaps(info: Uint8Array, capOffset: number): RegionCap[] | ProtocolError {
  const b = new Bytes(info);
  const caps: RegionCap[] = [];
  const seen = new Set<number>();
  for (let off = capOffset; off !== 0; ) {
    if (off < 32 || off + 8 > b.length || seen.has(off))
      return einval(`capability at ${off} lies outside the reply or loops`);
    seen.add(off);
    const id = b.u16(off),
      next = b.u32(off + 4);
    if (id === RegionCapId.SPARSE_MMAP) {
      if (off + 16 > b.length) return einval('sparse mmap capability truncated');
      const n = b.u32(off + 8);
      if (off + 16 + 16 * n > b.length)
        return einval(`sparse mmap capability with ${n} areas is truncated`);
      const areas = Array.from({ length: n }, (_, j) => ({
        offset: b.u64(off + 16 + 16 * j),
        size: b.u64(off + 24 + 16 * j),
      }));
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas });
    } else if (id === RegionCapId.TYPE) {
      if (off + 16 > b.length) return einval('type capability truncated');
      caps.push({ id: RegionCapId.TYPE, type: b.u32(off + 8), subtype: b.u32(off + 12) });
    }
    off = next;
  }
  return caps;
}
