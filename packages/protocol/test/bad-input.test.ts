// One case per bad-input row of protocol.md §11 that the codec can judge from the bytes alone.
// Rows that need the device (region sizes, mappings, migration state) are tested against the
// server in packages/server.
import { describe, it, expect } from 'vitest';
import {
  decodeRequest,
  decodeVersion,
  checkHeader,
  Command,
  Errno,
  ProtocolError,
  Bytes,
  MIB,
  IrqSetFlag as F,
} from '@vfu/protocol';

const u32s = (...v: number[]) => {
  const b = Bytes.alloc(4 * v.length);
  v.forEach((x, i) => b.setU32(4 * i, x));
  return b.u8;
};
const cat = (...parts: Uint8Array[]) => {
  const o = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let n = 0;
  for (const p of parts) {
    o.set(p, n);
    n += p.length;
  }
  return o;
};
const pad = (b: Uint8Array, n: number) => cat(b, new Uint8Array(Math.max(0, n - b.length)));
const version = (json: string | null, major = 0, terminate = true) => {
  const t = json === null ? new Uint8Array(0) : new TextEncoder().encode(json);
  const out = new Uint8Array(4 + t.length + (json !== null && terminate ? 1 : 0));
  new DataView(out.buffer).setUint16(0, major, true);
  out.set(t, 4);
  return out;
};
const expectErr = (r: unknown, errno: number = Errno.EINVAL) => {
  expect(r).toBeInstanceOf(ProtocolError);
  expect((r as ProtocolError).errno).toBe(errno);
};
const req = (cmd: number, payload: Uint8Array, fds = 0) =>
  decodeRequest(cmd, payload, fds, { maxRegionXfer: MIB, maxMigXfer: 4 });

describe('§11.1 framing and negotiation', () => {
  const h = (size: number, cmd = 4, flags = 0) => ({ id: 1, cmd, size, flags, error: 0 });
  it('msg_size < 16', () => expectErr(checkHeader(h(15), MIB + 32)));
  it('msg_size > max message size (body not read)', () =>
    expectErr(checkHeader(h(MIB + 33), MIB + 32)));
  it('a type that is neither command nor reply', () => expectErr(checkHeader(h(32, 4, 2), MIB)));
  it('payload missing for any command but RESET', () => {
    expectErr(checkHeader(h(16, Command.REGION_READ), MIB));
    expect(checkHeader(h(16, Command.DEVICE_RESET), MIB)).toBeNull();
  });
  it('unknown command numbers (0, 19, 999) and server->client commands from a client', () => {
    for (const c of [0, 19, 999, Command.DMA_READ, Command.DMA_WRITE])
      expectErr(req(c, new Uint8Array(64)));
  });
  it('VERSION payload < 4', () => expectErr(decodeVersion(new Uint8Array(3))));
  it('VERSION major != 0', () => expectErr(decodeVersion(version('{}', 1))));
  it('VERSION JSON not NUL-terminated, unparsable, "{", "\\""', () => {
    expectErr(decodeVersion(version('{}', 0, false)));
    for (const j of ['{', '"', 'nope', '[]']) expectErr(decodeVersion(version(j)));
  });
  it('capabilities not an object', () => expectErr(decodeVersion(version('{"capabilities":5}'))));
  it('max_msg_fds non-integer, -1, 1025', () => {
    for (const v of ['"8"', '1.5', '-1', '1025'])
      expectErr(decodeVersion(version(`{"capabilities":{"max_msg_fds":${v}}}`)));
  });
  it('max_data_xfer_size not an integer', () =>
    expectErr(decodeVersion(version('{"capabilities":{"max_data_xfer_size":"x"}}'))));
  it('migration not an object; pgsize non-integer or != 4096', () => {
    for (const m of ['1', '{"pgsize":"4096"}', '{"pgsize":4095}'])
      expectErr(decodeVersion(version(`{"capabilities":{"migration":${m}}}`)));
  });
  it('twin_socket not an object, supported not a boolean', () => {
    expectErr(decodeVersion(version('{"capabilities":{"twin_socket":true}}')));
    expectErr(decodeVersion(version('{"capabilities":{"twin_socket":{"supported":1}}}')));
  });
  it('a missing capabilities key, or no JSON at all, is accepted with defaults', () => {
    expect(decodeVersion(version('{}'))).toMatchObject({
      caps: { maxMsgFds: 1, maxDataXferSize: MIB },
    });
    expect(decodeVersion(version(null))).toMatchObject({ major: 0, minor: 0 });
  });
});

