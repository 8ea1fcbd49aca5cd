// Byte-exact cases of the vhost-user codec: each message as QEMU lays it out (little-endian,
// "Message Specification" in vhost-user.rst), decoded and encoded back.
import { E } from '@vfu/native';
import { describe, expect, it } from 'vitest';
import {
  decodeHeader,
  decodeMessage,
  encodeMessage,
  checkHeader,
  reply,
  decodeReply,
  hasReplyBody,
  Request,
  Flag,
  HEADER_SIZE,
  VhostUserError,
  type FrontendMessage,
} from '@vfu/vhost-user';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const le32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b.toString('hex');
};
const le64 = (v: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b.toString('hex');
};
const hdr = (req: number, flags: number, size: number) => le32(req) + le32(flags) + le32(size);

function decodeBytes(bytes: Uint8Array, fds = 0) {
  const h = decodeHeader(bytes);
  expect(checkHeader(h)).toBeNull();
  return decodeMessage(h, bytes.subarray(HEADER_SIZE), fds);
}

/** Decodes the bytes, checks the typed message, and encodes it back to the same bytes. */
function roundTrip(bytes: string, msg: FrontendMessage, fds = 0, needReply = false) {
  const b = hex(bytes);
  const got = decodeBytes(b, fds);
  expect(got).toEqual(msg);
  expect(Buffer.from(encodeMessage(msg, needReply)).toString('hex')).toBe(
    Buffer.from(b).toString('hex'),
  );
}

describe('header', () => {
  it('reads request, flags and size little-endian', () => {
    const h = decodeHeader(hex('0b000000 09000000 08000000'));
    expect(h).toEqual({ request: Request.GET_VRING_BASE, flags: 9, size: 8 });
    expect(checkHeader(h)).toBeNull();
  });
  it('refuses another version, reserved flags and oversized payloads', () => {
    const bad = [
      { request: 1, flags: 0, size: 0 },
      { request: 1, flags: 2, size: 0 },
      { request: 1, flags: 0x11, size: 0 },
      { request: 5, flags: 1, size: 4097 },
    ];
    for (const h of bad) expect(checkHeader(h)).toBeInstanceOf(VhostUserError);
    expect(checkHeader({ request: 5, flags: 1, size: 4097 }, 8192)).toBeNull();
  });
});

