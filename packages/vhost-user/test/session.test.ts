// The back-end session over a real socketpair, with this package's Frontend playing QEMU and
// guest RAM in a real memfd: negotiation, config space, requests through the rings, the drain
// of GET_VRING_BASE, dirty logging, and bad messages answered while serving goes on.
import { afterEach, describe, expect, it } from 'vitest';
import {
  E,
  MappedMemory,
  eventfdCreate,
  eventfdRead,
  memfdCreate,
  openFdCount,
  peerHasReadAll,
} from '@vfu/native';
import {
  BACKEND_PROTOCOL_FEATURES,
  Flag,
  ProtocolFeature,
  Request,
  VRING_F_LOG,
  VhostFeature,
  decodeReply,
  encodeMessage,
  frame,
  type FrontendMessage,
} from '@vfu/vhost-user';
import {
  RAM,
  USER_BASE,
  bit,
  negotiate,
  rig,
  ringLayout,
  signalled,
  startRing,
  type Rig,
} from './helpers.js';

let r: Rig | null = null;
afterEach(async () => {
  if (!r) return;
  const be = r.be;
  r.close();
  r = null;
  await be.closed; // the back-end released the session's fds and mappings
});

const u64of = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0, true);

describe('negotiation and config space', () => {
  it('offers the device and transport features and the protocol features', async () => {
    r = rig();
    const f = u64of((await r.fe.request({ request: Request.GET_FEATURES })).payload);
    for (const b of [5, 28, 29, 32, VhostFeature.PROTOCOL_FEATURES, VhostFeature.LOG_ALL])
      expect(f & bit(b)).toBe(bit(b));
    const p = u64of((await r.fe.request({ request: Request.GET_PROTOCOL_FEATURES })).payload);
    expect(p).toBe(BACKEND_PROTOCOL_FEATURES);
    for (const b of [ProtocolFeature.LOG_SHMFD, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG])
      expect(p & bit(b)).toBe(bit(b));
    const q = await r.fe.request({ request: Request.GET_QUEUE_NUM });
    expect(u64of(q.payload)).toBe(2n);
    const want = await negotiate(r);
    expect(r.be.features).toBe(want);
  });

  it('GET_CONFIG answers the bytes asked for; SET_CONFIG of read-only bytes is EPERM', async () => {
    r = rig();
    await negotiate(r);
    const get = (offset: number, size: number) =>
      r!.fe.request({
        request: Request.GET_CONFIG,
        config: { offset, size, flags: 0, data: new Uint8Array(size) },
      });
    const a = await get(4, 8);
    expect([...(decodeReply.config(a.header, a.payload, 8) as Uint8Array)]).toEqual([
      5, 6, 7, 8, 9, 10, 11, 12,
    ]);
    // Past the device's 24 bytes, the structure reads as zeros.
    const b = await get(20, 8);
    expect([...(decodeReply.config(b.header, b.payload, 8) as Uint8Array)]).toEqual([
      21, 22, 23, 24, 0, 0, 0, 0,
    ]);
    const set = (data: number[]) =>
      r!.fe.ack({
        request: Request.SET_CONFIG,
        config: { offset: 0, size: data.length, flags: 0, data: Uint8Array.from(data) },
      });
    expect(await set([9])).toBe(BigInt(E.EPERM));
    expect(await set([1, 2])).toBe(0n); // unchanged bytes are accepted
    r.dev.writeConfig = (offset, data) => offset === 0 && data.length === 1;
    expect(await set([9])).toBe(0n);
  });
});

