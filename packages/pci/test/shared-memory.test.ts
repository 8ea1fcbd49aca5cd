// Device memory says which blocks its write() changed, until writes can bypass it: its fd given
// to a client (which may map it) or a view handed out. A migration's scan relies on both halves.
import { afterEach, describe, expect, it } from 'vitest';
import { sharedMemory, WRITE_BLOCK, type SharedMemory } from '@vfu/pci';

const made: SharedMemory[] = [];
afterEach(() => made.splice(0).forEach(m => m.release()));

function memory(size = 4 * WRITE_BLOCK): SharedMemory {
  const m = sharedMemory('test-writes', size);
  made.push(m);
  return m;
}

describe('SharedMemory.writes', () => {
  it('flags each block a write touches, across a block boundary too', () => {
    const m = memory();
    expect([...m.writes()!]).toEqual([0, 0, 0, 0]);
    m.write(WRITE_BLOCK - 2, new Uint8Array(4));
    m.write(3 * WRITE_BLOCK, new Uint8Array(1));
    m.write(2 * WRITE_BLOCK, new Uint8Array(0)); // nothing written: nothing flagged
    expect([...m.writes()!]).toEqual([1, 1, 0, 1]);
    m.view(2 * WRITE_BLOCK, 8).fill(5); // the migration's own access: not counted, not unseen
    expect([...m.writes()!]).toEqual([1, 1, 0, 1]);
  });

  it('cannot tell once its fd was handed out or a view was taken', () => {
    const a = memory(),
      b = memory();
    a.mappable!.handedOut!();
    expect(a.writes()).toBeNull();
    b.bytes(0, 16);
    expect(b.writes()).toBeNull();
  });

  it('reads as views of the same bytes it holds', () => {
    const m = memory();
    m.write(100, Uint8Array.from([1, 2, 3]));
    expect([...m.view(99, 5)]).toEqual([0, 1, 2, 3, 0]);
  });
});