describe('front-end messages, byte for byte', () => {
  it('payload-less requests', () => {
    roundTrip(hdr(1, 1, 0), { request: Request.GET_FEATURES });
    roundTrip(hdr(3, 1, 0), { request: Request.SET_OWNER });
    roundTrip(hdr(4, 1, 0), { request: Request.RESET_OWNER });
    roundTrip(hdr(15, 1, 0), { request: Request.GET_PROTOCOL_FEATURES });
    roundTrip(hdr(17, 1, 0), { request: Request.GET_QUEUE_NUM });
    roundTrip(hdr(34, 1, 0), { request: Request.RESET_DEVICE });
    roundTrip(hdr(36, 1, 0), { request: Request.GET_MAX_MEM_SLOTS });
    roundTrip(hdr(40, 1, 0), { request: Request.GET_STATUS });
    roundTrip(hdr(7, 1, 0), { request: Request.SET_LOG_FD }, 1);
  });
  it('SET_FEATURES with VERSION_1, LOG_ALL and PROTOCOL_FEATURES, with NEED_REPLY', () => {
    const f = (1n << 32n) | (1n << 30n) | (1n << 26n) | (1n << 29n);
    roundTrip(`${hdr(2, 9, 8)}${le64(f)}`, { request: Request.SET_FEATURES, features: f }, 0, true);
  });
  it('SET_PROTOCOL_FEATURES and SET_STATUS', () => {
    roundTrip(`${hdr(16, 1, 8)}0b02010000000000`, {
      request: Request.SET_PROTOCOL_FEATURES,
      features: 0x1020bn,
    });
    roundTrip(`${hdr(39, 1, 8)}${le64(15)}`, { request: Request.SET_STATUS, status: 15 });
  });
  it('vring state messages', () => {
    roundTrip(`${hdr(8, 1, 8)}01000000 00010000`, {
      request: Request.SET_VRING_NUM,
      state: { index: 1, num: 256 },
    });
    roundTrip(`${hdr(10, 1, 8)}00000000 34120000`, {
      request: Request.SET_VRING_BASE,
      state: { index: 0, num: 0x1234 },
    });
    roundTrip(`${hdr(11, 1, 8)}02000000 00000000`, {
      request: Request.GET_VRING_BASE,
      state: { index: 2, num: 0 },
    });
    roundTrip(`${hdr(18, 1, 8)}00000000 01000000`, {
      request: Request.SET_VRING_ENABLE,
      state: { index: 0, num: 1 },
    });
  });
  it('SET_VRING_ADDR: index, flags, desc, used, avail, log', () => {
    const bytes =
      `${hdr(9, 1, 40)}03000000 01000000` +
      le64(0x7f0012340000) +
      le64(0x7f0012342000) +
      le64(0x7f0012341000) +
      le64(0x12342000);
    roundTrip(bytes, {
      request: Request.SET_VRING_ADDR,
      addr: {
        index: 3,
        flags: 1,
        desc: 0x7f0012340000,
        used: 0x7f0012342000,
        avail: 0x7f0012341000,
        log: 0x12342000,
      },
    });
  });
  it('SET_VRING_KICK/CALL/ERR: index in bits 0-7, bit 8 for no fd', () => {
    roundTrip(
      `${hdr(12, 1, 8)}${le64(1)}`,
      {
        request: Request.SET_VRING_KICK,
        file: { index: 1, noFd: false },
      },
      1,
    );
    roundTrip(`${hdr(13, 1, 8)}${le64(0x102)}`, {
      request: Request.SET_VRING_CALL,
      file: { index: 2, noFd: true },
    });
    roundTrip(
      `${hdr(14, 1, 8)}${le64(0)}`,
      {
        request: Request.SET_VRING_ERR,
        file: { index: 0, noFd: false },
      },
      1,
    );
  });
  it('SET_MEM_TABLE with two regions and two fds (QEMU sends exactly n regions)', () => {
    const r0 = le64(0) + le64(0xa0000) + le64(0x7f5500000000) + le64(0);
    const r1 = le64(0x100000) + le64(0x7f00000) + le64(0x7f5500100000) + le64(0x100000);
    roundTrip(
      `${hdr(5, 9, 72)}02000000 00000000${r0}${r1}`,
      {
        request: Request.SET_MEM_TABLE,
        regions: [
          { guestAddress: 0, size: 0xa0000, userAddress: 0x7f5500000000, mmapOffset: 0 },
          {
            guestAddress: 0x100000,
            size: 0x7f00000,
            userAddress: 0x7f5500100000,
            mmapOffset: 0x100000,
          },
        ],
      },
      2,
      true,
    );
  });
  it('ADD_MEM_REG and REM_MEM_REG: 8 bytes of padding, then one region', () => {
    const region = le64(0x100000000) + le64(0x40000000) + le64(0x7f6600000000) + le64(0x1000);
    const m = {
      guestAddress: 0x100000000,
      size: 0x40000000,
      userAddress: 0x7f6600000000,
      mmapOffset: 0x1000,
    };
    roundTrip(
      `${hdr(37, 9, 40)}${le64(0)}${region}`,
      {
        request: Request.ADD_MEM_REG,
        region: m,
      },
      1,
      true,
    );
    roundTrip(
      `${hdr(38, 9, 40)}${le64(0)}${region}`,
      {
        request: Request.REM_MEM_REG,
        region: m,
      },
      0,
      true,
    );
  });
  it('SET_LOG_BASE: size and offset of the log, one fd', () => {
    roundTrip(
      `${hdr(6, 1, 16)}${le64(0x1000)}${le64(0)}`,
      {
        request: Request.SET_LOG_BASE,
        log: { size: 0x1000, offset: 0 },
      },
      1,
    );
  });
  it('GET_CONFIG and SET_CONFIG: offset, size, flags, then size bytes', () => {
    const get = hex(`${hdr(24, 1, 12 + 8)}00000000 08000000 00000000 ${'00'.repeat(8)}`);
    const got = decodeBytes(get) as { config: { data: Uint8Array } };
    expect(got).toMatchObject({
      request: Request.GET_CONFIG,
      config: { offset: 0, size: 8, flags: 0 },
    });
    expect(Buffer.from(encodeMessage(got as FrontendMessage))).toEqual(Buffer.from(get));
    const set = hex(`${hdr(25, 1, 12 + 1)}20000000 01000000 00000000 01`);
    const s = decodeBytes(set) as FrontendMessage & { config: { data: Uint8Array } };
    expect(s.config).toMatchObject({ offset: 32, size: 1, flags: 0 });
    expect([...s.config.data]).toEqual([1]);
    expect(Buffer.from(encodeMessage(s))).toEqual(Buffer.from(set));
  });
  it('GET/SET_INFLIGHT_FD: the 24-byte inflight description', () => {
    const body = `${le64(0x2000)}${le64(0)}0100 8000 00000000`;
    roundTrip(`${hdr(31, 1, 24)}${body}`, {
      request: Request.GET_INFLIGHT_FD,
      inflight: { mmapSize: 0x2000, mmapOffset: 0, numQueues: 1, queueSize: 128 },
    });
    roundTrip(
      `${hdr(32, 1, 24)}${body}`,
      {
        request: Request.SET_INFLIGHT_FD,
        inflight: { mmapSize: 0x2000, mmapOffset: 0, numQueues: 1, queueSize: 128 },
      },
      1,
    );
  });
});

