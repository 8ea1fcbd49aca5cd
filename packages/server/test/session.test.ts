// The session over a real UNIX socket, in this process: VERSION negotiation, malformed headers
// and lengths (docs/protocol.md §1.5, §2.4, §11.1), fds where none belong, NO_REPLY, several
// messages in one write, and clients that go away mid-message. After each refusal the session
// keeps serving.
import { afterEach, describe, expect, it } from 'vitest';
import { eventfdCreate, openFdCount } from '@vfu/native';
import {
  Bytes,
  Command,
  Errno,
  Flag,
  HEADER_SIZE,
  decodeVersion,
  encode,
  encodeVersion,
} from '@vfu/protocol';
import { VfioUserClient } from '@vfu/client';
import { PROBE_ID, Reg, Wire, errnoOf, serve, type Served } from './serve.ts';

let served: Served[] = [];
let wires: Wire[] = [];
afterEach(() => {
  for (const w of wires) w.close();
  for (const s of served) s.stop();
  wires = [];
  served = [];
});
const start = (...a: Parameters<typeof serve>) => {
  const s = serve(...a);
  served.push(s);
  return s;
};
const wire = async (s: Served) => {
  const w = await Wire.open(s.socket);
  wires.push(w);
  return w;
};

/** A header of `size` bytes (the rest zero) with the given command and flags. */
function message(id: number, cmd: number, size: number, flags = 0): Uint8Array {
  const b = Bytes.alloc(size);
  b.setU16(0, id);
  b.setU16(2, cmd);
  b.setU32(4, size);
  b.setU32(8, flags);
  return b.u8;
}

/** Reads the probe's ID register and expects it: the session still serves. */
async function stillServes(w: Wire): Promise<void> {
  const id = w.id();
  w.send(encode.regionRead(id, { region: 0, offset: Reg.ID, count: 4 }));
  const r = await w.next();
  expect(r.header).toMatchObject({ id, cmd: Command.REGION_READ, flags: Flag.REPLY });
  expect(Buffer.from(r.payload).readUInt32LE(16)).toBe(PROBE_ID);
}

/** Sends `bytes` and expects an error reply with `errno` for message `id`. */
async function refused(w: Wire, bytes: Uint8Array, id: number, errno: number, fds: number[] = []) {
  w.send(bytes, fds);
  const r = await w.next();
  expect(r.header.id).toBe(id);
  expect(r.header.flags).toBe(Flag.REPLY | Flag.ERROR);
  expect(r.header.size).toBe(HEADER_SIZE);
  expect(errnoOf(r.header)).toBe(errno);
}

describe('VERSION negotiation', () => {
  it('answers a good VERSION with our capabilities and minor min(asked, 2)', async () => {
    const s = start();
    const w = await wire(s);
    const json = JSON.stringify({
      capabilities: { max_msg_fds: 16, write_multiple: true, migration: { pgsize: 4096 } },
    });
    w.send(encodeVersion(7, false, 0, 5, json));
    const r = await w.next();
    expect(r.header).toMatchObject({ id: 7, cmd: Command.VERSION, flags: Flag.REPLY });
    const v = decodeVersion(r.payload, 4096);
    if (v instanceof Error) throw v;
    expect(v.major).toBe(0);
    expect(v.minor).toBe(2);
    expect(v.caps).toMatchObject({
      maxMsgFds: 8,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      writeMultiple: true,
      migration: { pgsize: 4096 },
    });
    expect(s.server.connected).toBe(true);
    await stillServes(w);
  });

  it('leaves migration out of the reply when the server does not offer it', async () => {
    const s = start({ migration: false });
    const w = await wire(s);
    const r = await w.negotiate('{"capabilities":{"migration":{"pgsize":4096}}}');
    const v = decodeVersion(r.payload, 4096);
    if (v instanceof Error) throw v;
    expect(v.caps.migration).toBeUndefined();
  });

  it('refuses bad JSON with EINVAL and ends the session; the next client negotiates', async () => {
    const s = start();
    for (const json of ['{"capabilities":', '[1]', '{"capabilities":{"max_msg_fds":-1}}']) {
      const w = await wire(s);
      await refused(w, encodeVersion(3, false, 0, 0, json), 3, Errno.EINVAL);
      expect(await w.ended).toBeTypeOf('string');
      await s.server.idle();
    }
    const w = await wire(s);
    expect(errnoOf((await w.negotiate()).header)).toBe(0);
    await stillServes(w);
  });

  it('refuses a VERSION without its NUL, with major 1, or under 4 bytes', async () => {
    const s = start();
    const noNul = encodeVersion(4, false, 0, 0, '{}').subarray(0, -1);
    new Bytes(noNul).setU32(4, noNul.length);
    const major1 = encodeVersion(5, false, 1, 0, '{}');
    const short = message(6, Command.VERSION, HEADER_SIZE + 2);
    for (const [bytes, id] of [
      [noNul, 4],
      [major1, 5],
      [short, 6],
    ] as const) {
      const w = await wire(s);
      await refused(w, bytes, id, Errno.EINVAL);
      await w.ended;
      await s.server.idle();
    }
  });

  it('refuses an oversize VERSION unread; a good VERSION after it is served', async () => {
    const s = start();
    const w = await wire(s);
    const size = s.server.limits.maxMessageSize + 1;
    const big = message(8, Command.VERSION, size);
    big.set(encodeVersion(8, false, 0, 0, '{}').subarray(HEADER_SIZE), HEADER_SIZE);
    await refused(w, big, 8, Errno.EINVAL);
    expect(errnoOf((await w.negotiate()).header)).toBe(0);
    await stillServes(w);
  });

  it('refuses a first message other than VERSION, and a VERSION with fds', async () => {
    const s = start();
    const w = await wire(s);
    await refused(w, encode.getInfo(9), 9, Errno.EINVAL);
    const e = eventfdCreate();
    await refused(w, encodeVersion(10, false, 0, 0, '{}'), 10, Errno.EINVAL, [e.fd]);
    e.close();
    expect(errnoOf((await w.negotiate()).header)).toBe(0);
    await stillServes(w);
  });

  it('treats a second VERSION as a command it does not know (EINVAL) and goes on', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    await refused(w, encodeVersion(11, false, 0, 0, '{}'), 11, Errno.EINVAL);
    await stillServes(w);
  });
});

