import { describe, it, expect } from 'vitest';
import { SaveSession, V1SaveIteration, LoadSession, u32 } from '@vfu/stream';
import { testImage } from './test-image.ts';

const schema = { a: u32 };
const image = () => testImage(schema);

/**
 * Reads chunks until pending_bytes says the save is complete (or a chunk is empty); `copy`
 * takes a copy of the prepared chunk of `n` bytes.
 */
function readRest(it: V1SaveIteration, copy: (n: number) => Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = it.pendingBytes(); p > 0; p = it.pendingBytes()) {
    const n = it.prepare();
    if (!n) break;
    out.push(copy(n));
  }
  return out;
}

/** A fresh destination image with `chunks` loaded and committed. */
function loaded(chunks: Uint8Array[]) {
  const dst = image(),
    l = new LoadSession(dst.img);
  for (const c of chunks) l.write(c);
  l.commit();
  return dst;
}

describe('v1 save iteration (§7.5)', () => {
  // Offset and size stay until pending_bytes is read again.
  it('data_offset prepares a chunk; pending 0 ends stop-and-copy', () => {
    const src = image();
    src.mem.fill(3);
    src.state.a = 42;
    const s = new SaveSession(src.img);
    const it = new V1SaveIteration(s, new Uint8Array(16 * 1024));
    expect(it.dataSize).toBeNull(); // data_size before data_offset: out of order
    expect(it.pendingBytes()).toBeGreaterThan(64 * 1024);
    const n = it.prepare();
    expect(n).toBe(16 * 1024);
    expect(it.prepare()).toBe(n); // a second data_offset read does not prepare again
    const first = it.read(0, n)!.slice();
    expect(it.read(n - 4, 8)).toBeNull(); // outside the chunk
    expect(Buffer.compare(it.read(0, n)!, first)).toBe(0); // re-reads return the same chunk
    it.pendingBytes(); // consumes it
    s.stop();
    const out = [first, ...readRest(it, k => it.read(0, k)!.slice())];
    expect(it.pendingBytes()).toBe(0);
    const dst = loaded(out);
    expect(dst.state.a).toBe(42);
    expect(dst.mem.every(b => b === 3)).toBe(true);
  });

  it('a chunk half read when pre-copy ends is offered again, not lost', () => {
    const src = image();
    src.mem.fill(9);
    const s = new SaveSession(src.img);
    const it = new V1SaveIteration(s, new Uint8Array(8 * 1024));
    it.pendingBytes();
    const n = it.prepare();
    const partial = it.read(0, 100)!.slice();
    s.stop();
    it.onStopCopy();
    expect(it.pendingBytes()).toBeGreaterThan(0);
    expect(it.prepare()).toBe(n);
    expect(Buffer.compare(it.read(0, 100)!, partial)).toBe(0);
  });

  it('a chunk marked read through a mapping is consumed, not offered again', () => {
    const src = image();
    src.mem.fill(9);
    src.state.a = 7;
    const s = new SaveSession(src.img);
    const window = new Uint8Array(8 * 1024);
    const it = new V1SaveIteration(s, window);
    it.pendingBytes();
    const out = [window.slice(0, it.prepare())]; // prepared in the window given
    it.markRead();
    s.stop();
    it.onStopCopy();
    const rest = readRest(it, k => {
      it.markRead();
      return window.slice(0, k);
    });
    const dst = loaded([...out, ...rest]);
    expect(dst.state.a).toBe(7);
    expect(dst.mem.every(b => b === 9)).toBe(true);
  });
});
