import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  socketPair,
  MessageSocket,
  memfdCreate,
  isHole,
  MappedMemory,
  eventfdCreate,
  eventfdWrite,
  eventfdRead,
  openFdCount,
  fileIdentity,
  listenUnix,
  acceptUnix,
  FdWatcher,
  NativeError,
  connectUnix,
  someoneListens,
  peerHasReadAll,
  safeToMap,
  type OwnedFd,
} from '@vfu/native';

const once = <T>(fn: (resolve: (v: T) => void) => void) => new Promise<T>(fn);

describe('fd passing on one machine', () => {
  it('sends fds with the bytes they belong to and leaks nothing', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const sa = new MessageSocket(a.fd),
      sb = new MessageSocket(b.fd);
    const m = memfdCreate('t', 4096),
      e = eventfdCreate();
    expect(sa.send(Buffer.from('abcd'), [m.fd, e.fd])).toBe(4);
    expect(sa.send(Buffer.from('efgh'))).toBe(4);
    const buf = Buffer.alloc(64);
    const r1 = sb.recv(buf)!;
    // The kernel ends a read at the bytes that carried fds: the fds belong to those bytes.
    expect(r1.bytes).toBe(4);
    expect(r1.fds.map(f => fileIdentity(f.fd))).toEqual([fileIdentity(m.fd), fileIdentity(e.fd)]);
    expect(r1.truncated).toBe(false);
    const r2 = sb.recv(buf)!;
    expect(buf.subarray(0, r2.bytes).toString()).toBe('efgh');
    expect(r2.fds).toEqual([]);
    expect(sb.recv(buf)).toBeNull(); // EAGAIN
    for (const f of [...r1.fds, m, e, a, b]) f.close();
    expect(openFdCount()).toBe(before);
  });

  it('reports MSG_CTRUNC when more fds arrive than fit, closing those that did', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const fds = [eventfdCreate(), eventfdCreate(), eventfdCreate()];
    new MessageSocket(a.fd).send(
      Buffer.from('x'),
      fds.map(f => f.fd),
    );
    const r = new MessageSocket(b.fd, 1).recv(Buffer.alloc(8))!;
    expect(r.truncated).toBe(true);
    expect(r.fds.length).toBeLessThan(3);
    for (const f of [...r.fds, ...fds, a, b]) f.close();
    expect(openFdCount()).toBe(before);
  });

  it('reports hang-up as a zero-byte read and queues nothing on a full socket', () => {
    const [a, b] = socketPair();
    const sa = new MessageSocket(a.fd);
    const chunk = Buffer.alloc(1 << 20, 1);
    let sent = 0;
    for (let n = sa.send(chunk); n > 0; n = sa.send(chunk)) sent += n;
    // the socket buffer filled: send returned 0 (EAGAIN), not an error
    expect(sent).toBeGreaterThan(0);
    b.close();
    expect(() => sa.send(chunk)).toThrow(NativeError); // EPIPE, and no SIGPIPE killed us
    a.close();
    const [c, d] = socketPair();
    c.close();
    expect(new MessageSocket(d.fd).recv(Buffer.alloc(8))!.bytes).toBe(0);
    d.close();
  });

  it('tells whether the peer has read everything sent, partial reads included', () => {
    const [a, b] = socketPair();
    const sa = new MessageSocket(a.fd),
      sb = new MessageSocket(b.fd);
    expect(peerHasReadAll(a.fd)).toBe(true);
    sa.send(Buffer.from('abcdefgh'));
    expect(peerHasReadAll(a.fd)).toBe(false);
    expect(sb.recv(Buffer.alloc(3))!.bytes).toBe(3);
    expect(peerHasReadAll(a.fd)).toBe(false);
    expect(sb.recv(Buffer.alloc(8))!.bytes).toBe(5);
    expect(peerHasReadAll(a.fd)).toBe(true);
    a.close();
    b.close();
  });

  // A peek leaves the bytes in the socket, so the sender is not woken for the room freed; the
  // peek offset lets each peek go on where the last ended.
  it('peeks on from where the last peek ended, then discards what was peeked', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const sa = new MessageSocket(a.fd),
      sb = new MessageSocket(b.fd);
    expect(sb.usePeekOffset()).toBe(true);
    sa.send(Buffer.from('abcd'));
    sa.send(Buffer.from('efgh'));
    const buf = Buffer.alloc(16);
    expect(sb.peekInto(buf, 0, 2)).toBe(2);
    expect(sb.peekInto(buf, 2, 16)).toBe(6);
    expect(buf.subarray(0, 8).toString()).toBe('abcdefgh');
    expect(sb.peekInto(buf, 0, 16)).toBe(-1); // all of it peeked: nothing new
    expect(peerHasReadAll(a.fd)).toBe(false); // still in the socket
    expect(sb.discard(5)).toBe(5);
    const e = eventfdCreate();
    sa.send(Buffer.from('ij'), [e.fd]);
    // The peek offset moved back by what was taken: peeking goes on after "h".
    expect(sb.peekInto(buf, 0, 16)).toBe(2);
    expect(buf.subarray(0, 2).toString()).toBe('ij');
    const copies = sb.takeFds();
    expect(copies.map(f => fileIdentity(f.fd))).toEqual([fileIdentity(e.fd)]);
    for (const f of copies) f.close();
    // Read for real, the bytes come once more with their fd; discard closes what it takes.
    expect(sb.recvInto(buf, 0, 3)).toBe(3);
    expect(buf.subarray(0, 3).toString()).toBe('fgh');
    expect(sb.discard(16)).toBe(2); // "ij" and its fd
    expect(sb.recvInto(buf, 0, 16)).toBe(-1);
    expect(peerHasReadAll(a.fd)).toBe(true);
    for (const f of [e, a, b]) f.close();
    expect(openFdCount()).toBe(before);
  });

  // Why a lingering connection undoes a peek that meets fds (transport's #peekInto): a chunk
  // peeked in two pieces brings its fds with each, where reads bring them once.
  it('brings the fds of a chunk with every peek into it, and with its first read only', () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const sa = new MessageSocket(a.fd),
      sb = new MessageSocket(b.fd);
    sb.usePeekOffset();
    const e = eventfdCreate();
    sa.send(Buffer.from('abcdefgh'), [e.fd]);
    const buf = Buffer.alloc(8);
    const fdsOf = () => {
      const fds = sb.takeFds();
      for (const f of fds) f.close();
      return fds.length;
    };
    expect(sb.peekInto(buf, 0, 3)).toBe(3);
    expect(fdsOf()).toBe(1);
    expect(sb.peekInto(buf, 3, 5)).toBe(5);
    expect(fdsOf()).toBe(1); // the same fd again
    sb.discard(8);
    fdsOf();
    sa.send(Buffer.from('abcdefgh'), [e.fd]);
    expect(sb.recvInto(buf, 0, 3)).toBe(3);
    expect(fdsOf()).toBe(1);
    expect(sb.recvInto(buf, 3, 5)).toBe(5);
    expect(fdsOf()).toBe(0);
    for (const f of [e, a, b]) f.close();
    expect(openFdCount()).toBe(before);
  });

  // A mapping past a file's end kills the process at its first touch (SIGBUS): a peer's fd is
  // mapped only when it cannot shrink and covers the range.
  it('maps a peer fd only when it is sealed against shrinking and long enough', () => {
    const m = memfdCreate('sealed', 8192);
    expect(safeToMap(m.fd, 0, 8192)).toBe(true);
    expect(safeToMap(m.fd, 4096, 4096)).toBe(true);
    expect(safeToMap(m.fd, 4096, 8192)).toBe(false); // past the end
    m.close();
    const dir = mkdtempSync(join(tmpdir(), 'vfu-map-'));
    const f = openSync(join(dir, 'f'), 'w+');
    ftruncateSync(f, 8192);
    expect(safeToMap(f, 0, 4096)).toBe(false); // no seals: its owner could truncate it
    closeSync(f);
    rmSync(dir, { recursive: true });
  });

  it('closes an owned fd exactly once', () => {
    const e = eventfdCreate();
    const n = e.fd;
    e.close();
    e.close();
    expect(e.closed).toBe(true);
    expect(() => e.fd).toThrow(/already closed/);
    expect(() => eventfdRead(n)).toThrow(NativeError); // EBADF: really closed
  });
});

