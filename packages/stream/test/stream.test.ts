import { describe, it, expect } from 'vitest';
import {
  SaveSession,
  LoadSession,
  StreamError,
  u32,
  u64,
  bool,
  bytes,
  newShadow,
  RECORD_OVERHEAD,
} from '@vfu/stream';
import { testImage } from './test-image.ts';

const schema = { a: u32, b: u64, flag: bool, buf: bytes(16) };

const image = (id = 'dev', version = 1, memSize = 1 << 20) =>
  testImage(schema, { id, version, memSize });

/** Reads the whole pre-copy phase in chunks of `chunk`, calling `during` after each read. */
function drain(
  s: SaveSession,
  chunk: number,
  out: Uint8Array[],
  during?: (i: number) => void,
): void {
  for (let i = 0; ; i++) {
    const b = s.read(chunk);
    if (!b.length) return;
    expect(b.length).toBeLessThanOrEqual(chunk);
    out.push(b.slice());
    during?.(i);
  }
}

function feed(l: LoadSession, all: Uint8Array[], sizes: number[]): void {
  const flat = Buffer.concat(all);
  for (let off = 0, i = 0; off < flat.length; i++) {
    const n = sizes[i % sizes.length];
    l.write(flat.subarray(off, off + n));
    off += n;
  }
}