describe('requests through the rings', () => {
  it('serves direct and indirect chains, writes answers and used entries, calls', async () => {
    r = rig();
    await negotiate(r);
    const ring = await startRing(r, 0);
    r.ram.fill(0x11, 0x10000, 0x10000 + 64);
    r.ram.fill(0x22, 0x11000, 0x11000 + 16);
    const call = signalled(ring.call);
    ring.driver.setUsedEvent(1); // RING_EVENT_IDX: one interrupt, once both are used
    const h1 = ring.driver.add([
      { address: 0x10000, len: 64 },
      { address: 0x20000, len: 64, write: true },
    ]);
    const h2 = ring.driver.add(
      [
        { address: 0x11000, len: 16 },
        { address: 0x21000, len: 8, write: true },
        { address: 0x22000, len: 8, write: true },
      ],
      0x30000,
    );
    ring.kickNow();
    expect(await call).toBe(1n);
    expect(ring.driver.takeUsed()).toEqual([
      { id: h1, len: 64 },
      { id: h2, len: 16 },
    ]);
    expect(r.ram.subarray(0x20000, 0x20000 + 64).every(b => b === 0xee)).toBe(true);
    expect(r.ram.subarray(0x21000, 0x21008).every(b => b === 0xdd)).toBe(true);
    expect(r.ram.subarray(0x22000, 0x22008).every(b => b === 0xdd)).toBe(true);
    expect(r.dev.requests.map(q => q.queue)).toEqual([0, 0]);
  });

  it('GET_VRING_BASE waits for requests in flight, then answers last_avail_idx', async () => {
    r = rig();
    await negotiate(r);
    const ring = await startRing(r, 1);
    let open!: () => void;
    r.dev.gate = new Promise(resolve => {
      open = resolve;
    });
    const both = new Promise<void>(resolve => {
      r!.dev.onRequest = () => r!.dev.requests.length === 2 && resolve();
    });
    ring.submit([
      { address: 0x10000, len: 8 },
      { address: 0x20000, len: 8, write: true },
    ]);
    ring.submit([
      { address: 0x10000, len: 8 },
      { address: 0x20100, len: 8, write: true },
    ]);
    await both;
    expect(r.be.ring(1).inflight).toBe(2);
    let answered = false;
    const base = r.fe
      .request({ request: Request.GET_VRING_BASE, state: { index: 1, num: 0 } })
      .then(x => {
        answered = true;
        return x;
      });
    // The back-end took the message (it stopped the ring) and waits: no answer was received,
    // and none waits unread in the socket (an answer is sent as soon as it is made).
    while (r.be.ring(1).started) await new Promise(resolve => setImmediate(resolve));
    expect(r.be.ring(1).inflight).toBe(2);
    expect(answered).toBe(false);
    expect(peerHasReadAll(r.beSocket.fd)).toBe(true);
    open();
    const reply = await base;
    // By the time the answer came, both requests were in the used ring.
    expect(ring.driver.usedIdx).toBe(2);
    expect(decodeReply.state(reply.header, reply.payload, Request.GET_VRING_BASE)).toEqual({
      index: 1,
      num: 2,
    });
    expect(r.be.ring(1)).toMatchObject({ started: false, inflight: 0, base: 2 });

    // Restarted (as on a migration destination) at that base, it takes what came meanwhile.
    r.dev.gate = null;
    ring.driver.add([
      { address: 0x10000, len: 8 },
      { address: 0x20200, len: 8, write: true },
    ]);
    const kick = eventfdCreate();
    eventfdRead(ring.call.fd); // the interrupt of the first two
    ring.driver.setUsedEvent(2);
    const call = signalled(ring.call);
    r.fe.send({ request: Request.SET_VRING_BASE, state: { index: 1, num: 2 } });
    r.fe.send({ request: Request.SET_VRING_KICK, file: { index: 1, noFd: false } }, [kick.fd]);
    await call;
    expect(ring.driver.usedIdx).toBe(3);
    kick.close();
  });
});