describe('memory and eventfds', () => {
  it('tells never-written ranges of a memfd from written ones', () => {
    const fd = memfdCreate('holes', 1 << 20);
    const map = MappedMemory.map(fd.fd, 0, 1 << 20);
    try {
      expect(isHole(fd.fd, 0, 1 << 20)).toBe(true);
      map.bytes(65_536 + 100, 1)[0] = 7; // one byte written: its page is data now
      expect(isHole(fd.fd, 0, 65_536)).toBe(true);
      expect(isHole(fd.fd, 0, 65_536 + 101)).toBe(false);
      expect(isHole(fd.fd, 65_536, 4096)).toBe(false);
      expect(isHole(fd.fd, 65_536 + 4096, 4096)).toBe(true);
      map.bytes(200_000, 1)[0]; // reading a hole through a shared mapping gives it a page
      expect(isHole(fd.fd, 196_608, 4096)).toBe(false);
    } finally {
      map.release();
      fd.close();
    }
  });

  it('maps a memfd; stale views read zeros after release instead of crashing', () => {
    const m = memfdCreate('map', 8192);
    const a = MappedMemory.map(m.fd, 0, 8192),
      b = MappedMemory.map(m.fd, 4096, 4096);
    a.bytes(4096, 5).set([1, 2, 3, 4, 5]);
    expect([...b.bytes(0, 5)]).toEqual([1, 2, 3, 4, 5]);
    const stale = a.bytes(4096, 5);
    a.release();
    expect([...stale]).toEqual([0, 0, 0, 0, 0]);
    expect(() => a.bytes(0, 1)).toThrow(/released/);
    expect(() => b.bytes(4090, 10)).toThrow(RangeError);
    b.release();
    m.close();
  });

  it('counts eventfd writes and reads them back once', () => {
    const e = eventfdCreate();
    expect(eventfdRead(e.fd)).toBeNull();
    eventfdWrite(e.fd);
    eventfdWrite(e.fd, 2n);
    expect(eventfdRead(e.fd)).toBe(3n);
    expect(eventfdRead(e.fd)).toBeNull();
    e.close();
  });

  it('connect answers EAGAIN at once when the queue is full; the listener counts as alive', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-backlog-'));
    const path = join(dir, 's.sock');
    const listener = listenUnix(path, 0); // room for one connection not yet accepted
    const first = connectUnix(path);
    expect(() => connectUnix(path)).toThrow(/EAGAIN.*queue of pending connections is full/);
    expect(someoneListens(path)).toBe(true);
    acceptUnix(listener.fd)?.close();
    const second = connectUnix(path); // a slot again
    [first, second, listener].forEach(f => f.close());
    expect(someoneListens(path)).toBe(false); // a socket file nobody listens on
    rmSync(dir, { recursive: true });
  });

  it('refuses an over-long socket path with a clear error', () => {
    expect(() => listenUnix(`/tmp/${'x'.repeat(120)}`)).toThrow(/1-107 bytes/);
    expect(() => connectUnix('/nonexistent/vfu.sock')).toThrow(/ENOENT/);
  });
});

