import { describe, it, expect } from 'vitest';
import { RecordFramer, RecordError, record, Rec, MAX_RECORD_PAYLOAD } from '@vfu/stream';

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
      new RecordError('checksum mismatch: the stream was corrupted in transfer'),
    );
    expect(() => f.write(stream)).toThrow(/checksum mismatch/);
    const long = new Uint8Array(8);
    new DataView(long.buffer).setUint32(4, MAX_RECORD_PAYLOAD + 1, true);
    expect(() => new RecordFramer(() => {}).write(long)).toThrow(/exceeds/);
  });
});