describe('dirty logging (vhost-user.rst "Migration")', () => {
  const LOG_BYTES = RAM / 4096 / 8;

  async function logged(usedLog: number) {
    r = rig();
    await negotiate(r, bit(VhostFeature.LOG_ALL));
    const logFd = memfdCreate('log', 4096);
    const logMap = MappedMemory.map(logFd.fd, 0, 4096);
    const log = logMap.bytes(0, LOG_BYTES);
    const ack = await r.fe.request(
      { request: Request.SET_LOG_BASE, log: { size: LOG_BYTES, offset: 0 } },
      [logFd.fd],
    );
    expect(u64of(ack.payload)).toBe(0n);
    logFd.close();
    const ring = await startRing(r, 0, VRING_F_LOG, usedLog);
    const call = signalled(ring.call);
    ring.submit([
      { address: 0x10000, len: 132 },
      { address: 0x20000, len: 100, write: true },
      { address: 0x25ff0, len: 32, write: true },
    ]);
    await call;
    const pages = [...log].flatMap((byte, i) =>
      [0, 1, 2, 3, 4, 5, 6, 7].filter(b => byte & (1 << b)).map(b => i * 8 + b),
    );
    return { pages, log, logMap, ring };
  }

  it('marks every page the device wrote, and the used ring at log_guest_addr', async () => {
    const { pages, logMap } = await logged(ringLayout(0).device);
    expect(pages).toEqual([0x3, 0x20, 0x25, 0x26]);
    logMap.release();
  });

  it('logs used-ring writes at log_guest_addr even where it differs', async () => {
    const { pages, logMap } = await logged(0x80000);
    expect(pages).toEqual([0x20, 0x25, 0x26, 0x80]);
    logMap.release();
  });

  it('logs avail_event at its own offset from log_guest_addr', async () => {
    // A request taken and not answered yet: of the used ring only avail_event (bytes
    // 4 + 8 * size of it) was written, 8 bytes before a page end plus that: page 0x81.
    r = rig();
    await negotiate(r, bit(VhostFeature.LOG_ALL));
    const logFd = memfdCreate('log', 4096);
    const logMap = MappedMemory.map(logFd.fd, 0, 4096);
    const log = logMap.bytes(0, LOG_BYTES);
    await r.fe.request({ request: Request.SET_LOG_BASE, log: { size: LOG_BYTES, offset: 0 } }, [
      logFd.fd,
    ]);
    logFd.close();
    expect(r.be.features & bit(29)).toBe(bit(29)); // RING_EVENT_IDX: avail_event is written
    r.dev.gate = new Promise(() => {}); // never answered
    const taken = new Promise<void>(resolve => {
      r!.dev.onRequest = () => resolve();
    });
    const ring = await startRing(r, 0, VRING_F_LOG, 0x80ff8);
    ring.submit([
      { address: 0x10000, len: 8 },
      { address: 0x20000, len: 8, write: true },
    ]);
    await taken;
    const pages = [...log].flatMap((byte, i) =>
      [0, 1, 2, 3, 4, 5, 6, 7].filter(b => byte & (1 << b)).map(b => i * 8 + b),
    );
    expect(pages).toEqual([0x80 + Math.floor((0xff8 + 4 + 8 * ringLayout(0).size) / 4096)]);
    logMap.release();
  });

  it('stops marking once LOG_ALL is no longer acked', async () => {
    const { log, logMap, ring } = await logged(ringLayout(0).device);
    log.fill(0);
    const rr = r as Rig;
    const f = rr.be.features & ~bit(VhostFeature.LOG_ALL);
    expect(await rr.fe.ack({ request: Request.SET_FEATURES, features: f })).toBe(0n);
    const call = signalled(ring.call);
    ring.submit([
      { address: 0x10000, len: 8 },
      { address: 0x40000, len: 8, write: true },
    ]);
    await call;
    expect(log.every(b => b === 0)).toBe(true);
    logMap.release();
  });
});

describe('bad messages', () => {
  it('each gets the failure answer, and the back-end goes on serving', async () => {
    const before = openFdCount();
    r = rig();
    await negotiate(r);
    const ack = (m: FrontendMessage, fds: number[] = []) => (r as Rig).fe.ack(m, fds);
    const efd = eventfdCreate();
    const cases: [Promise<bigint>, number][] = [
      [ack({ request: Request.SET_VRING_NUM, state: { index: 7, num: 16 } }), E.EINVAL],
      [ack({ request: Request.SET_VRING_NUM, state: { index: 0, num: 24 } }), E.EINVAL],
      [ack({ request: Request.SET_VRING_NUM, state: { index: 0, num: 128 } }), E.EINVAL],
      [ack({ request: Request.SET_VRING_BASE, state: { index: 0, num: 0x10000 } }), E.EINVAL],
      [ack({ request: Request.SET_VRING_ENABLE, state: { index: 0, num: 2 } }), E.EINVAL],
      [ack({ request: Request.SET_FEATURES, features: bit(60) }), E.EINVAL],
      [ack({ request: Request.SET_PROTOCOL_FEATURES, features: bit(14) }), E.EINVAL],
      [
        ack({
          request: Request.SET_VRING_ADDR,
          addr: { index: 0, flags: 2, desc: 0, used: 0, avail: 0, log: 0 },
        }),
        E.EINVAL,
      ],
      [
        ack({ request: Request.SET_VRING_KICK, file: { index: 9, noFd: false } }, [efd.fd]),
        E.EINVAL,
      ],
      [ack({ request: Request.SET_VRING_KICK, file: { index: 0, noFd: true } }), E.ENOTSUP],
      [
        ack(
          {
            request: Request.ADD_MEM_REG,
            region: { guestAddress: 0x1000, size: 0x1000, userAddress: 1 << 30, mmapOffset: 0 },
          },
          [r.ramFd.fd],
        ),
        E.EEXIST,
      ],
      [
        ack({
          request: Request.REM_MEM_REG,
          region: { guestAddress: 0x9000000, size: 0x1000, userAddress: 0, mmapOffset: 0 },
        }),
        E.ENOENT,
      ],
    ];
    for (const [p, errno] of cases) expect(await p).toBe(BigInt(errno));

    // Raw: another version, an unknown request, a payload too large, fds where none belong.
    const raw = async (request: number, flags: number, size: number, fds: number[] = []) => {
      const m = await r!.fe.raw(frame(request, flags, size).msg, fds);
      return { request: m.header.request, v: u64of(m.payload) };
    };
    const NR = Flag.NEED_REPLY;
    expect(await raw(Request.SET_OWNER, 2 | NR, 0)).toEqual({ request: 3, v: 22n });
    expect(await raw(99, 1 | NR, 0)).toEqual({ request: 99, v: BigInt(E.ENOSYS) });
    expect(await raw(Request.SET_OWNER, 1 | NR, 100_000)).toEqual({
      request: 3,
      v: BigInt(E.EMSGSIZE),
    });
    expect(await raw(Request.SET_OWNER, 1 | NR, 0, [efd.fd])).toEqual({ request: 3, v: 22n });

    // Requests whose answer has a body fail with an empty one.
    const bad = await r.fe.request({
      request: Request.GET_VRING_BASE,
      state: { index: 40, num: 0 },
    });
    expect(bad.header).toEqual({ request: Request.GET_VRING_BASE, flags: 5, size: 0 });
    const cfg = await r.fe.raw(
      frame(Request.GET_CONFIG, 1, 12).msg.fill(0xff, 12 + 4, 12 + 8), // size 0xffffffff
    );
    expect(cfg.header.size).toBe(0);
    const inflight = await r.fe.request({
      request: Request.GET_INFLIGHT_FD,
      inflight: { mmapSize: 0, mmapOffset: 0, numQueues: 1, queueSize: 16 },
    });
    expect(inflight.header.size).toBe(0); // INFLIGHT_SHMFD is not offered
    expect(r.be.refused).toBe(cases.length + 7);

    // Still serving: a ring works.
    const ring = await startRing(r, 0);
    const call = signalled(ring.call);
    ring.submit([
      { address: 0x10000, len: 4 },
      { address: 0x20000, len: 4, write: true },
    ]);
    await call;
    expect(ring.driver.usedIdx).toBe(1);
    efd.close();
    const be = r.be;
    r.close();
    r = null;
    await be.closed;
    expect(openFdCount()).toBe(before);
  });

  it('a driver error stops its ring and signals the error fd; the other ring serves', async () => {
    r = rig();
    await negotiate(r);
    const broken = await startRing(r, 0);
    const good = await startRing(r, 1);
    const err = signalled(broken.err);
    broken.submit([{ address: RAM - 8, len: 64 }]); // past the end of guest memory
    expect(await err).toBe(1n);
    expect(r.logs.join('\n')).toMatch(/vring 0 stopped: .*not inside one memory region/);
    const call = signalled(good.call);
    good.submit([
      { address: 0x10000, len: 4 },
      { address: 0x20000, len: 4, write: true },
    ]);
    await call;
    expect(good.driver.usedIdx).toBe(1);
    expect(broken.driver.usedIdx).toBe(0);
    // Set up again by the front-end (a new kick), the ring serves again.
    expect(
      await r.fe.ack({ request: Request.GET_VRING_BASE, state: { index: 0, num: 0 } }),
    ).toBeDefined();
  });
});

