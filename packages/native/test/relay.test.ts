import { describe, it, expect } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import {
  SplicePipe,
  recvExact,
  sendExact,
  socketPair,
  hash,
  openFdCount,
  eventfdCreate,
  MessageSocket,
  type NativeError,
  type ShortIoError,
  type OwnedFd,
} from '@vfu/native';
import { pattern } from './fixtures/pattern.mjs';

const peerScript = join(__dirname, 'fixtures/relay-peer.mjs');

/** A relay-peer.mjs process with `fd` as its fd 3. */
function peer(fd: OwnedFd, ...args: string[]): { child: ChildProcess; out: Promise<string> } {
  const child = spawn(process.execPath, [peerScript, ...args], {
    stdio: ['ignore', 'pipe', 'inherit', fd.fd],
  });
  let text = '';
  child.stdout!.on('data', d => (text += d));
  const out = new Promise<string>(res => child.once('close', () => res(text))); // stdio closed too
  return { child, out };
}

const errorOf = (f: () => void): NativeError => {
  try {
    f();
  } catch (e) {
    return e as NativeError;
  }
  throw new Error('did not throw');
};

describe('SplicePipe, recvExact, sendExact (c/relay.c)', () => {
  it('moves exactly n bytes socket to socket while both peers run, past every buffer', async () => {
    const n = 9 * 2 ** 20 + 77; // over the socket buffers (4 MiB) and the pipe (1 MiB)
    const [srcNear, srcFar] = socketPair(),
      [dstNear, dstFar] = socketPair();
    const writer = peer(srcFar, 'write', String(n), 'TAIL');
    const reader = peer(dstFar, 'read', String(n));
    srcFar.close();
    dstFar.close();
    const pipe = SplicePipe.open();
    pipe.move(srcNear.fd, dstNear.fd, n, 5000);
    const tail = new Uint8Array(4);
    recvExact(srcNear.fd, tail, 5000); // what followed the n bytes stayed in the source socket
    expect(new TextDecoder().decode(tail)).toBe('TAIL');
    dstNear.close(); // the reader sees the end right after the n bytes: none more were sent
    expect(JSON.parse(await reader.out)).toEqual({ hash: hash(pattern(n)), after: 'end' });
    await writer.out;
    pipe.close();
    srcNear.close();
  });

  it('never installs fds that came with the bytes it moves or reads', async () => {
    const before = openFdCount();
    const [srcNear, srcFar] = socketPair(),
      [dstNear, dstFar] = socketPair();
    const writer = peer(srcFar, 'write', '8192', 'T', 'fds');
    srcFar.close();
    await writer.out;
    const pipe = SplicePipe.open();
    const opened = openFdCount();
    pipe.move(srcNear.fd, dstNear.fd, 4096, 1000); // the first 4096 bytes carried an eventfd
    const rest = new Uint8Array(4096 + 1);
    recvExact(srcNear.fd, rest, 1000);
    expect(openFdCount()).toBe(opened);
    const moved = new Uint8Array(4096);
    recvExact(dstFar.fd, moved, 1000);
    expect(Buffer.compare(moved, pattern(4096))).toBe(0);
    // recvExact drops fds the same way.
    const e = eventfdCreate();
    new MessageSocket(dstFar.fd).send(new Uint8Array(8), [e.fd]);
    e.close();
    recvExact(dstNear.fd, new Uint8Array(8), 1000);
    expect(openFdCount()).toBe(opened);
    pipe.close();
    for (const fd of [srcNear, dstNear, dstFar]) fd.close();
    expect(openFdCount()).toBe(before);
  });

  it('bounds a whole call by its timeout, however the peer trickles', async () => {
    const [near, far] = socketPair();
    const trickler = peer(far, 'trickle', '40', '50'); // a byte every 50 ms for 2 s
    far.close();
    // A wait restarted by each byte would see all 40 come (2 s, but never 400 ms without one).
    const e = errorOf(() => recvExact(near.fd, new Uint8Array(40), 400));
    expect(e.code).toBe('ETIMEDOUT');
    expect((e as ShortIoError).done).toBeGreaterThan(0);
    expect((e as ShortIoError).done).toBeLessThan(40);
    trickler.child.kill();
    await trickler.out;
    near.close();
  });

  it('ends a wait with ETIMEDOUT or EPIPE, and a pipe that failed refuses to go on', () => {
    const [srcNear, srcFar] = socketPair(),
      [dstNear, dstFar] = socketPair();
    const pipe = SplicePipe.open();
    sendExact(srcFar.fd, new Uint8Array(100), 1000);
    expect(errorOf(() => pipe.move(srcNear.fd, dstNear.fd, 200, 50)).code).toBe('ETIMEDOUT');
    expect(() => pipe.move(srcNear.fd, dstNear.fd, 1, 50)).toThrow(/open another pipe/);
    srcFar.close();
    const again = SplicePipe.open();
    expect(errorOf(() => again.move(srcNear.fd, dstNear.fd, 1, 50)).code).toBe('EPIPE');
    expect(errorOf(() => recvExact(srcNear.fd, new Uint8Array(1), 50)).code).toBe('EPIPE');
    expect(errorOf(() => recvExact(dstNear.fd, new Uint8Array(1), 50)).code).toBe('ETIMEDOUT');
    dstFar.close();
    expect(errorOf(() => sendExact(dstNear.fd, new Uint8Array(1), 50)).code).toBe('EPIPE');
    for (const p of [pipe, again]) p.close();
    srcNear.close();
    dstNear.close();
  });
});
