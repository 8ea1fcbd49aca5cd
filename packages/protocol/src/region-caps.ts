// Region-info capability chains (§4.2): sparse mmap areas and region types.
import { Bytes } from './bytes.js';
import { RegionCapId } from './constants.js';
import { einval, type ProtocolError } from './errors.js';
import * as Layout from './layout.js';
import type { RegionCap } from './types.js';

const { CapHeader, CapSparseMmap, CapType, SparseArea } = Layout;
/** The version of both capabilities' layouts (vfio.h). */
const CAP_VERSION = 1;

const capSize = (c: RegionCap) =>
  c.id === RegionCapId.SPARSE_MMAP
    ? CapSparseMmap.SIZE + SparseArea.SIZE * c.areas.length
    : CapType.SIZE;

export function encodeRegionCaps(caps: RegionCap[]): Uint8Array {
  const sizes = caps.map(capSize);
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  const b = new Bytes(out);
  let off = 0;
  caps.forEach((c, i) => {
    const last = i + 1 === caps.length;
    const next = last ? 0 : Layout.RegionInfo.SIZE + off + sizes[i];
    b.setAt(off, CapHeader.id, c.id);
    b.setAt(off, CapHeader.version, CAP_VERSION);
    b.setAt(off, CapHeader.next, next);
    if (c.id === RegionCapId.SPARSE_MMAP) {
      b.setAt(off, CapSparseMmap.nrAreas, c.areas.length);
      c.areas.forEach((a, j) => {
        const at = off + CapSparseMmap.SIZE + SparseArea.SIZE * j;
        b.setAt(at, SparseArea.offset, a.offset);
        b.setAt(at, SparseArea.size, a.size);
      });
    } else {
      b.setAt(off, CapType.type, c.type);
      b.setAt(off, CapType.subtype, c.subtype);
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
    if (off < Layout.RegionInfo.SIZE || off + CapHeader.SIZE > b.length || seen.has(off))
      return einval(`capability at ${off} lies outside the reply or loops`);
    seen.add(off);
    const id = b.getAt(off, CapHeader.id);
    const next = b.getAt(off, CapHeader.next);
    if (id === RegionCapId.SPARSE_MMAP) {
      if (off + CapSparseMmap.SIZE > b.length) return einval('sparse mmap capability truncated');
      const n = b.getAt(off, CapSparseMmap.nrAreas);
      const first = off + CapSparseMmap.SIZE;
      if (first + SparseArea.SIZE * n > b.length)
        return einval(`sparse mmap capability with ${n} areas is truncated`);
      const areas = Array.from({ length: n }, (_, j) => ({
        offset: b.getAt(first + SparseArea.SIZE * j, SparseArea.offset),
        size: b.getAt(first + SparseArea.SIZE * j, SparseArea.size),
      }));
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas });
    } else if (id === RegionCapId.TYPE) {
      if (off + CapType.SIZE > b.length) return einval('type capability truncated');
      const type = b.getAt(off, CapType.type);
      caps.push({ id: RegionCapId.TYPE, type, subtype: b.getAt(off, CapType.subtype) });
    }
    off = next;
  }
  return caps;
}