describe('§11.2 device, region and IRQ queries', () => {
  it('GET_INFO payload 8 / argsz 8', () => {
    expectErr(req(Command.DEVICE_GET_INFO, u32s(16, 0)));
    expectErr(req(Command.DEVICE_GET_INFO, u32s(8, 0, 0, 0)));
  });
  it('GET_REGION_INFO payload 8 / argsz 8', () => {
    expectErr(req(Command.DEVICE_GET_REGION_INFO, u32s(32, 0)));
    expectErr(req(Command.DEVICE_GET_REGION_INFO, pad(u32s(8), 32)));
  });
  it('GET_IRQ_INFO payload 8 / argsz 8 / index 5', () => {
    expectErr(req(Command.DEVICE_GET_IRQ_INFO, u32s(16, 0)));
    expectErr(req(Command.DEVICE_GET_IRQ_INFO, u32s(8, 0, 0, 0)));
    expectErr(req(Command.DEVICE_GET_IRQ_INFO, u32s(16, 0, 5, 0)));
  });
  it('GET_REGION_IO_FDS flags != 0, count != 0, argsz < 16, argsz > 1 MiB', () => {
    for (const p of [
      u32s(16, 1, 0, 0),
      u32s(16, 0, 0, 1),
      u32s(15, 0, 0, 0),
      u32s(MIB + 1, 0, 0, 0),
    ])
      expectErr(req(Command.DEVICE_GET_REGION_IO_FDS, p));
  });
  const irqs = (
    flags: number,
    index: number,
    start: number,
    count: number,
    extra = new Uint8Array(0),
  ) => cat(u32s(20 + extra.length, flags, index, start, count), extra);
  it('SET_IRQS payload < 20, argsz < 20', () => {
    expectErr(req(Command.DEVICE_SET_IRQS, u32s(20, 0, 0, 0)));
    expectErr(req(Command.DEVICE_SET_IRQS, u32s(19, F.DATA_NONE | F.ACTION_TRIGGER, 0, 0, 1)));
  });
  it('SET_IRQS index >= 5', () =>
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_TRIGGER, 5, 0, 1))));
  it('SET_IRQS more than one action or data type, or unknown flag bits', () => {
    for (const f of [
      F.DATA_NONE | F.ACTION_MASK | F.ACTION_UNMASK,
      F.DATA_NONE | F.DATA_BOOL | F.ACTION_TRIGGER,
      F.ACTION_TRIGGER,
      F.DATA_NONE,
      F.DATA_NONE | F.ACTION_TRIGGER | 0x40,
    ])
      expectErr(req(Command.DEVICE_SET_IRQS, irqs(f, 1, 0, 1)));
  });
  it('SET_IRQS start + count overflow', () =>
    expectErr(
      req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_TRIGGER, 2, 0xffffffff, 1)),
    ));
  it('SET_IRQS ERR/REQ with MASK/UNMASK or count > 1', () => {
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_MASK, 3, 0, 1)));
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_UNMASK, 4, 0, 1)));
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_TRIGGER, 3, 0, 2)));
  });
  it('SET_IRQS count 0 with start != 0, or count 0 without TRIGGER|NONE', () => {
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_TRIGGER, 1, 1, 0)));
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_EVENTFD | F.ACTION_TRIGGER, 1, 0, 0)));
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_MASK, 1, 0, 0)));
  });
  it('SET_IRQS fds with DATA_BOOL/DATA_NONE, or nr_fds != count', () => {
    expectErr(
      req(
        Command.DEVICE_SET_IRQS,
        irqs(F.DATA_BOOL | F.ACTION_TRIGGER, 1, 0, 1, Uint8Array.of(1)),
        1,
      ),
    );
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_NONE | F.ACTION_TRIGGER, 1, 0, 1), 1));
    expectErr(req(Command.DEVICE_SET_IRQS, irqs(F.DATA_EVENTFD | F.ACTION_TRIGGER, 1, 0, 2), 1));
  });
  it('SET_IRQS DATA_BOOL with too few / too many bool bytes', () => {
    expectErr(
      req(Command.DEVICE_SET_IRQS, irqs(F.DATA_BOOL | F.ACTION_TRIGGER, 1, 0, 2, Uint8Array.of(1))),
    );
    expectErr(
      req(
        Command.DEVICE_SET_IRQS,
        irqs(F.DATA_BOOL | F.ACTION_TRIGGER, 1, 0, 1, Uint8Array.of(1, 1)),
      ),
    );
  });
});

describe('§11.3 region access', () => {
  const access = (offset: number, region: number, count: number, data = new Uint8Array(0)) => {
    const b = Bytes.alloc(16 + data.length);
    b.setU64(0, offset);
    b.setU32(8, region);
    b.setU32(12, count);
    b.u8.set(data, 16);
    return b.u8;
  };
  it('payload < 16', () => expectErr(req(Command.REGION_READ, new Uint8Array(15))));
  it('count > max_data_xfer_size', () =>
    expectErr(req(Command.REGION_READ, access(0, 0, MIB + 1))));
  it('WRITE payload - 16 != count', () => {
    expectErr(req(Command.REGION_WRITE, access(0, 0, 4, Uint8Array.of(1, 2))));
    expectErr(req(Command.REGION_WRITE, access(0, 0, 1, Uint8Array.of(1, 2))));
  });
  it('WRITE_MULTI: short, lying count, entry count > 8', () => {
    expectErr(req(Command.REGION_WRITE_MULTI, new Uint8Array(7)));
    const lie = Bytes.alloc(8 + 24);
    lie.setU64(0, 2);
    expectErr(req(Command.REGION_WRITE_MULTI, lie.u8));
    const huge = Bytes.alloc(8 + 24);
    huge.setU64(0, 2 ** 50);
    expectErr(req(Command.REGION_WRITE_MULTI, huge.u8));
    const big = Bytes.alloc(8 + 24);
    big.setU64(0, 1);
    big.setU32(8 + 12, 9);
    expectErr(req(Command.REGION_WRITE_MULTI, big.u8));
  });
});