describe('malformed headers and lengths', () => {
  it('refuses unknown commands, stray replies, reserved flags, empty payloads', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const cases: [Uint8Array, number][] = [
      [message(20, 0, 24), 20],
      [message(21, 19, 24), 21],
      [message(22, 999, 24), 22],
      [message(23, Command.DMA_READ, 40), 23],
      [message(24, Command.DEVICE_GET_INFO, 32, 0x40), 24],
      [message(25, Command.DEVICE_GET_INFO, 32, 2), 25],
      [message(26, Command.DEVICE_GET_INFO, HEADER_SIZE), 26],
      [message(27, Command.REGION_READ, HEADER_SIZE + 8), 27],
      [encode.getInfo(28, 8), 28],
    ];
    for (const [bytes, id] of cases) await refused(w, bytes, id, Errno.EINVAL);
    // A reply nobody waits for: refused with its id, as a command would be.
    const stray = encode.deviceInfo(29, { flags: 0, numRegions: 1, numIrqs: 1 });
    w.send(stray);
    const r = await w.next();
    expect(r.header).toMatchObject({ id: 29, flags: Flag.REPLY | Flag.ERROR, error: Errno.EINVAL });
    await stillServes(w);
    // Each refusal is logged at warn with what was refused (what an operator reads).
    expect(s.log.lines.filter(l => l.startsWith('warn refused')).length).toBe(cases.length + 1);
  });

  it('refuses a message over the size limit without reading its body, then serves', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const big = message(30, Command.REGION_WRITE, s.server.limits.maxMessageSize + 4096);
    await refused(w, big, 30, Errno.EINVAL);
    await stillServes(w);
  });

  it('answers a msg_size under 16 with EINVAL and ends the connection (unframeable)', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const bad = message(31, Command.REGION_READ, HEADER_SIZE);
    new Bytes(bad).setU32(4, 8);
    await refused(w, bad, 31, Errno.EINVAL);
    expect(await w.ended).toBeTypeOf('string');
    await s.server.idle();
    expect(s.server.connected).toBe(false);
  });
});

describe('fds where none belong', () => {
  it('handles a REGION_READ that carries fds, and closes them', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const before = openFdCount();
    const e = [eventfdCreate(), eventfdCreate()];
    w.send(
      encode.regionRead(40, { region: 0, offset: Reg.ID, count: 4 }),
      e.map(x => x.fd),
    );
    for (const x of e) x.close();
    const r = await w.next();
    expect(r.header).toMatchObject({ id: 40, flags: Flag.REPLY });
    // The copies the server received live in this process too: none is left open.
    expect(openFdCount()).toBe(before);
  });

  it('refuses more fds than max_msg_fds with EINVAL and closes them', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const before = openFdCount();
    const e = Array.from({ length: s.server.limits.maxMsgFds + 1 }, () => eventfdCreate());
    const set = encode.setIrqs(41, { flags: 0x24, index: 0, start: 0, count: e.length });
    await refused(
      w,
      set,
      41,
      Errno.EINVAL,
      e.map(x => x.fd),
    );
    for (const x of e) x.close();
    expect(openFdCount()).toBe(before);
    await stillServes(w);
  });

  it('refuses SET_IRQS DATA_BOOL with an fd (EINVAL) and closes it', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const before = openFdCount();
    const e = eventfdCreate();
    const set = encode.setIrqs(42, {
      flags: 0x22,
      index: 0,
      start: 0,
      count: 1,
      bools: Uint8Array.of(1),
    });
    await refused(w, set, 42, Errno.EINVAL, [e.fd]);
    e.close();
    expect(openFdCount()).toBe(before);
  });
});

