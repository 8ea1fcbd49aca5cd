// Every length and fd count the codec can judge from the bytes: each bad message decodes to a
// VhostUserError with a named errno, never an exception or a wrong message.
import { E } from '@vfu/native';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeMessage,
  Request,
  VhostUserError,
  MAX_PAYLOAD_SIZE,
  type Header,
} from '@vfu/vhost-user';

const msg = (request: number, payload: Uint8Array, fds = 0) =>
  decodeMessage({ request, flags: 1, size: payload.length }, payload, fds);
const bytes = (n: number, fill = 0) => new Uint8Array(n).fill(fill);
const u64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
const expectErr = (r: unknown, errno: number = E.EINVAL, text?: RegExp) => {
  expect(r).toBeInstanceOf(VhostUserError);
  expect((r as VhostUserError).errno).toBe(errno);
  if (text) expect((r as VhostUserError).message).toMatch(text);
};

describe('bad front-end messages', () => {
  it('a payload on a payload-less request, or one missing', () => {
    expectErr(msg(Request.GET_FEATURES, bytes(8)), E.EINVAL, /payload of 8 bytes, expected 0/);
    expectErr(msg(Request.SET_FEATURES, bytes(4)), E.EINVAL, /expected 8/);
    expectErr(msg(Request.SET_VRING_NUM, bytes(12)));
    expectErr(msg(Request.SET_VRING_ADDR, bytes(32)));
    expectErr(msg(Request.SET_LOG_BASE, bytes(8), 1));
    expectErr(msg(Request.ADD_MEM_REG, bytes(32), 1));
  });
  it('fds where none belong, none where one must come', () => {
    expectErr(msg(Request.SET_OWNER, bytes(0), 1), E.EINVAL, /1 file descriptors, expected 0/);
    expectErr(msg(Request.SET_VRING_KICK, u64(0n), 0), E.EINVAL, /expected 1/);
    expectErr(msg(Request.SET_VRING_CALL, u64(0x100n), 1), E.EINVAL, /expected 0/);
    expectErr(msg(Request.SET_LOG_BASE, bytes(16), 0));
    expectErr(msg(Request.SET_LOG_FD, bytes(0), 0));
    expectErr(msg(Request.ADD_MEM_REG, bytes(40, 1), 2));
    expectErr(msg(Request.REM_MEM_REG, bytes(40, 1), 2));
  });
  it('reserved bits in a vring fd message', () => {
    expectErr(msg(Request.SET_VRING_KICK, u64(0x200n), 1), E.EINVAL, /reserved bits/);
  });
  it('a memory table: 0 or 9 regions, size not matching, fds not one per region', () => {
    const table = (n: number, regions = n) => {
      const b = new Uint8Array(8 + 32 * regions);
      const v = new DataView(b.buffer);
      v.setUint32(0, n, true);
      for (let i = 0; i < regions; i++) v.setBigUint64(8 + 32 * i + 8, 4096n, true);
      return b;
    };
    expectErr(msg(Request.SET_MEM_TABLE, table(0, 1), 0), E.EINVAL, /0 regions/);
    expectErr(msg(Request.SET_MEM_TABLE, table(9), 9), E.EINVAL, /9 regions/);
    expectErr(msg(Request.SET_MEM_TABLE, table(2, 3), 2), E.EINVAL, /for 2 regions/);
    expectErr(msg(Request.SET_MEM_TABLE, table(2), 1), E.EINVAL, /expected 2/);
    expectErr(msg(Request.SET_MEM_TABLE, bytes(4), 0));
    expect(msg(Request.SET_MEM_TABLE, table(2), 2)).toMatchObject({ regions: [{}, {}] });
    expect(msg(Request.SET_MEM_TABLE, table(2, 8), 2)).toMatchObject({ regions: [{}, {}] });
  });
  it('a region of size 0 or above 2^53', () => {
    const one = (size: bigint, gpa = 0n) => {
      const b = new Uint8Array(40);
      const v = new DataView(b.buffer);
      v.setBigUint64(8, gpa, true);
      v.setBigUint64(16, size, true);
      return b;
    };
    expectErr(msg(Request.ADD_MEM_REG, one(0n), 1), E.EINVAL, /size 0/);
    expectErr(msg(Request.ADD_MEM_REG, one(1n << 60n), 1), E.EINVAL, /above 2\^53/);
    expectErr(msg(Request.ADD_MEM_REG, one(4096n, (1n << 53n) - 1n), 1), E.EINVAL, /2\^53/);
  });
  it('config accesses outside 256 bytes or with a size the payload does not hold', () => {
    const cfg = (offset: number, size: number, extra: number) => {
      const b = new Uint8Array(12 + extra);
      const v = new DataView(b.buffer);
      v.setUint32(0, offset, true);
      v.setUint32(4, size, true);
      return b;
    };
    expectErr(msg(Request.GET_CONFIG, cfg(0, 257, 257)), E.EINVAL, /outside 256/);
    expectErr(msg(Request.GET_CONFIG, cfg(250, 8, 8)), E.EINVAL, /outside 256/);
    expectErr(msg(Request.GET_CONFIG, cfg(0xfffffff8, 16, 16)), E.EINVAL, /outside/);
    expectErr(msg(Request.SET_CONFIG, cfg(0, 8, 4)), E.EINVAL, /expected 20/);
    expectErr(msg(Request.SET_CONFIG, bytes(8)), E.EINVAL, /12-byte config header/);
  });
  it('SET_STATUS above 8 bits, an unknown request, a payload shorter than its header says', () => {
    expectErr(msg(Request.SET_STATUS, u64(0x100n)), E.EINVAL, /above 8 bits/);
    expectErr(msg(26, bytes(0)), E.ENOSYS, /not supported/);
    expectErr(msg(999, bytes(0)), E.ENOSYS, /request 999/);
    const h: Header = { request: Request.SET_FEATURES, flags: 1, size: 8 };
    expectErr(decodeMessage(h, bytes(4), 0), E.EINVAL, /header says 8/);
  });
  it('fuzz: any bytes decode to a message or a VhostUserError, never a throw', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 45 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.integer({ min: 0, max: 9 }),
        (request, payload, fds) => {
          const r = decodeMessage({ request, flags: 1, size: payload.length }, payload, fds);
          expect(r).toBeDefined();
          if (!(r instanceof VhostUserError)) expect(r.request).toBe(request);
        },
      ),
      { numRuns: Number(process.env.VFU_FUZZ_RUNS ?? 3000) },
    );
    expect(MAX_PAYLOAD_SIZE).toBeGreaterThan(268);
  });
});
