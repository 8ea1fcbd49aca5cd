import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { hash, copyAndHash, isZero, memfdCreate, MappedMemory } from '@vfu/native';
import { pattern } from './fixtures/pattern.mjs';

/** hash() of 'vfio-user device state', of no bytes and of pattern(1000), as first computed. */
const PINNED = 2_882_144_305,
  PINNED_EMPTY = 3_730_662_493,
  PINNED_PATTERN = 4_024_191_495;

const MASK = (1n << 64n) - 1n;
const [M1, M2, M3, M4] = [
  0x6a09e667f3bcc909n,
  0xbb67ae8584caa73bn,
  0x3c6ef372fe94f82bn,
  0x9e3779b97f4a7c15n,
];
const mul = (a: bigint, b: bigint) => (a * b) & MASK;
const rotl = (x: bigint, r: number) => ((x << BigInt(r)) | (x >> BigInt(64 - r))) & MASK;
const round = (acc: bigint, word: bigint) => mul(rotl((acc + mul(word, M2)) & MASK, 29), M1);

/** The lane hash as c/fastpath.c's comment defines it, in BigInt arithmetic (slow, plain). */
function referenceHash(b: Uint8Array): number {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const word = (i: number) => dv.getBigUint64(i, true);
  const lane = Array.from({ length: 16 }, (_, k) => (M1 + BigInt(k) * M4) & MASK);
  const whole = b.length - (b.length % 128);
  for (let i = 0; i < whole; i += 128)
    for (let k = 0; k < 16; k++) lane[k] = round(lane[k], word(i + 8 * k));
  let h = 0n;
  for (let k = 0; k < 16; k++) h = (h + rotl(lane[k], (7 * k + 3) % 64)) & MASK;
  let i = whole;
  for (; b.length - i >= 8; i += 8) h = mul(rotl(h ^ mul(word(i), M3), 31), M4);
  if (i < b.length) {
    let w = 0n;
    for (let j = b.length - 1; j >= i; j--) w = (w << 8n) | BigInt(b[j]);
    h = mul(rotl(h ^ mul(w, M3), 23), M1);
  }
  h ^= BigInt(b.length);
  h ^= h >> 31n;
  h = mul(h, M2);
  h ^= h >> 27n;
  h = mul(h, M3);
  h ^= h >> 33n;
  return Number((h ^ (h >> 32n)) & 0xffffffffn);
}

/** Lengths around every edge: block (128), the scalar span (65,536), the tail's words. */
const EDGES = [0, 1, 7, 8, 9, 127, 128, 129, 135, 255, 256, 1000, 65_536 + 136, 131_072 + 5];

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

  it('is the same function on every machine: stream format 5 depends on its value', () => {
    // The value pins the algorithm: a change to c/fastpath.c that changes it changes the
    // stream format (FORMAT_VERSION in @vfu/stream), and must come with a new version.
    expect(hash(new TextEncoder().encode('vfio-user device state'))).toBe(PINNED);
    expect(hash(new Uint8Array(0))).toBe(PINNED_EMPTY);
    expect(hash(pattern(1000))).toBe(PINNED_PATTERN);
  });

  it('computes what its definition says, on the vector path and on the scalar one', () => {
    const src = pattern(Math.max(...EDGES));
    const expected = EDGES.map(n => referenceHash(src.subarray(0, n)));
    expect(EDGES.map(n => hash(src.subarray(0, n)))).toEqual(expected);
    const into = new Uint8Array(src.length);
    const copied = EDGES.map(n => copyAndHash(into.subarray(0, n), src.subarray(0, n)));
    expect(copied).toEqual(expected);
    // The scalar path, forced in a process of its own (the choice is made once per process).
    const script = join(__dirname, 'fixtures/hashes.mjs');
    const out = execFileSync(process.execPath, [script, EDGES.join(',')], {
      env: { ...process.env, VFU_FASTPATH: 'scalar' },
    });
    expect(JSON.parse(out.toString())).toEqual(expected);
  });

  it('isZero finds any byte that is not zero, anywhere, at any length', () => {
    for (const n of [0, 1, 255, 256, 257, 4096, 65_536 + 3]) {
      const b = new Uint8Array(n);
      expect(isZero(b), `${n} zeros`).toBe(true);
      for (const at of [0, n >> 1, n - 1].filter(i => i >= 0 && i < n)) {
        b[at] = 0x80;
        expect(isZero(b), `${n} bytes, one set at ${at}`).toBe(false);
        expect(isZero(b.subarray(at + 1)), `after ${at}`).toBe(true);
        b[at] = 0;
      }
    }
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