describe('§11.4 DMA', () => {
  it('DMA_MAP payload < 32 / argsz < 32', () => {
    expectErr(req(Command.DMA_MAP, new Uint8Array(31)));
    expectErr(req(Command.DMA_MAP, pad(u32s(31, 3), 32)));
  });
  const unmap = (argsz: number, flags: number, addr = 0, size = 0, bm?: [number, number]) => {
    const b = Bytes.alloc(bm ? 40 : 24);
    b.setU32(0, argsz);
    b.setU32(4, flags);
    b.setU64(8, addr);
    b.setU64(16, size);
    if (bm) {
      b.setU64(24, bm[0]);
      b.setU64(32, bm[1]);
    }
    return b.u8;
  };
  it('DMA_UNMAP payload 8 bytes', () => expectErr(req(Command.DMA_UNMAP, u32s(24, 0))));
  it('DMA_UNMAP argsz 8, or > 1 MiB', () => {
    expectErr(req(Command.DMA_UNMAP, unmap(8, 0, 0x1000, 0x1000)));
    expectErr(req(Command.DMA_UNMAP, unmap(MIB + 1, 0, 0x1000, 0x1000)));
  });
  it('DMA_UNMAP flags 4, or ALL|GET_DIRTY_BITMAP', () => {
    expectErr(req(Command.DMA_UNMAP, unmap(24, 4)));
    expectErr(req(Command.DMA_UNMAP, unmap(24, 3)));
  });
  it('DMA_UNMAP ALL with non-zero address or size', () => {
    expectErr(req(Command.DMA_UNMAP, unmap(24, 2, 0x1000, 0)));
    expectErr(req(Command.DMA_UNMAP, unmap(24, 2, 0, 0x1000)));
  });
  it('DMA_UNMAP GET_DIRTY_BITMAP: short payload, huge bitmap.size (argsz overflow)', () => {
    expectErr(req(Command.DMA_UNMAP, unmap(40, 1, 0, 0x1000)));
    expectErr(req(Command.DMA_UNMAP, unmap(48, 1, 0, 0x40000, [4096, 2 ** 60])));
  });
  it('DIRTY_PAGES payload/argsz < 8, more than one op, GET payload < 40, GET argsz > 1 MiB', () => {
    expectErr(req(Command.DIRTY_PAGES, u32s(8)));
    expectErr(req(Command.DIRTY_PAGES, u32s(7, 1)));
    expectErr(req(Command.DIRTY_PAGES, u32s(8, 3)));
    expectErr(req(Command.DIRTY_PAGES, u32s(8, 8)));
    expectErr(req(Command.DIRTY_PAGES, pad(u32s(48, 4), 39)));
    expectErr(req(Command.DIRTY_PAGES, pad(u32s(MIB + 1, 4), 40)));
  });
});

describe('§11.5 DEVICE_FEATURE and MIG_DATA', () => {
  it('FEATURE payload 7 bytes', () => expectErr(req(Command.DEVICE_FEATURE, new Uint8Array(7))));
  it('FEATURE argsz < 8', () => expectErr(req(Command.DEVICE_FEATURE, u32s(2, (1 << 18) | 1))));
  it('FEATURE unknown flag bits, GET+SET without PROBE, no op bit', () => {
    for (const f of [(1 << 19) | (1 << 16) | 1, (1 << 16) | (1 << 17) | 2, 1])
      expectErr(req(Command.DEVICE_FEATURE, u32s(16, f, 0, 0)));
    expect(
      req(Command.DEVICE_FEATURE, u32s(8, (1 << 18) | (1 << 16) | (1 << 17) | 1)),
    ).not.toBeInstanceOf(ProtocolError);
  });
  it('MIG_DATA_READ payload 7 bytes, size > client max, argsz < 8 + size', () => {
    expectErr(req(Command.MIG_DATA_READ, new Uint8Array(7)));
    expectErr(req(Command.MIG_DATA_READ, u32s(13, 5)));
    expectErr(req(Command.MIG_DATA_READ, u32s(11, 4)));
    expect(req(Command.MIG_DATA_READ, u32s(12, 4))).not.toBeInstanceOf(ProtocolError);
  });
  it('MIG_DATA_WRITE size > client max, payload shorter than 8 + size', () => {
    expectErr(req(Command.MIG_DATA_WRITE, cat(u32s(13, 5), new Uint8Array(5))));
    expectErr(req(Command.MIG_DATA_WRITE, cat(u32s(12, 4), new Uint8Array(3))));
  });
});
