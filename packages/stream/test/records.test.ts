import { describe, it, expect } from 'vitest';
import { hash } from '@vfu/native';
import {
  RecordFramer,
  RecordError,
  record,
  memoryRecord,
  Rec,
  MAX_RECORD_PAYLOAD,
} from '@vfu/stream';

/** A whole MEMORY record of `data` at `offset` of memory `index`. */
function memory(index: number, offset: number, data: Uint8Array): Buffer {
  const r = memoryRecord(index, offset, data);
  return Buffer.concat([r.head, data, r.crc]);
}

describe('RecordFramer', () => {
  const stream = Buffer.concat([
    record(Rec.STATE, Uint8Array.from([1, 2, 3])),
    record(Rec.CONFIG, new Uint8Array(300).fill(9)),
    record(Rec.END, new Uint8Array(0)),
  ]);

  it('cuts the same records whatever the chunking; pending counts a record begun', () => {
    for (const step of [1, 5, 12, 100, stream.length]) {
      const got: number[] = [];
      const f = new RecordFramer(r => got.push(r.length));
      for (let off = 0; off < stream.length; off += step) f.write(stream.subarray(off, off + step));
      expect(got).toEqual([15, 312, 12]);
      expect(f.records).toBe(3);
      expect(f.pending).toBe(0);
    }
    const f = new RecordFramer(() => {});
    f.write(stream.subarray(0, 20));
    expect(f.pending).toBe(5);
  });

  it('refuses a flipped bit and a length over the limit, and stays failed', () => {
    const bad = Buffer.from(stream);
    bad[20] ^= 1;
    const f = new RecordFramer(() => {});
    expect(() => f.write(bad)).toThrow(
      new RecordError(
        'checksum mismatch in record 2 (at byte 15 of the stream): ' +
          'the stream was corrupted in transfer',
      ),
    );
    expect(() => f.write(stream)).toThrow(/checksum mismatch/);
    const long = new Uint8Array(8);
    new DataView(long.buffer).setUint32(4, MAX_RECORD_PAYLOAD + 1, true);
    expect(() => new RecordFramer(() => {}).write(long)).toThrow(/exceeds/);
  });

  describe('MEMORY records (their bytes checked by hash)', () => {
    const data = Uint8Array.from({ length: 5000 }, (_, i) => (i * 31) & 255);
    const mem = memory(1, 2 ** 33 + 4096, data);

    it('are checked by the framer itself when no one takes them unverified', () => {
      const got: number[] = [];
      new RecordFramer(r => got.push(r.length)).write(mem);
      expect(got).toEqual([mem.length]);
      for (const at of [0, 4, 8, 12, 19, 20, 2500, mem.length - 5, mem.length - 1]) {
        const bad = Buffer.from(mem);
        bad[at] ^= 0x80;
        const f = new RecordFramer(() => got.push(-1));
        expect(() => f.write(bad), `byte ${at}`).toThrow(/checksum mismatch in record 1/);
      }
      expect(got).toEqual([mem.length]);
    });

    it('go to onMemory with the hash their data must have, which any change breaks', () => {
      const seen: [number, number][] = [];
      const take = (r: Uint8Array, want: number) =>
        seen.push([hash(r.subarray(20, r.length - 4)), want]);
      new RecordFramer(() => seen.push([0, -1]), take).write(mem);
      expect(seen).toEqual([[hash(data), hash(data)]]);
      for (const at of [0, 8, 12, 16, 19, 20, 21, 4000, mem.length - 1]) {
        const bad = Buffer.from(mem);
        bad[at] ^= 1;
        seen.length = 0;
        try {
          new RecordFramer(() => seen.push([0, -1]), take).write(bad);
        } catch (e) {
          // A changed type or length: no longer a MEMORY record, or not a whole one.
          expect(e, `byte ${at}`).toBeInstanceOf(RecordError);
          expect(at).toBeLessThan(8);
          continue;
        }
        expect(seen.length).toBe(1);
        expect(seen[0][0], `byte ${at}`).not.toBe(seen[0][1]);
      }
    });
  });
});
