// A destination fed mutated streams: it may only refuse them with a StreamError, and a refused
// stream never changes the device.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { SaveSession, LoadSession, StreamError, u32, bytes } from '@vfu/stream';
import { testImage } from './test-image.ts';

const RUNS = Number(process.env.VFU_FUZZ_RUNS ?? 1000);
const schema = { a: u32, b: bytes(8) };
const image = (memSize = 64 * 1024) => testImage(schema, { memSize });

const src = image();
src.mem.fill(0x5a);
src.state.a = 9;
const s = new SaveSession(src.img);
s.stop();
const parts: number[] = [];
for (let d = s.read(65536); d.length; d = s.read(65536)) parts.push(...d);
const stream = Uint8Array.from(parts);

describe('stream fuzz', () => {
  it('fuzz: a mutated stream loads only if it checks out, else changes nothing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(stream.length - 1), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.nat(stream.length),
        fc.integer({ min: 1, max: 70000 }),
        (flips, cut, chunk) => {
          const m = stream.slice(0, Math.max(cut, 1));
          let changed = false;
          for (const [at, v] of flips)
            if (at < m.length && m[at] !== v) {
              m[at] = v;
              changed = true;
            }
          const dst = image(),
            l = new LoadSession(dst.img);
          try {
            for (let o = 0; o < m.length; o += chunk) l.write(m.subarray(o, o + chunk));
            l.commit();
          } catch (e) {
            expect(e).toBeInstanceOf(StreamError);
            expect(dst.mem.every(b => b === 0)).toBe(true);
            expect(dst.state.a).toBe(0);
            return;
          }
          // Accepted: only possible when nothing that matters changed.
          expect(changed && cut >= stream.length ? Buffer.compare(dst.mem, src.mem) : 0).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('fuzz: in place, a refused stream leaves memory as it was, an accepted one loads', () => {
    const undo = [new Uint8Array(64 * 1024)]; // reused across sessions, as the server does
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(stream.length - 1), fc.integer({ min: 0, max: 255 })), {
          maxLength: 6,
        }),
        fc.nat(stream.length),
        fc.integer({ min: 1, max: 70000 }),
        (flips, cut, chunk) => {
          const m = stream.slice(0, Math.max(cut, 1));
          for (const [at, v] of flips) if (at < m.length) m[at] = v;
          const dst = image();
          dst.mem.fill(0x33); // the destination's own memory before the resume
          const l = new LoadSession(dst.img, { undo });
          try {
            for (let o = 0; o < m.length; o += chunk) l.write(m.subarray(o, o + chunk));
            l.commit();
          } catch (e) {
            expect(e).toBeInstanceOf(StreamError);
            expect(dst.mem.every(b => b === 0x33)).toBe(true);
            expect(dst.state.a).toBe(0);
            return;
          }
          expect(Buffer.compare(dst.mem, src.mem)).toBe(0);
          expect(dst.state.a).toBe(9);
        },
      ),
      { numRuns: RUNS },
    );
  });
});