describe('NO_REPLY and several messages in one write', () => {
  it('sends nothing for a NO_REPLY write, done or refused; replies stay in order', async () => {
    const s = start();
    const w = await wire(s);
    await w.negotiate();
    const data = Uint8Array.of(0x78, 0x56, 0x34, 0x12);
    w.send(encode.regionWrite(50, { region: 0, offset: Reg.SCRATCH, count: 4, data }, true));
    w.send(encode.regionWrite(51, { region: 0, offset: 1 << 20, count: 4, data }, true));
    w.send(encode.regionWrite(52, { region: 0, offset: Reg.BUSY, count: 4, data }, true));
    w.send(encode.regionRead(53, { region: 0, offset: Reg.SCRATCH, count: 4 }));
    const r = await w.next();
    expect(r.header).toMatchObject({ id: 53, flags: Flag.REPLY });
    expect(Buffer.from(r.payload).readUInt32LE(16)).toBe(0x12345678);
    expect(w.unread).toBe(0);
    // The general path too: a NO_REPLY message with an fd is not taken in place.
    const e = eventfdCreate();
    w.send(encode.regionWrite(54, { region: 9, offset: 0, count: 4, data }, true), [e.fd]);
    e.close();
    await stillServes(w);
    expect(w.unread).toBe(0);
  });

  it('answers messages that arrive in one write, each in order, VERSION included', async () => {
    const s = start();
    const w = await wire(s);
    const data = Uint8Array.of(9, 0, 0, 0);
    const batch = Buffer.concat([
      encodeVersion(60, false, 0, 0, '{}'),
      encode.regionWrite(61, { region: 0, offset: Reg.SCRATCH, count: 4, data }),
      encode.regionRead(62, { region: 0, offset: Reg.SCRATCH, count: 4 }),
      message(63, 999, 24),
      encode.getInfo(64),
      encode.regionRead(65, { region: 0, offset: Reg.ID, count: 4 }),
    ]);
    w.send(batch);
    const got = [];
    for (let i = 0; i < 6; i++) got.push(await w.next());
    expect(got.map(m => [m.header.id, errnoOf(m.header)])).toEqual([
      [60, 0],
      [61, 0],
      [62, 0],
      [63, Errno.EINVAL],
      [64, 0],
      [65, 0],
    ]);
    expect(Buffer.from(got[2].payload).readUInt32LE(16)).toBe(9);
    expect(Buffer.from(got[5].payload).readUInt32LE(16)).toBe(PROBE_ID);
  });
});

describe('clients that go', () => {
  it('a client closing mid-message: the server releases it and serves the next', async () => {
    const s = start();
    const fdsBefore = openFdCount();
    const w = await wire(s);
    await w.negotiate();
    const e = eventfdCreate();
    const write = encode.regionWrite(70, {
      region: 0,
      offset: Reg.SCRATCH,
      count: 4,
      data: Uint8Array.of(1, 2, 3, 4),
    });
    w.send(write.subarray(0, HEADER_SIZE + 6), [e.fd]);
    e.close();
    w.close();
    await s.server.idle();
    expect(s.server.connected).toBe(false);
    expect(s.device.state.scratch).toBe(0);
    expect(openFdCount()).toBe(fdsBefore);
    const c = await VfioUserClient.connect(s.socket);
    expect(await c.read32(0, Reg.ID)).toBe(PROBE_ID);
    c.close();
    await s.server.idle();
    expect(s.server.sessionsServed).toBe(2);
  });

  it('refuses a second client with EBUSY while the first goes on', async () => {
    const s = start();
    const first = await VfioUserClient.connect(s.socket);
    const second = await wire(s);
    await refused(second, encodeVersion(1, false, 0, 0, '{}'), 1, Errno.EBUSY);
    await second.ended;
    expect(await first.read32(0, Reg.ID)).toBe(PROBE_ID);
    first.close();
    await s.server.idle();
  });

  it('resets the device when its client goes, or keeps it with onDisconnect keep', async () => {
    for (const [onDisconnect, after] of [
      ['reset', 0],
      ['keep', 5],
    ] as const) {
      const s = start({ onDisconnect });
      const c = await VfioUserClient.connect(s.socket);
      await c.write32(0, Reg.SCRATCH, 5);
      c.close();
      await s.server.idle();
      const next = await VfioUserClient.connect(s.socket);
      expect(await next.read32(0, Reg.SCRATCH), onDisconnect).toBe(after);
      next.close();
      await s.server.idle();
    }
  });
});