describe('the migration stream', () => {
  // Pages changed between the two are included.
  it('moves state, config and memory; pre-copy + stop-copy form one stream', () => {
    const src = image(),
      dst = image();
    src.state.a = 7;
    src.state.b = 2 ** 40 + 3;
    src.state.flag = true;
    src.state.buf.fill(9);
    src.config[4] = 6;
    for (let i = 0; i < src.mem.length; i += 4096) src.mem[i] = (i / 4096) & 0xff;
    const s = new SaveSession(src.img, 64 * 1024);
    const out: Uint8Array[] = [];
    const p0 = s.precopyInfo();
    expect(p0.initialBytes).toBeGreaterThan(1 << 20);
    expect(p0.dirtyBytes).toBe(0);
    drain(s, 65536, out, i => {
      if (i === 3) src.mem[10] = 0xaa;
    }); // dirty an already-sent page mid-way
    expect(s.precopyInfo().initialBytes).toBe(0);
    // The device keeps running: more pages change; the next pre-copy round finds them.
    src.mem[5 * 4096 + 1] = 0xbb;
    src.mem[6 * 4096 + 2] = 0xcc;
    expect(s.scan()).toBe(2);
    expect(s.precopyInfo().dirtyBytes).toBeGreaterThanOrEqual(2 * 4096);
    drain(s, 65536, out);
    // Stop-copy: final state (changed after the pre-copy state was sent) and last changes.
    src.state.a = 8;
    src.mem[src.mem.length - 1] = 0xdd;
    s.stop();
    drain(s, 65536, out);
    expect(s.read(65536).length).toBe(0);
    expect(s.finished).toBe(true);
    const l = new LoadSession(dst.img);
    // The destination's chunking has nothing to do with the source's.
    feed(l, out, [1, 7, 4096, 100000, 13]);
    expect(dst.mem.every(b => b === 0)).toBe(true); // staged, not applied
    l.commit();
    expect(dst.state).toEqual(src.state);
    expect(dst.config).toEqual(src.config);
    expect(Buffer.compare(dst.mem, src.mem)).toBe(0);
  });

  it('sends never-written memory as zeros without reading it; later writes are found', () => {
    const src = image(),
      PAGE = 4096;
    const written = new Set<number>(); // pages with data (the rest are holes)
    const reads: [number, number][] = [];
    const write = (page: number, v: number) => {
      src.mem[page * PAGE + 9] = v;
      written.add(page);
    };
    const m = src.img.memories[0];
    const bytesOf = m.bytes;
    m.bytes = (o, n) => {
      reads.push([o, o + n]);
      return bytesOf(o, n);
    };
    m.isHole = (o, n) => ![...written].some(p => p * PAGE < o + n && (p + 1) * PAGE > o);
    const readBlock2 = () => reads.some(([a, b]) => a < 0xc0000 && b > 0x80000);
    write(0, 1);
    write(100, 2);
    const shadows = [newShadow(m.size)];
    const session = () => {
      const s = new SaveSession(src.img, 1 << 20, shadows);
      const out: Uint8Array[] = [];
      drain(s, 65536, out);
      return { s, out };
    };
    const { s, out } = session();
    expect(readBlock2()).toBe(false); // 256 KiB blocks: pages 128-191 were never written
    write(200, 3); // after its block went out as zeros: the scan must find it
    expect(s.scan()).toBe(1);
    s.stop();
    drain(s, 65536, out);
    const dst = image();
    dst.mem.fill(0xee); // a destination's old bytes: zeros must land on them
    const l = new LoadSession(dst.img);
    feed(l, out, [65536]);
    l.commit();
    expect(Buffer.compare(dst.mem, src.mem)).toBe(0);
    expect(readBlock2()).toBe(false);
    // A second session with the same shadows: the same bytes, still without reading block 2.
    const again = session();
    again.s.stop();
    drain(again.s, 65536, again.out);
    const dst2 = image();
    dst2.mem.fill(0xee);
    const l2 = new LoadSession(dst2.img);
    feed(l2, again.out, [65536]);
    l2.commit();
    expect(Buffer.compare(dst2.mem, src.mem)).toBe(0);
    expect(readBlock2()).toBe(false);
  });

  it('loads zeros onto never-written memory by leaving it alone, also when it fails', () => {
    const src = image(),
      PAGE = 4096;
    src.mem.fill(5, 300 * 1024, 310 * 1024); // block 1 has data; blocks 0, 2 and 3 are zeros
    const s = new SaveSession(src.img);
    const out: Uint8Array[] = [];
    drain(s, 1 << 20, out);
    s.stop();
    drain(s, 1 << 20, out);
    const dst = image();
    const written = new Set<number>(); // the destination's pages that have data
    dst.mem.fill(7, 0, PAGE); // page 0 has old bytes: zeros must land there
    written.add(0);
    const m = dst.img.memories[0];
    const touched: number[] = [];
    const bytesOf = m.bytes;
    m.bytes = (o, n) => {
      for (let p = Math.floor(o / PAGE); p * PAGE < o + n; p++) {
        touched.push(p);
        written.add(p);
      }
      return bytesOf(o, n);
    };
    m.isHole = (o, n) => ![...written].some(p => p * PAGE < o + n && (p + 1) * PAGE > o);
    const l = new LoadSession(dst.img, { undo: [new Uint8Array(src.mem.length)] });
    feed(l, out, [1 << 20]);
    l.commit();
    expect(Buffer.compare(dst.mem, src.mem)).toBe(0);
    // Blocks 2 and 3 (pages 128-255) were holes receiving zeros: never touched.
    expect(touched.some(p => p >= 128)).toBe(false);
    // A stream cut off after its memory went in: what was written is put back, holes stay.
    const l2 = new LoadSession(dst.img, { undo: [new Uint8Array(src.mem.length)] });
    dst.mem.fill(9, 0, PAGE);
    touched.length = 0;
    const partial = Buffer.concat(out);
    l2.write(partial.subarray(0, partial.length - 200));
    l2.discard();
    expect(dst.mem.subarray(0, PAGE).every(v => v === 9)).toBe(true);
    expect(touched.some(p => p >= 128)).toBe(false);
  });

  it('refuses another device model, another version and another layout at the header', () => {
    const src = image('edu');
    const out: Uint8Array[] = [];
    const s = new SaveSession(src.img);
    s.stop();
    drain(s, 1 << 20, out);
    for (const [dst, re] of [
      [image('gpio'), /device model "edu" cannot be loaded into "gpio"/],
      [image('edu', 2), /version 1 is incompatible with version 2/],
    ] as const) {
      const l = new LoadSession(dst.img);
      expect(() => feed(l, out, [1 << 20])).toThrow(re);
      expect(() => l.commit()).toThrow(StreamError);
    }
  });

  it('rejects a corrupted or truncated stream and applies nothing', () => {
    const src = image();
    src.mem.fill(1);
    src.state.a = 5;
    const out: Uint8Array[] = [];
    const s = new SaveSession(src.img);
    s.stop();
    drain(s, 1 << 20, out);
    const flat = Buffer.concat(out);
    const flipped = Buffer.from(flat);
    flipped[flat.length >> 1] ^= 0x10;
    const a = image(),
      la = new LoadSession(a.img);
    expect(() => la.write(flipped)).toThrow(/checksum/);
    expect(() => la.write(new Uint8Array(1))).toThrow(/already rejected/);
    const b = image(),
      lb = new LoadSession(b.img);
    lb.write(flat.subarray(0, flat.length - 20));
    expect(() => lb.commit()).toThrow(/incomplete/);
    for (const x of [a, b]) {
      expect(x.mem.every(v => v === 0)).toBe(true);
      expect(x.state.a).toBe(0);
    }
    const c = image(),
      lc = new LoadSession(c.img);
    const huge = Buffer.from(flat.subarray(0, 8));
    huge.writeUInt32LE(0x7fffffff, 4);
    expect(() => lc.write(huge)).toThrow(/exceeds/); // refused before buffering
  });

  it('refuses a bit flipped anywhere in a stream with memory, staged or in place', () => {
    const src = image('dev', 1, 4096 + 100);
    src.mem.forEach((_, i) => (src.mem[i] = (i * 7) & 255));
    src.state.a = 5;
    const out: Uint8Array[] = [];
    const s = new SaveSession(src.img);
    s.stop();
    drain(s, 1 << 20, out);
    const flat = Buffer.concat(out);
    const undo = [new Uint8Array(src.mem.length)];
    for (let at = 0; at < flat.length; at++) {
      const bad = Buffer.from(flat);
      bad[at] ^= 1 << (at % 8);
      for (const opts of [{}, { undo }]) {
        const dst = image('dev', 1, src.mem.length);
        dst.mem.fill(0x33);
        const l = new LoadSession(dst.img, opts);
        expect(() => {
          l.write(bad);
          l.commit();
        }, `byte ${at}`).toThrow(StreamError);
        expect(
          dst.mem.every(v => v === 0x33),
          `byte ${at}`,
        ).toBe(true);
        expect(dst.state.a).toBe(0);
      }
    }
  });

  it('names the memory record whose bytes do not check out, and puts memory back', () => {
    const src = image('dev', 1, 1 << 20);
    src.mem.fill(7);
    const out: Uint8Array[] = [];
    const s = new SaveSession(src.img);
    s.stop();
    drain(s, 1 << 20, out);
    const flat = Buffer.concat(out);
    // The third memory record (256 KiB each): its data starts 20 bytes after its head.
    const head = flat.indexOf(Buffer.from([4, 0, 0, 0, 12, 0, 4, 0]));
    const third = head + 2 * (12 + 12 + 256 * 1024);
    expect(flat.readUInt32LE(third + 12)).toBe(512 * 1024); // its offset in memory
    const bad = Buffer.from(flat);
    bad[third + 20 + 1000] ^= 4;
    const dst = image('dev', 1, 1 << 20),
      l = new LoadSession(dst.img, { undo: [new Uint8Array(1 << 20)] });
    dst.mem.fill(0x33);
    expect(() => l.write(bad)).toThrow(
      new StreamError(
        `checksum mismatch in record 6 (byte ${third} of the stream; mem [524288, +262144)): ` +
          'the stream was corrupted in transfer',
      ),
    );
    expect(dst.mem.every(v => v === 0x33)).toBe(true);
    // A head made to point outside the device is a corruption too, and named one.
    for (const [byte, bit] of [
      [8, 1], // the memory index: 1, which does not exist
      [19, 2], // the offset's high word: beyond the memory
    ]) {
      const head = Buffer.from(flat);
      head[third + byte] ^= bit;
      const l2 = new LoadSession(image('dev', 1, 1 << 20).img);
      expect(() => l2.write(head), `byte ${byte}`).toThrow(
        new RegExp(`^checksum mismatch in record 6 \\(byte ${third} of the stream; memory `),
      );
    }
  });
});

// A mapped v1 data window is memory the client can write while the server loads from it.
describe('a state record whose bytes change after they were checked', () => {
  it('is kept as checked', () => {
    const src = image();
    src.state.a = 5;
    src.state.flag = true;
    const s = new SaveSession(src.img);
    s.stop();
    const parts: Uint8Array[] = [];
    for (let b = s.read(1 << 20); b.length; b = s.read(1 << 20)) parts.push(b.slice());
    const stream = Buffer.concat(parts);
    const dst = image();
    const check = dst.img.checkState;
    let given: Uint8Array | null = null; // the bytes of the current write
    dst.img.checkState = b => {
      const e = check(b);
      given?.fill(0xee); // the client rewrites the window once the check has passed
      return e;
    };
    const l = new LoadSession(dst.img);
    for (let off = 0; off < stream.length; ) {
      const end = off + stream.readUInt32LE(off + 4) + RECORD_OVERHEAD;
      given = stream.subarray(off, end); // one record per write: each lands where it lies
      l.write(given);
      off = end;
    }
    l.commit();
    expect(dst.state.a).toBe(5);
    expect(dst.state.flag).toBe(true);
  });
});
