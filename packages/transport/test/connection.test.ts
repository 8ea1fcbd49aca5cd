import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import {
  socketPair,
  recvExact,
  MessageSocket,
  eventfdCreate,
  openFdCount,
  fileIdentity,
  type OwnedFd,
} from '@vfu/native';
import { encode, Command, Errno, encodeErrorReply, HEADER_SIZE, decodeHeader } from '@vfu/protocol';
import { Connection, RemoteError, ConnectionClosedError, type Incoming } from '@vfu/transport';

const opts = { maxMessageSize: (1 << 20) + 32, maxFdsPerMessage: 8 };
const tick = () => new Promise(r => setTimeout(r, 5));
const until = async (cond: () => boolean, ms = 2000) => {
  const t = Date.now();
  while (!cond()) {
    if (Date.now() - t > ms) throw new Error('timeout');
    await tick();
  }
};

function pair() {
  const [a, b] = socketPair();
  const conn = new Connection(a, opts);
  const got: Incoming[] = [];
  conn.onMessage = m => got.push(m);
  return { conn, raw: new MessageSocket(b.fd), rawFd: b, got };
}

describe('Connection framing', () => {
  it('reassembles a message sent one byte at a time, with its fds on the first byte', async () => {
    const before = openFdCount();
    const { conn, raw, rawFd, got } = pair();
    const e1 = eventfdCreate(),
      e2 = eventfdCreate();
    const msg = encode.setIrqs(7, { flags: 0x24, index: 1, start: 0, count: 2 });
    for (let i = 0; i < msg.length; i++) {
      raw.send(msg.subarray(i, i + 1), i === 0 ? [e1.fd, e2.fd] : []);
      if (i % 5 === 0) await tick();
    }
    await until(() => got.length === 1);
    expect(got[0].header).toMatchObject({ id: 7, cmd: Command.DEVICE_SET_IRQS, size: msg.length });
    expect(Buffer.from(got[0].payload)).toEqual(Buffer.from(msg.subarray(HEADER_SIZE)));
    expect(got[0].fds.map(f => fileIdentity(f.fd))).toEqual([
      fileIdentity(e1.fd),
      fileIdentity(e2.fd),
    ]);
    got[0].fds.forEach(f => f.close());
    e1.close();
    e2.close();
    conn.close();
    rawFd.close();
    expect(openFdCount()).toBe(before);
  });

  it('cuts messages from one read; fds go to the message that carried them', async () => {
    const { conn, raw, rawFd, got } = pair();
    const e = eventfdCreate();
    const m1 = encode.regionRead(1, { region: 0, offset: 0, count: 4 });
    const m2 = encode.dmaMap(2, { flags: 3, offset: 0, address: 0x1000, size: 0x1000 });
    const m3 = encode.regionRead(3, { region: 0, offset: 4, count: 4 });
    // One sendmsg per message, as QEMU and libvfio-user send; all queued before the first read.
    raw.send(m1);
    raw.send(m2, [e.fd]);
    raw.send(m3);
    await until(() => got.length === 3);
    expect(got.map(g => [g.header.id, g.fds.length])).toEqual([
      [1, 0],
      [2, 1],
      [3, 0],
    ]);
    got[1].fds[0].close();
    e.close();
    conn.close();
    rawFd.close();
  });

  it('gives fds sent with several messages in one sendmsg to the last of them', async () => {
    // The kernel reports where a chunk with fds ends, not where it starts: the fds go to the
    // last message starting in the read that brought them (one sendmsg per message avoids this).
    const { conn, raw, rawFd, got } = pair();
    const e = eventfdCreate();
    const m1 = encode.regionRead(1, { region: 0, offset: 0, count: 4 });
    const m2 = encode.dmaMap(2, { flags: 3, offset: 0, address: 0x1000, size: 0x1000 });
    raw.send(Buffer.concat([m1, m2]), [e.fd]);
    await until(() => got.length === 2);
    expect(got.map(g => [g.header.id, g.fds.length])).toEqual([
      [1, 0],
      [2, 1],
    ]);
    got[1].fds[0].close();
    // A sendmsg ending one byte into the next message: that byte carried the fds, so they go
    // to the message it starts, not to the one before it, which ends right there.
    const m3 = encode.dmaMap(3, { flags: 3, offset: 0, address: 0x2000, size: 0x1000 });
    raw.send(Buffer.concat([m1, m3.subarray(0, 1)]), [e.fd]);
    raw.send(m3.subarray(1));
    await until(() => got.length === 4);
    expect(got.slice(2).map(g => [g.header.id, g.fds.length])).toEqual([
      [1, 0],
      [3, 1],
    ]);
    got[3].fds[0].close();
    e.close();
    conn.close();
    rawFd.close();
  });

  it('refuses a message larger than the limit without reading it, and goes on', async () => {
    const { conn, raw, rawFd, got } = pair();
    const big = encode.regionWrite(1, {
      region: 0,
      offset: 0,
      count: 0,
      data: new Uint8Array(2 << 20),
    });
    let sent = 0;
    const next = encode.regionRead(2, { region: 0, offset: 0, count: 4 });
    while (sent < big.length) {
      sent += raw.send(big.subarray(sent));
      await tick();
    }
    raw.send(next);
    await until(() => got.length === 2);
    expect(got[0].error?.errno).toBe(Errno.EINVAL);
    expect(got[0].payload.length).toBe(0);
    expect(got[1].header.id).toBe(2);
    expect(got[1].error).toBeUndefined();
    conn.close();
    rawFd.close();
  });

  it('assembles large messages in the bodies given back, two at a time, each once', async () => {
    const { conn, raw, rawFd, got } = pair();
    const large = (id: number) =>
      encode.regionWrite(id, {
        region: 0,
        offset: 0,
        count: 0,
        data: new Uint8Array(300 << 10).fill(id),
      });
    const sendWhole = async (m: Uint8Array) => {
      for (let sent = 0; sent < m.length; await tick()) sent += raw.send(m.subarray(sent));
    };
    const arrive = async (id: number) => {
      await sendWhole(large(id));
      await until(() => got.length === id);
      const p = got[id - 1].payload;
      expect(p[p.length - 1]).toBe(id);
      return p.buffer;
    };
    // Both held at once (a pipelining client), then given back in the other order.
    const first = await arrive(1),
      second = await arrive(2);
    conn.recycle(got[1].payload);
    conn.recycle(got[0].payload);
    const reused = [await arrive(3), await arrive(4)];
    // Identity, not contents: toEqual would find any two buffers of equal bytes alike.
    expect(reused[0] === second && reused[1] === first).toBe(true);
    // One body given back twice is still one body: two messages never share it.
    conn.recycle(got[2].payload);
    conn.recycle(got[2].payload);
    expect(await arrive(5)).toBe(got[2].payload.buffer);
    expect((await arrive(6)) === got[4].payload.buffer).toBe(false);
    conn.close();
    rawFd.close();
  });

  // Memory for a large body can run out: the connection ends, and the fds that came with the
  // message's first bytes are closed with it, not lost.
  it('closes the fds of a large message whose body cannot be allocated', async () => {
    const before = openFdCount();
    const { conn, raw, rawFd } = pair();
    const m = encode.regionWrite(1, {
      region: 0,
      offset: 0,
      count: 0,
      data: new Uint8Array(300 << 10),
    });
    const allocate = Buffer.allocUnsafeSlow;
    Buffer.allocUnsafeSlow = (n: number) => {
      if (n > 256 << 10) throw new RangeError('Array buffer allocation failed');
      return allocate(n);
    };
    try {
      const e = eventfdCreate();
      raw.send(m.subarray(0, 100 << 10), [e.fd]);
      e.close();
      await until(() => conn.closed);
    } finally {
      Buffer.allocUnsafeSlow = allocate;
    }
    rawFd.close();
    expect(openFdCount()).toBe(before);
  });

  // A request that could not be sent (here a trace callback throws) waits for no reply: it does
  // not keep the socket from being lent.
  it('forgets a request whose send threw', async () => {
    const [a, b] = socketPair();
    const trace = (line: string) => {
      if (line.startsWith('->')) throw new Error('trace failed');
    };
    const conn = new Connection(a, { ...opts, trace });
    const id = conn.nextId();
    const read = encode.regionRead(id, { region: 0, offset: 0, count: 4 });
    await expect(conn.request(id, read)).rejects.toThrow('trace failed');
    expect(conn.lend()).not.toBeNull();
    conn.giveBack();
    conn.close();
    b.close();
  });

  it('lends its socket only between messages, reads nothing while lent, then goes on', async () => {
    const { conn, raw, rawFd, got } = pair();
    const m1 = encode.regionRead(1, { region: 0, offset: 0, count: 4 });
    // A request awaiting its reply: its reply must reach the connection, not a borrower.
    const waiting = conn.request(9, encode.regionRead(9, { region: 0, offset: 0, count: 4 }));
    expect(conn.lend()).toBeNull();
    raw.send(encodeErrorReply(9, Command.REGION_READ, Errno.EIO));
    await expect(waiting).rejects.toBeInstanceOf(RemoteError);
    raw.recv(Buffer.alloc(64)); // (the request itself)
    // Half a message read: the rest is the connection's to read.
    raw.send(m1.subarray(0, 10));
    await tick();
    expect(conn.lend()).toBeNull();
    raw.send(m1.subarray(10));
    await until(() => got.length === 1);
    // Between messages: lent. What the peer sends now is the borrower's.
    const fd = conn.lend();
    expect(fd).toBe(conn.fd);
    raw.send(encode.regionRead(2, { region: 0, offset: 0, count: 4 }));
    await tick();
    expect(got.length).toBe(1);
    const taken = new Uint8Array(m1.length);
    recvExact(fd!, taken, 1000);
    expect(decodeHeader(taken).id).toBe(2);
    expect(() => conn.send(m1)).toThrow(/lent/);
    await expect(conn.request(3, m1)).rejects.toThrow(/lent/);
    conn.giveBack();
    raw.send(encode.regionRead(4, { region: 0, offset: 0, count: 4 }));
    await until(() => got.length === 2);
    expect(got[1].header.id).toBe(4);
    conn.close();
    rawFd.close();
  });

  it('takes back what a borrower left mid-message: bytes read, to skip, and owed', async () => {
    const { conn, raw, rawFd, got } = pair();
    const m = encode.regionRead(5, { region: 0, offset: 0, count: 4 });
    // The borrower read 10 bytes of a message: they are framed with the rest.
    let fd = conn.lend()!;
    raw.send(m);
    const part = new Uint8Array(10);
    recvExact(fd, part, 1000);
    conn.giveBack({ unread: part });
    await until(() => got.length === 1);
    expect(got[0].header).toMatchObject({ id: 5, size: m.length });
    // It read a header and leaves the body: the body is dropped, the next message delivered.
    fd = conn.lend()!;
    const body = encode.regionWrite(6, {
      region: 0,
      offset: 0,
      count: 0,
      data: new Uint8Array(99),
    });
    raw.send(body);
    raw.send(encode.regionRead(7, { region: 0, offset: 0, count: 4 }));
    recvExact(fd, new Uint8Array(HEADER_SIZE), 1000);
    conn.giveBack({ skip: body.length - HEADER_SIZE });
    await until(() => got.length === 2);
    expect(got[1].header.id).toBe(7);
    // It began a message: the rest goes out before anything else.
    conn.lend();
    conn.giveBack({ owed: Uint8Array.from([1, 2, 3]) });
    conn.send(m);
    const out = new Uint8Array(3 + m.length);
    recvExact(rawFd.fd, out, 1000);
    expect([...out.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect(Buffer.compare(out.subarray(3), m)).toBe(0);
    conn.close();
    rawFd.close();
  });

  it('flags a message with more fds than max_msg_fds', async () => {
    const { conn, raw, rawFd, got } = pair();
    const fds = Array.from({ length: 9 }, () => eventfdCreate());
    raw.send(
      encode.regionRead(1, { region: 0, offset: 0, count: 4 }),
      fds.map(f => f.fd),
    );
    await until(() => got.length === 1);
    expect(got[0].error?.errno).toBe(Errno.EINVAL);
    got[0].fds.forEach(f => f.close());
    fds.forEach(f => f.close());
    conn.close();
    rawFd.close();
  });

  // msg_size < 16: nothing after it can be framed.
  it('ends the connection on an unframeable header, after reporting it', async () => {
    const { conn, raw, rawFd, got } = pair();
    const h = Buffer.alloc(16);
    h.writeUInt16LE(1, 0);
    h.writeUInt16LE(4, 2);
    h.writeUInt32LE(8, 4);
    raw.send(h);
    await until(() => conn.closed);
    expect(got[0].error?.errno).toBe(Errno.EINVAL);
    rawFd.close();
  });
});

describe('Connection requests', () => {
  it('matches replies by id in any order; error replies reject with the errno', async () => {
    const { conn, raw, rawFd } = pair();
    const p1 = conn.request(conn.nextId(), encode.getInfo(0));
    const id1 = 1,
      id2 = 2;
    const p2 = conn.request(id2, encode.regionRead(id2, { region: 0, offset: 0, count: 1 }));
    await tick();
    raw.send(encodeErrorReply(id2, Command.REGION_READ, Errno.EINVAL));
    raw.send(encode.deviceInfo(id1, { flags: 3, numRegions: 9, numIrqs: 5 }));
    await expect(p2).rejects.toMatchObject({ errno: Errno.EINVAL, name: 'RemoteError' });
    expect((await p1).payload.length).toBe(16);
    conn.close();
    rawFd.close();
  });

  // The server answers such a reply with EINVAL.
  it('passes a reply nobody waits for to onMessage', async () => {
    const { conn, raw, rawFd, got } = pair();
    raw.send(encode.deviceInfo(99, { flags: 3, numRegions: 9, numIrqs: 5 }));
    await until(() => got.length === 1);
    expect(got[0].header.flags & 0xf).toBe(1);
    conn.close();
    rawFd.close();
  });

  it('queues what the socket does not take and delivers it whole when the peer reads', async () => {
    const { conn, raw, rawFd } = pair();
    const data = new Uint8Array(8 << 20).map((_, i) => i * 7);
    const m = encode.migDataWrite(5, data);
    const e = eventfdCreate();
    conn.send(m, [e.fd]); // far larger than the socket buffer: mostly queued
    e.close(); // the queue holds its own duplicate of the fd
    const buf = Buffer.alloc(1 << 20);
    const chunks: Buffer[] = [];
    let total = 0;
    const fds: OwnedFd[] = [];
    while (total < m.length) {
      const r = raw.recv(buf);
      if (!r) {
        await tick();
        continue;
      }
      chunks.push(Buffer.from(buf.subarray(0, r.bytes)));
      total += r.bytes;
      fds.push(...r.fds);
    }
    const all = Buffer.concat(chunks);
    expect(decodeHeader(all).size).toBe(m.length);
    expect(all.equals(Buffer.from(m))).toBe(true);
    expect(fds).toHaveLength(1);
    fds.forEach(f => f.close());
    conn.close();
    rawFd.close();
  });

  it('rejects pending requests when the peer hangs up, and reports the close once', async () => {
    const { conn, rawFd } = pair();
    const reasons: string[] = [];
    conn.onClose = r => reasons.push(r);
    const p = conn.request(1, encode.getInfo(1));
    rawFd.close();
    await expect(p).rejects.toBeInstanceOf(ConnectionClosedError);
    conn.close();
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/peer hung up|ECONNRESET/);
    expect(() => conn.send(encode.getInfo(2))).toThrow(ConnectionClosedError);
  });
});

// A client in its own process (it must run while the server lingers): REGION_READ round trips,
// one at a time, until a reply says the server's event loop ran meanwhile; prints its count.
const roundTripper = `
const s = new (require('node:net').Socket)({ fd: 3, readable: true, writable: true });
let n = 0, have = Buffer.alloc(0);
const ask = () => {
  const m = Buffer.alloc(32);
  m.writeUInt16LE(n & 0xffff, 0); m.writeUInt16LE(9, 2); m.writeUInt32LE(32, 4);
  m.writeUInt32LE(4, 28);
  s.write(m);
};
s.on('data', d => {
  have = Buffer.concat([have, d]);
  while (have.length >= 36) {
    if (have.readUInt16LE(0) !== (n & 0xffff)) throw new Error('reply out of order');
    const looped = have[32] === 1;
    have = have.subarray(36);
    n++;
    if (looped || n === 1e6) { console.log(JSON.stringify({ n, looped })); process.exit(0); }
    ask();
  }
});
ask();
`;

describe('Connection lingering', () => {
  it('answers round trips while it lingers, and lets the event loop run', async () => {
    const [a, b] = socketPair();
    // Waits of 10 ms: the client is nearly always back in time (the budget ends most lingers).
    const conn = new Connection(a, { ...opts, lingerUs: 10_000 });
    let looped = false,
      answered = 0;
    // The event loop's turn, asked for at the first message: lingering must not starve it.
    const askLoop = () => setImmediate(() => (looped = true));
    conn.onCommandInPlace = (buf, off) => {
      if (answered++ === 0) askLoop();
      const reply = Buffer.alloc(36);
      buf.copy(reply, 0, off, off + 32);
      reply.writeUInt32LE(36, 4);
      reply.writeUInt32LE(1, 8); // REPLY
      reply[32] = looped ? 1 : 0;
      conn.send(reply);
      return 32;
    };
    const child = spawn(process.execPath, ['-e', roundTripper], {
      stdio: ['ignore', 'pipe', 'inherit', b.fd],
    });
    b.close();
    let out = '';
    child.stdout?.on('data', d => (out += d));
    await new Promise(r => child.on('exit', r));
    const result = JSON.parse(out) as { n: number; looped: boolean };
    expect(result.looped).toBe(true);
    expect(answered).toBe(result.n);
    conn.close();
  });
});

// The same in a client of @vfu/native, with requests of every kind: one in seven carries an fd,
// some are larger than the receive buffer (300 KiB of n & 0xff), some over the size limit. Byte
// 32 of a reply says what the server got: the number of fds; 2 for a large body intact; 3 for
// a request refused as too large.
const mixedRoundTripper = `
import { MessageSocket, eventfdCreate, yieldCpu } from '@vfu/native';
const s = new MessageSocket(3), e = eventfdCreate(), reply = Buffer.alloc(36);
const sendAll = (m, fds) => {
  for (let at = 0; at < m.length; ) {
    const k = s.send(m.subarray(at), at === 0 ? fds : []);
    if (k === 0) yieldCpu();
    at += k;
  }
};
let wrong = 0;
for (let n = 0; n < 3000; n++) {
  const kind = n % 7 === 3 ? 'fd' : n % 50 === 20 ? 'large' : n % 50 === 40 ? 'huge' : 'plain';
  const body = kind === 'large' ? 300 << 10 : kind === 'huge' ? 2 << 20 : 16;
  const m = Buffer.alloc(16 + body, n & 0xff);
  m.writeUInt16LE(n & 0xffff, 0); m.writeUInt16LE(9, 2); m.writeUInt32LE(16 + body, 4);
  m.writeUInt32LE(0, 8); m.writeUInt32LE(0, 12);
  sendAll(m, kind === 'fd' ? [e.fd] : []);
  for (let have = 0; have < 36; ) {
    const k = s.recvInto(reply, have, 36 - have);
    if (k === 0) throw new Error('server hung up');
    if (k < 0) yieldCpu();
    else have += k;
  }
  const want = { fd: 1, large: 2, huge: 3, plain: 0 }[kind];
  if (reply.readUInt16LE(0) !== (n & 0xffff) || reply[32] !== want) wrong++;
}
console.log(JSON.stringify({ wrong }));
`;

describe('Connection lingering with fds and large messages', () => {
  // Lingering reads peek; a peek that meets fds is undone and read for real, so each fd is
  // installed once, with its own message, and the peeked copies are closed. A message larger
  // than the receive buffer, or refused, goes on from where the peeked bytes end.
  it('frames every request and gives each fd to its own, while it peeks', async () => {
    const before = openFdCount();
    const [a, b] = socketPair();
    const conn = new Connection(a, { ...opts, lingerUs: 10_000 });
    const answer = (id: number, fds: number) => {
      const reply = Buffer.alloc(36);
      reply.writeUInt16LE(id, 0);
      reply.writeUInt16LE(9, 2);
      reply.writeUInt32LE(36, 4);
      reply.writeUInt32LE(1, 8); // REPLY
      reply[32] = fds;
      conn.send(reply);
    };
    conn.onCommandInPlace = (buf, off) => {
      answer(buf.readUInt16LE(off), 0);
      return 32;
    };
    conn.onMessage = m => {
      const large = m.payload.length > 1024 && m.payload.every(b => b === (m.header.id & 0xff));
      answer(m.header.id, m.error?.errno === Errno.EINVAL ? 3 : large ? 2 : m.fds.length);
      for (const fd of m.fds) fd.close();
    };
    const child = spawn(process.execPath, ['--input-type=module', '-e', mixedRoundTripper], {
      stdio: ['ignore', 'pipe', 'inherit', b.fd],
    });
    b.close();
    let out = '';
    child.stdout?.on('data', d => (out += d));
    await new Promise(r => child.on('exit', r));
    expect(JSON.parse(out)).toEqual({ wrong: 0 });
    conn.close();
    expect(openFdCount()).toBe(before);
  });
});

describe('RemoteError', () => {
  it('names the errno', () =>
    expect(new RemoteError(22, 'REGION_READ').message).toMatch(/EINVAL \(22\)/));
});
