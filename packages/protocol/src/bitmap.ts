// Dirty-page bitmaps (§6.3): bit n = page n of the range, LSB first in 64-bit little-endian words.

/**
 * Bytes of a bitmap for `length` bytes at `pageSize` granularity, rounded up to whole u64 words.
 */
export function bitmapBytes(length: number, pageSize: number): number {
  return Math.ceil(Math.ceil(length / pageSize) / 64) * 8;
}

export const testBit = (bm: Uint8Array, n: number) => (bm[n >> 3] & (1 << (n & 7))) !== 0;
export const setBit = (bm: Uint8Array, n: number) => {
  bm[n >> 3] |= 1 << (n & 7);
};

/** Pages whose bit is set. */
export function setPages(bm: Uint8Array, pages = bm.length * 8): number[] {
  const out: number[] = [];
  for (let i = 0; i < pages; i++) if (testBit(bm, i)) out.push(i);
  return out;
}

/**
 * Re-expresses a bitmap tracked at `from` bytes per page at `to` bytes per page, over `length`
 * bytes: bits are replicated when `to` is finer and OR-ed when coarser.
 */
export function convertBitmap(
  bm: Uint8Array,
  from: number,
  length: number,
  to: number,
): Uint8Array {
  const out = new Uint8Array(bitmapBytes(length, to));
  const pages = Math.ceil(length / to);
  for (let i = 0; i < pages; i++) {
    const start = Math.floor((i * to) / from),
      end = Math.floor((Math.min((i + 1) * to, length) - 1) / from);
    for (let j = start; j <= end; j++)
      if (testBit(bm, j)) {
        setBit(out, i);
        break;
      }
  }
  return out;
}
