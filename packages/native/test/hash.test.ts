import { describe, it, expect } from 'vitest';
import { hash, copyAndHash, memfdCreate, MappedMemory } from '@vfu/native';

/** Bytes that differ from position to position (a fixed pattern, not random: reproducible). */
function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** hash() of 'vfio-user device state' and of no bytes, as first computed. */
const PINNED = 1_856_822_206,
  PINNED_EMPTY = 1_335_063_263;

describe('hash and copyAndHash (c/fastpath.c)', () => {
  it('copies every byte and returns the hash of what it copied, any length, any alignment', () => {
    const src = pattern(300_000);
    for (const n of [0, 1, 7, 8, 31, 32, 33, 63, 64, 100, 4096, 262_144, 262_144 + 13]) {
      for (const at of [0, 1, 5]) {
        const from = src.subarray(at, at + n),
          into = new Uint8Array(n + 3).subarray(3);
        const sum = copyAndHash(into, from);
        expect(Buffer.compare(into, from)).toBe(0);
        expect(sum).toBe(hash(into));
        expect(sum).toBe(hash(Uint8Array.from(from)));
      }
    }
  });

  it('changes with any one byte changed, anywhere', () => {
    const base = pattern(1000),
      before = hash(base),
      seen = new Set([before]);
    for (let i = 0; i < base.length; i++) {
      const b = Uint8Array.from(base);
      b[i] ^= 1 << (i % 8);
      const h = hash(b);
      expect(h, `byte ${i}`).not.toBe(before);
      seen.add(h);
    }
    expect(seen.size).toBe(base.length + 1);
  });

  it('tells zero runs of different lengths apart (the length is hashed)', () => {
    const sums = new Set<number>();
    for (let n = 0; n <= 100; n++) sums.add(hash(new Uint8Array(n)));
    expect(sums.size).toBe(101);
  });

  it('is the same function on every machine: stream format 4 depends on its value', () => {
    // The value pins the algorithm: a change to c/fastpath.c that changes it changes the
    // stream format (FORMAT_VERSION in @vfu/stream), and must come with a new version.
    expect(hash(new TextEncoder().encode('vfio-user device state'))).toBe(PINNED);
    expect(hash(new Uint8Array(0))).toBe(PINNED_EMPTY);
  });

  it('reads and writes mapped memory (views over native memory)', () => {
    const fd = memfdCreate('hash', 65_536),
      map = MappedMemory.map(fd.fd, 0, 65_536);
    try {
      const mem = map.bytes(0, 65_536),
        src = pattern(65_536, 7);
      expect(copyAndHash(mem, src)).toBe(hash(src));
      expect(Buffer.compare(mem, src)).toBe(0);
      expect(hash(mem.subarray(100, 5000))).toBe(hash(src.subarray(100, 5000)));
    } finally {
      map.release();
      fd.close();
    }
  });

  it('refuses lengths that differ and buffers that overlap', () => {
    const b = new Uint8Array(64);
    expect(() => copyAndHash(b.subarray(0, 8), new Uint8Array(9))).toThrow(RangeError);
    expect(() => copyAndHash(b.subarray(0, 32), b.subarray(16, 48))).toThrow(/overlap/);
    expect(() => copyAndHash(b.subarray(0, 32), b.subarray(32, 64))).not.toThrow();
  });
});
