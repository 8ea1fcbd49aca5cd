// The byte-level examples of docs/protocol.md, appendix A.
import { describe, it, expect } from 'vitest';
import {
  encodeVersion,
  capabilitiesJson,
  encode,
  decodeRequest,
  decodeHeader,
  decodeReply,
  encodeErrorReply,
  featureData,
  Command,
  Feature,
  FeatureFlag,
  MigState,
  Errno,
  HEADER_SIZE,
  Flag,
  checkHeader,
} from '@vfu/protocol';

const hex = (s: string) =>
  Uint8Array.from(
    s
      .replace(/\|/g, ' ')
      .trim()
      .split(/\s+/)
      .map(h => parseInt(h, 16)),
  );
const payloadOf = (m: Uint8Array) => m.subarray(HEADER_SIZE);

describe('appendix A', () => {
  it('A: VERSION request 0.0 with max_msg_fds and max_data_xfer_size', () => {
    const json = capabilitiesJson({ maxMsgFds: 16, maxDataXferSize: 1048576 });
    expect(json).toBe('{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}');
    const m = encodeVersion(1, false, 0, 0, json);
    expect(m.length).toBe(85);
    expect([...m.subarray(0, 24)]).toEqual([
      ...hex('01 00 01 00 55 00 00 00 00 00 00 00 00 00 00 00 | 00 00 00 00 7b 22 63 61'),
    ]);
    expect(m[84]).toBe(0);
  });

  it('B: DEVICE_FEATURE SET MIG_DEVICE_STATE -> STOP_COPY, and its reply', () => {
    const m = encode.feature(
      7,
      FeatureFlag.SET | Feature.MIG_DEVICE_STATE,
      featureData.migDeviceState(MigState.STOP_COPY),
    );
    const bytes = hex(
      '07 00 10 00 20 00 00 00 00 00 00 00 00 00 00 00 | ' +
        '10 00 00 00 02 00 02 00 03 00 00 00 ff ff ff ff',
    );
    expect([...m]).toEqual([...bytes]);
    const reply = encode.featureReply(
      7,
      FeatureFlag.SET | Feature.MIG_DEVICE_STATE,
      featureData.migDeviceState(3),
    );
    const expected = bytes.slice();
    expected[8] = 1;
    expect([...reply]).toEqual([...expected]);
  });

  it('C: GET MIGRATION and the reply with STOP_COPY|PRE_COPY', () => {
    const m = encode.feature(8, FeatureFlag.GET | Feature.MIGRATION, new Uint8Array(0), 16);
    expect([...m]).toEqual([
      ...hex('08 00 10 00 18 00 00 00 00 00 00 00 00 00 00 00 | 10 00 00 00 01 00 01 00'),
    ]);
    const r = encode.featureReply(8, FeatureFlag.GET | Feature.MIGRATION, featureData.u64(5));
    expect([...r]).toEqual([
      ...hex(
        '08 00 10 00 20 00 00 00 01 00 00 00 00 00 00 00 | ' +
          '10 00 00 00 01 00 01 00 05 00 00 00 00 00 00 00',
      ),
    ]);
  });

  it('D: MIG_DATA_READ of 4096; a padded (lvu-style) reply is read by its size field', () => {
    const m = encode.migDataRead(9, 4096);
    expect([...m]).toEqual([
      ...hex('09 00 11 00 18 00 00 00 00 00 00 00 00 00 00 00 | 08 10 00 00 00 10 00 00'),
    ]);
    const padded = new Uint8Array(4120);
    padded.set(hex('09 00 11 00 18 10 00 00 01 00 00 00 00 00 00 00 | 6c 00 00 00 64 00 00 00'));
    padded.fill(0xab, 24, 124);
    const h = decodeHeader(padded);
    expect(h).toEqual({ id: 9, cmd: 17, size: 4120, flags: 1, error: 0 });
    const data = decodeReply.migDataRead(payloadOf(padded)) as Uint8Array;
    expect(data.length).toBe(100);
    expect(data.every(b => b === 0xab)).toBe(true);
    // Ours sends only the real bytes.
    expect(encode.migDataReadReply(9, data).length).toBe(16 + 8 + 100);
  });

  it('E: v1 REGION_READ of pending_bytes and its reply', () => {
    const m = encode.regionRead(10, { region: 9, offset: 8, count: 8 });
    expect([...m]).toEqual([
      ...hex(
        '0a 00 09 00 20 00 00 00 00 00 00 00 00 00 00 00 | ' +
          '08 00 00 00 00 00 00 00 09 00 00 00 08 00 00 00',
      ),
    ]);
    const { msg, data } = encode.regionReadReply(10, { region: 9, offset: 8, count: 8 });
    new DataView(data.buffer, data.byteOffset).setBigUint64(0, 0x2000n, true);
    expect([...msg]).toEqual([
      ...hex(
        '0a 00 09 00 28 00 00 00 01 00 00 00 00 00 00 00 | ' +
          '08 00 00 00 00 00 00 00 09 00 00 00 08 00 00 00 ' +
          '00 20 00 00 00 00 00 00',
      ),
    ]);
  });

  it('F and G: v1 REGION_WRITE of device_state = pre-copy, and an EINVAL error reply to it', () => {
    const m = encode.regionWrite(11, {
      region: 9,
      offset: 0,
      count: 4,
      data: Uint8Array.of(3, 0, 0, 0),
    });
    expect([...m]).toEqual([
      ...hex(
        '0b 00 0a 00 24 00 00 00 00 00 00 00 00 00 00 00 | ' +
          '00 00 00 00 00 00 00 00 09 00 00 00 04 00 00 00 ' +
          '03 00 00 00',
      ),
    ]);
    const r = decodeRequest(Command.REGION_WRITE, payloadOf(m), 0);
    expect(r).toMatchObject({
      cmd: Command.REGION_WRITE,
      body: { region: 9, offset: 0, count: 4 },
    });
    expect([...encodeErrorReply(11, Command.REGION_WRITE, Errno.EINVAL)]).toEqual([
      ...hex('0b 00 0a 00 10 00 00 00 21 00 00 00 16 00 00 00'),
    ]);
  });

  it('H: GET DMA_LOGGING_REPORT over 64 pages', () => {
    const m = encode.feature(
      12,
      FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
      featureData.loggingReport(0x100000, 0x40000, 4096),
      40,
    );
    expect([...m]).toEqual([
      ...hex(
        '0c 00 10 00 30 00 00 00 00 00 00 00 00 00 00 00 | ' +
          '28 00 00 00 08 00 01 00 00 00 10 00 00 00 00 00 ' +
          '00 00 04 00 00 00 00 00 00 10 00 00 00 00 00 00',
      ),
    ]);
    const reply = encode.featureReply(
      12,
      FeatureFlag.GET | Feature.DMA_LOGGING_REPORT,
      featureData.loggingReport(0x100000, 0x40000, 4096, new Uint8Array(8)),
    );
    expect(reply.length).toBe(56);
    expect(checkHeader(decodeHeader(reply), 1 << 20)).toBeNull();
    expect(decodeHeader(reply).flags).toBe(Flag.REPLY);
  });
});
