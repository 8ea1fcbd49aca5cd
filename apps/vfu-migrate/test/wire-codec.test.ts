import { describe, it, expect } from 'vitest';
import {
  FrameDecoder,
  Msg,
  MAX_CONTROL,
  MAX_DATA,
  WireError,
  controlFrame,
  dataFrame,
  receiverNext,
  type ReceiverState,
} from '../src/wire/codec.ts';
import { proof, verify, nonce } from '../src/wire/auth.ts';

const hello = { wire: 1, role: 'source', nonce: 'ab'.repeat(32), software: 'test' };

/** A frame head by hand: type, reserved, length. */
function head(type: number, length: number, reserved = 0): Uint8Array {
  const h = new Uint8Array(8);
  const dv = new DataView(h.buffer);
  dv.setUint16(0, type, true);
  dv.setUint16(2, reserved, true);
  dv.setUint32(4, length, true);
  return h;
}

describe('wire frames', () => {
  it('the layout: type u16, reserved u16, length u32, JSON', () => {
    const f = controlFrame(Msg.START, {});
    expect([...f]).toEqual([4, 0, 0, 0, 2, 0, 0, 0, 0x7b, 0x7d]);
  });

  it('decodes frames cut at every byte boundary, in order', () => {
    const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    const bytes = Buffer.concat([
      controlFrame(Msg.HELLO, hello),
      ...dataFrame(data),
      controlFrame(Msg.PROGRESS, { phase: 'precopy', iteration: 1, bytes: 300, pending: 7 }),
      ...dataFrame(new Uint8Array(0)),
      controlFrame(Msg.SWITCHOVER, {}),
    ]);
    for (const step of [1, 3, 7, 64, bytes.length]) {
      const d = new FrameDecoder();
      d.maxData = MAX_DATA;
      const got = [];
      for (let off = 0; off < bytes.length; off += step)
        got.push(...d.push(bytes.subarray(off, off + step)));
      expect(got.map(m => m.type)).toEqual([
        Msg.HELLO,
        Msg.DATA,
        Msg.PROGRESS,
        Msg.DATA,
        Msg.SWITCHOVER,
      ]);
      expect(got[0]).toMatchObject({ body: hello });
      expect(got[1]).toMatchObject({ data: data });
      expect(got[2]).toMatchObject({ body: { phase: 'precopy', pending: 7 } });
      expect(d.idle).toBe(true);
    }
  });

  it('refuses lengths over the limits before buffering, and stays failed', () => {
    const early = new FrameDecoder(); // before the handshake: no stream data at all
    expect(() => early.push(head(Msg.DATA, 1))).toThrow('DATA of 1 bytes exceeds 0');
    const d = new FrameDecoder();
    d.maxData = MAX_DATA;
    expect(() => d.push(head(Msg.DATA, MAX_DATA + 1))).toThrow(
      new WireError(`DATA of ${MAX_DATA + 1} bytes exceeds ${MAX_DATA}`),
    );
    expect(d.state).toBe('failed');
    expect(() => d.push(controlFrame(Msg.START, {}))).toThrow(/already failed/);
    expect(() => new FrameDecoder().push(head(Msg.RESULT, MAX_CONTROL + 1))).toThrow(/exceeds/);
  });

  it('refuses unknown types, reserved bits, bad JSON and bad fields, naming them', () => {
    const bad = (bytes: Uint8Array) => () => new FrameDecoder().push(bytes);
    expect(bad(head(77, 0))).toThrow('unknown message type 77 (corrupted wire?)');
    expect(bad(head(Msg.START, 0, 1))).toThrow('reserved bits set in a START frame');
    const json = (type: number, text: string) =>
      Buffer.concat([head(type, Buffer.byteLength(text)), Buffer.from(text)]);
    expect(bad(json(Msg.START, '{"a'))).toThrow('START is not JSON (corrupted wire?)');
    expect(bad(json(Msg.START, '[1]'))).toThrow('START is not a JSON object');
    expect(bad(json(Msg.HELLO, JSON.stringify({ ...hello, wire: -1 })))).toThrow(
      'HELLO: field "wire" must be a whole number',
    );
    expect(bad(json(Msg.HELLO, JSON.stringify({ ...hello, role: 'x' })))).toThrow(
      'HELLO: field "role" must be one of source, destination',
    );
    expect(bad(json(Msg.DEVICE, '{"protocol":"v3","identity":{}}'))).toThrow(/"protocol"/);
    expect(bad(json(Msg.DEVICE, '{"protocol":"v1","identity":{"a":1}}'))).toThrow(/not strings/);
    expect(bad(json(Msg.RESULT, '{"step":"start","ok":"yes"}'))).toThrow(/"ok" must be true/);
    expect(bad(Buffer.concat([head(Msg.AUTH, 2), Buffer.from([0xff, 0xfe])]))).toThrow(/not JSON/);
  });

  it('a sender cannot build an oversized frame', () => {
    expect(() => dataFrame(new Uint8Array(MAX_DATA + 1))).toThrow(RangeError);
    expect(() => controlFrame(Msg.ABORT, { reason: 'x'.repeat(MAX_CONTROL) })).toThrow(/large/);
  });
});

describe("the destination half's states", () => {
  const walk = (types: number[]) =>
    types.reduce<ReceiverState>((s, t) => receiverNext(s, t), 'hello');

  it('a whole migration, in order', () => {
    const m = [Msg.HELLO, Msg.AUTH, Msg.DEVICE, Msg.START, Msg.PROGRESS, Msg.DATA, Msg.DATA];
    expect(walk([...m, Msg.SWITCHOVER, Msg.RESULT])).toBe('done');
  });

  it('ABORT ends any state; the final report may come once the device was readied', () => {
    for (const s of ['hello', 'auth', 'device', 'start', 'data', 'result'] as const)
      expect(receiverNext(s, Msg.ABORT)).toBe('done');
    expect(receiverNext('start', Msg.RESULT)).toBe('done');
  });

  it('anything out of order is refused, naming what was expected', () => {
    expect(() => walk([Msg.HELLO, Msg.DEVICE])).toThrow('DEVICE out of order (expected AUTH)');
    expect(() => walk([Msg.HELLO, Msg.AUTH, Msg.DATA])).toThrow(/DATA out of order/);
    expect(() => walk([Msg.HELLO, Msg.AUTH, Msg.DEVICE, Msg.SWITCHOVER])).toThrow(
      'SWITCHOVER out of order (expected START or PROGRESS or RESULT)',
    );
    expect(() => receiverNext('done', Msg.ABORT)).toThrow(/expected nothing more/);
  });
});

describe('the shared-secret proof', () => {
  it('proves the secret for one role and one pair of nonces only', () => {
    const secret = Buffer.from('sixteen or more characters');
    const [a, b] = [nonce(), nonce()];
    expect(a).not.toBe(b);
    const p = proof(secret, 'source', a, b);
    expect(verify(secret, 'source', a, b, p)).toBe(true);
    expect(verify(secret, 'destination', a, b, p)).toBe(false);
    expect(verify(secret, 'source', b, a, p)).toBe(false);
    expect(verify(Buffer.from('another secret, as long'), 'source', a, b, p)).toBe(false);
    expect(verify(secret, 'source', a, b, '')).toBe(false);
    expect(verify(secret, 'source', a, b, 'zz')).toBe(false);
  });
});