describe('replies, byte for byte', () => {
  it('u64, ack, state, config, empty', () => {
    const hexOf = (b: Uint8Array) => Buffer.from(b).toString('hex');
    expect(hexOf(reply.u64(1, 0x140000000n))).toBe(hdr(1, 5, 8) + le64(0x140000000n));
    expect(hexOf(reply.ack(5, 0))).toBe(hdr(5, 5, 8) + le64(0));
    expect(hexOf(reply.ack(9, E.EINVAL))).toBe(hdr(9, 5, 8) + le64(22));
    expect(hexOf(reply.state(11, { index: 1, num: 77 }))).toBe(hdr(11, 5, 8) + le32(1) + le32(77));
    const cfg = reply.config({ offset: 0, size: 4, flags: 0 }, Uint8Array.of(1, 2, 3, 4));
    expect(hexOf(cfg)).toBe(`${hdr(24, 5, 16)}${le32(0)}${le32(4)}${le32(0)}01020304`);
    expect(hexOf(reply.empty(24))).toBe(hdr(24, 5, 0));
  });
  it('are read back by the front-end side, and mismatches are errors', () => {
    const u = reply.u64(Request.GET_FEATURES, 7n);
    const h = decodeHeader(u);
    expect(decodeReply.u64(h, u.subarray(12), Request.GET_FEATURES)).toBe(7n);
    expect(decodeReply.u64(h, u.subarray(12), Request.GET_STATUS)).toBeInstanceOf(VhostUserError);
    const s = reply.state(Request.GET_VRING_BASE, { index: 0, num: 9 });
    expect(decodeReply.state(decodeHeader(s), s.subarray(12), Request.GET_VRING_BASE)).toEqual({
      index: 0,
      num: 9,
    });
    const e = reply.empty(Request.GET_CONFIG);
    expect(decodeReply.config(decodeHeader(e), e.subarray(12), 4)).toBeInstanceOf(VhostUserError);
    const req = encodeMessage({ request: Request.GET_FEATURES });
    expect(decodeReply.u64(decodeHeader(req), req.subarray(12), 1)).toBeInstanceOf(VhostUserError);
  });
  it('names the requests answered without NEED_REPLY', () => {
    expect(hasReplyBody(Request.GET_FEATURES)).toBe(true);
    expect(hasReplyBody(Request.SET_LOG_BASE)).toBe(true);
    expect(hasReplyBody(Request.SET_MEM_TABLE)).toBe(false);
    expect(Flag.NEED_REPLY).toBe(8);
  });
});