describe('memory table', () => {
  it('translates ring user addresses through regions added one by one', async () => {
    r = rig();
    await negotiate(r);
    // Replace the table by two regions of the same memfd, added with ADD_MEM_REG.
    const halves = [
      { guestAddress: 0, size: RAM / 2, userAddress: USER_BASE, mmapOffset: 0 },
      {
        guestAddress: RAM / 2,
        size: RAM / 2,
        userAddress: USER_BASE + 0x10000000,
        mmapOffset: RAM / 2,
      },
    ];
    expect(
      await r.fe.ack({
        request: Request.REM_MEM_REG,
        region: { guestAddress: 0, size: RAM, userAddress: USER_BASE, mmapOffset: 0 },
      }),
    ).toBe(0n);
    for (const region of halves)
      expect(await r.fe.ack({ request: Request.ADD_MEM_REG, region }, [r.ramFd.fd])).toBe(0n);
    expect(r.be.memory.regions).toEqual(halves);
    expect(r.be.memory.guestAddressOf(USER_BASE + 0x10000010)).toBe(RAM / 2 + 0x10);
    expect(() => r!.be.memory.view(RAM / 2 - 4, 8)).toThrow(/not inside one memory region/);
    const ring = await startRing(r, 0);
    const call = signalled(ring.call);
    r.ram.fill(7, RAM / 2 + 0x100, RAM / 2 + 0x110);
    ring.submit([
      { address: RAM / 2 + 0x100, len: 16 },
      { address: RAM / 2 + 0x200, len: 16, write: true },
    ]);
    await call;
    expect(r.ram.subarray(RAM / 2 + 0x200, RAM / 2 + 0x210).every(b => b === 0xf8)).toBe(true);
    expect(encodeMessage({ request: Request.GET_MAX_MEM_SLOTS }).length).toBe(12);
    const slots = await r.fe.request({ request: Request.GET_MAX_MEM_SLOTS });
    expect(u64of(slots.payload)).toBe(32n);
  });
});
