import { describe, it, expect } from 'vitest';
import {
  socketPair,
  MessageSocket,
  SendQueue,
  memfdCreate,
  openFdCount,
  fileIdentity,
  closeAll,
  type OwnedFd,
} from '@vfu/native';

/** Reads everything `flush` lets through until the queue is empty, noting where fds arrived. */
function drain(queue: SendQueue, reader: MessageSocket) {
  const got: number[] = [];
  const fdsAt: { at: number; fds: OwnedFd[] }[] = [];
  const buf = Buffer.alloc(64 * 1024);
  for (let idle = 0; idle < 1000; ) {
    const drained = queue.flush();
    const r = reader.recv(buf);
    if (r === null) {
      if (drained) break;
      idle++;
      continue;
    }
    if (r.fds.length > 0) fdsAt.push({ at: got.length + r.bytes - 1, fds: r.fds });
    for (let i = 0; i < r.bytes; i++) got.push(buf[i]);
  }
  return { got, fdsAt };
}

describe('SendQueue', () => {
  it('sends in order what the socket did not take, copies and fds with their first byte', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const queue = new SendQueue(new MessageSocket(a.fd));
    const big = Buffer.alloc(8 << 20, 1); // more than the socket takes at once
    queue.send(big);
    expect(queue.empty).toBe(false);
    expect(queue.bytes).toBeGreaterThan(0);
    big.fill(9); // the caller reuses its buffer: what waits is a copy
    const ram = memfdCreate('q', 4096);
    const small = Buffer.from([2, 3, 4]);
    queue.send(small, [ram.fd], [Buffer.from([5, 6])]);
    const identity = fileIdentity(ram.fd);
    ram.close(); // the caller's fd goes; the queue holds its own
    const { got, fdsAt } = drain(queue, new MessageSocket(b.fd));
    expect(got.length).toBe((8 << 20) + 5);
    expect(got.slice(0, 8 << 20).every(x => x === 1)).toBe(true);
    expect(got.slice(8 << 20)).toEqual([2, 3, 4, 5, 6]);
    // The fd came with the small message's bytes: the read holding them ended at or past its
    // first byte, and it is the memfd sent.
    expect(fdsAt).toHaveLength(1);
    expect(fdsAt[0].at).toBeGreaterThanOrEqual(8 << 20);
    expect(fileIdentity(fdsAt[0].fds[0].fd)).toBe(identity);
    expect(queue.empty).toBe(true);
    expect(queue.bytes).toBe(0);
    closeAll(fdsAt[0].fds);
    a.close();
    b.close();
    expect(openFdCount()).toBe(before);
  });

  it('clear() drops what waits and closes the fds it held', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const queue = new SendQueue(new MessageSocket(a.fd));
    queue.send(Buffer.alloc(8 << 20));
    const ram = memfdCreate('q', 4096);
    queue.send(Buffer.from([1]), [ram.fd]);
    ram.close();
    expect(openFdCount()).toBe(before + 3); // a, b and the queue's copy of the memfd
    queue.clear();
    expect(queue.empty).toBe(true);
    expect(queue.bytes).toBe(0);
    a.close();
    b.close();
    expect(openFdCount()).toBe(before);
  });
});
