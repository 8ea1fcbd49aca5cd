// The scan for changed pages where the device tells which blocks it saw written: it compares
// only those, and still sends every change, whether a pre-copy scan or the final one found it.
import { describe, it, expect } from 'vitest';
import {
  SaveSession,
  LoadSession,
  createState,
  encodeState,
  u32,
  type DeviceImage,
} from '@vfu/stream';

const schema = { a: u32 };
const BLOCK = 256 * 1024,
  SIZE = 2 << 20;

/** A device with one memory whose writes through write() it sees; `handOut` stops that. */
function device() {
  const state = createState(schema);
  const mem = new Uint8Array(SIZE);
  const flags = new Uint8Array(SIZE / BLOCK);
  let seen = true,
    compared = 0;
  const img: DeviceImage = {
    deviceId: 'dev',
    deviceVersion: 1,
    schema: 'a:u32',
    saveState: () => encodeState(schema, state),
    checkState: () => null,
    loadState: () => {},
    saveConfig: () => new Uint8Array(16),
    configSize: 16,
    loadConfig: () => {},
    memories: [
      {
        name: 'mem',
        size: SIZE,
        bytes: (o, n) => {
          compared += n;
          return mem.subarray(o, o + n);
        },
        writes: { blockSize: BLOCK, flags: () => (seen ? flags : null) },
      },
    ],
  };
  const write = (at: number, v: number) => {
    mem.fill(v, at, at + 8);
    flags[Math.floor(at / BLOCK)] = 1;
  };
  return {
    img,
    mem,
    write,
    handOut: () => {
      seen = false;
    },
    /** Bytes of memory read since the last call. */
    read: () => {
      const n = compared;
      compared = 0;
      return n;
    },
  };
}

/** Everything the session has now, as one buffer. */
function take(s: SaveSession): Buffer {
  const out: Uint8Array[] = [];
  for (let b = s.read(1 << 20); b.length; b = s.read(1 << 20)) out.push(b.slice());
  return Buffer.concat(out);
}

function loaded(stream: Uint8Array[]): Uint8Array {
  const mem = new Uint8Array(SIZE);
  const img: DeviceImage = {
    ...device().img,
    memories: [{ name: 'mem', size: SIZE, bytes: (o, n) => mem.subarray(o, o + n) }],
  };
  const l = new LoadSession(img);
  for (const b of stream) l.write(b);
  l.commit();
  return mem;
}

describe('a scan that knows which blocks were written', () => {
  it('compares only written blocks and sends every change, found before stop or after', () => {
    const d = device();
    d.mem.fill(7);
    const s = new SaveSession(d.img);
    const parts = [take(s)]; // the first pass
    d.write(3 * BLOCK + 4096, 1);
    d.read();
    s.refresh(); // a pre-copy scan finds that page; it is queued, not yet sent
    expect(s.precopyInfo().dirtyBytes).toBe(4096);
    expect(d.read()).toBe(2 * BLOCK); // the written block, then its pages one by one
    d.write(6 * BLOCK, 2);
    s.stop();
    parts.push(take(s));
    // Sending the two pages, then the final scan: the blocks still flagged (block 3 again, now
    // equal; block 6 and its pages), not all memory.
    expect(d.read()).toBe(2 * 4096 + 3 * BLOCK);
    expect(Buffer.compare(loaded(parts), d.mem)).toBe(0);
  });

  it('compares every byte again once writes can bypass the device', () => {
    const d = device();
    const s = new SaveSession(d.img);
    const parts = [take(s)];
    d.handOut();
    d.mem.fill(9, 5 * BLOCK, 5 * BLOCK + 100); // as a client's mapping would: no flag
    d.read();
    s.stop();
    parts.push(take(s));
    expect(d.read()).toBeGreaterThanOrEqual(SIZE);
    expect(Buffer.compare(loaded(parts), d.mem)).toBe(0);
  });
});