describe('across processes', () => {
  it("passes a memfd and an eventfd both ways and sees each side's writes", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-native-'));
    const path = join(dir, 's.sock');
    const before = openFdCount();
    const listener = listenUnix(path);
    const child = spawn(process.execPath, [join(__dirname, 'fixtures/peer.mjs'), path], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const conn = await once<OwnedFd>(res => {
      const w = new FdWatcher(listener.fd, () => {
        const c = acceptUnix(listener.fd);
        if (c) {
          w.close();
          res(c);
        }
      });
    });
    const ms = new MessageSocket(conn.fd);
    const buf = Buffer.alloc(256);
    const next = () =>
      once<{ text: string; fds: OwnedFd[] }>(res => {
        const w = new FdWatcher(conn.fd, () => {
          const r = ms.recv(buf);
          if (r) {
            w.close();
            res({ text: buf.subarray(0, r.bytes).toString(), fds: r.fds });
          }
        });
      });
    const first = await next();
    expect(first.text).toBe('FDS1');
    expect(first.fds).toHaveLength(2);
    const [mem, ev] = first.fds;
    const map = MappedMemory.map(mem.fd, 0, 4096);
    expect(Buffer.from(map.bytes(0, 15)).toString()).toBe('hello from peer');
    map.bytes(100, 6).set(Buffer.from('parent'));
    eventfdWrite(ev.fd, 5n);
    ms.send(Buffer.from('CHECK'));
    expect(JSON.parse((await next()).text)).toEqual({ eventfd: '5', text: 'parent' });

    const mine = memfdCreate('parent', 4096);
    const mineMap = MappedMemory.map(mine.fd, 0, 4096);
    mineMap.bytes(0, 12).set(Buffer.from('from parent!'));
    ms.send(Buffer.from('MAPYOURS'), [mine.fd]);
    expect(JSON.parse((await next()).text)).toEqual({ text: 'from parent!' });
    expect(Buffer.from(mineMap.bytes(20, 4)).toString()).toBe('pong');

    for (const m of [map, mineMap]) m.release();
    for (const f of [mem, ev, mine, conn, listener]) f.close();
    await once(res => child.on('exit', res));
    expect(openFdCount()).toBe(before);
    rmSync(dir, { recursive: true, force: true });
  });
});
