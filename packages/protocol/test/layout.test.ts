// The layout tables (src/layout.ts) hold together, and every message kind survives
// decode(encode(x)) for arbitrary field values, not only the hand-picked ones of roundtrip.test.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  Layout,
  encode,
  decodeRequest,
  decodeReply,
  decodeHeader,
  writeHeader,
  dma,
  featureData,
  decodeFeatureData,
  ProtocolError,
  HEADER_SIZE,
  Command,
  DmaUnmapFlag,
  DirtyPagesFlag,
  FeatureFlag,
  Irq,
  IrqSetFlag,
  RegionCapId,
  type RegionCap,
} from '@vfu/protocol';

const RUNS = Number(process.env.VFU_FUZZ_RUNS ?? 300);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.maxSafeNat();
const bytes = (max: number) => fc.uint8Array({ maxLength: max });
const limits = { maxRegionXfer: 1 << 20, maxMigXfer: 1 << 20 };

const payloadOf = (m: Uint8Array) => m.subarray(HEADER_SIZE);

/** Decodes a whole encoded command; a ProtocolError fails the test with its message. */
function decoded(m: Uint8Array, fds = 0): unknown {
  const h = decodeHeader(m);
  expect(h.size).toBe(m.length);
  const r = decodeRequest(h.cmd, payloadOf(m), fds, limits);
  if (r instanceof ProtocolError) throw r;
  expect(r.cmd).toBe(h.cmd);
  return r.body;
}

/** Decodes a reply payload, failing the test on a ProtocolError. */
function replied<T>(r: T | ProtocolError): T {
  if (r instanceof ProtocolError) throw r;
  return r;
}

/** Runs `check` on arbitrary values; `check` asserts with expect (its return value is ignored). */
const roundTrips = <T>(arb: fc.Arbitrary<T>, check: (x: T) => unknown) =>
  fc.assert(
    fc.property(arb, x => {
      check(x);
    }),
    { numRuns: RUNS },
  );

describe('layout tables', () => {
  const tables = Object.entries(Layout) as [string, Record<string, unknown>][];
  it.each(tables)('%s: fields lie inside SIZE and never overlap', (_, table) => {
    const fields = Object.values(table).filter(
      (v): v is { at: number; width: number } => typeof v === 'object' && v !== null,
    );
    expect(fields.length).toBeGreaterThan(0);
    const taken = new Set<number>();
    for (const f of fields) {
      expect(f.at % f.width).toBe(0);
      expect(f.at + f.width).toBeLessThanOrEqual(table.SIZE as number);
      for (let b = f.at; b < f.at + f.width; b++) {
        expect(taken.has(b)).toBe(false);
        taken.add(b);
      }
    }
  });
});

describe('decode(encode(x)) for every message kind, arbitrary values', () => {
  it('header', () => {
    const header = fc.record({
      id: fc.integer({ min: 0, max: 0xffff }),
      cmd: fc.integer({ min: 0, max: 0xffff }),
      size: u32,
      flags: u32,
      error: u32,
    });
    roundTrips(header, h => {
      const out = new Uint8Array(HEADER_SIZE);
      writeHeader(out, h);
      expect(decodeHeader(out)).toEqual(h);
    });
  });

  it('DMA_MAP and DMA_UNMAP', () => {
    const map = fc.record({
      argsz: fc.integer({ min: 32, max: 0xffffffff }),
      flags: u32,
      offset: u64,
      address: u64,
      size: u64,
    });
    roundTrips(map, m => expect(decoded(encode.dmaMap(1, m))).toEqual(m));
    const unmap = fc.record({ flags: fc.constant(0), address: u64, size: u64 });
    roundTrips(unmap, m => expect(decoded(encode.dmaUnmap(2, m))).toEqual({ argsz: 24, ...m }));
    const withBitmap = fc.record({
      flags: fc.constant(DmaUnmapFlag.GET_DIRTY_BITMAP),
      address: u64,
      size: u64,
      bitmap: fc.record({ pgsize: u64, size: fc.integer({ min: 0, max: 4096 }) }),
    });
    roundTrips(withBitmap, m => {
      const argsz = 40 + m.bitmap.size;
      expect(decoded(encode.dmaUnmap(3, m))).toEqual({ argsz, ...m });
      const bitmap = new Uint8Array(m.bitmap.size).fill(0xa5);
      const reply = replied(
        decodeReply.dmaUnmap(payloadOf(encode.dmaUnmapReply(4, { argsz, ...m }, bitmap))),
      );
      expect(reply).toMatchObject({ flags: m.flags, address: m.address, size: m.size });
      expect(reply.bitmap).toEqual(m.bitmap);
    });
  });

  it('DEVICE_GET_INFO, DEVICE_GET_REGION_INFO, DEVICE_GET_IRQ_INFO', () => {
    const argsz = (min: number) => fc.integer({ min, max: 0xffffffff });
    roundTrips(argsz(16), a => expect(decoded(encode.getInfo(1, a))).toEqual({ argsz: a }));
    roundTrips(fc.tuple(u32, argsz(32)), ([index, a]) =>
      expect(decoded(encode.getRegionInfo(1, index, a))).toEqual({ argsz: a, index }),
    );
    const irq = fc.integer({ min: 0, max: Irq.COUNT - 1 });
    roundTrips(fc.tuple(irq, argsz(16)), ([index, a]) =>
      expect(decoded(encode.getIrqInfo(1, index, a))).toEqual({ argsz: a, index }),
    );
    const info = fc.record({ flags: u32, numRegions: u32, numIrqs: u32 });
    roundTrips(info, i =>
      expect(decodeReply.deviceInfo(payloadOf(encode.deviceInfo(1, i)))).toEqual({
        argsz: 16,
        ...i,
      }),
    );
    const irqInfo = fc.record({ flags: u32, index: u32, count: u32 });
    roundTrips(irqInfo, i =>
      expect(decodeReply.irqInfo(payloadOf(encode.irqInfo(1, i)))).toEqual({ argsz: 16, ...i }),
    );
  });

  it('region info with a capability chain', () => {
    const area = fc.record({ offset: u64, size: u64 });
    const cap: fc.Arbitrary<RegionCap> = fc.oneof(
      fc.record({ id: fc.constant(RegionCapId.TYPE), type: u32, subtype: u32 }),
      fc.record({ id: fc.constant(RegionCapId.SPARSE_MMAP), areas: fc.array(area) }),
    );
    const info = fc.record({
      flags: fc.integer({ min: 0, max: 7 }),
      index: u32,
      size: u64,
      offset: u64,
      caps: fc.array(cap, { maxLength: 4 }),
    });
    roundTrips(info, r => {
      const { msg, withCaps } = encode.regionInfo(1, 1 << 20, r);
      const back = replied(decodeReply.regionInfo(payloadOf(msg)));
      expect(withCaps).toBe(r.caps.length > 0);
      expect(back).toMatchObject({ index: r.index, size: r.size, offset: r.offset });
      expect(back.caps).toEqual(r.caps);
    });
  });

  it('DEVICE_SET_IRQS with eventfds and with bools', () => {
    const vectors = fc.record({
      index: fc.integer({ min: Irq.INTX, max: Irq.MSIX }),
      start: fc.integer({ min: 0, max: 0xffff }),
      count: fc.integer({ min: 1, max: 8 }),
    });
    const eventfd = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;
    roundTrips(vectors, v => {
      const s = { flags: eventfd, ...v };
      expect(decoded(encode.setIrqs(1, s), v.count)).toEqual({ argsz: 20, ...s });
    });
    const bool = IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK;
    roundTrips(vectors, v => {
      const s = { flags: bool, ...v, bools: new Uint8Array(v.count).fill(1) };
      expect(decoded(encode.setIrqs(1, s))).toEqual({ argsz: 20 + v.count, ...s });
    });
  });

  it('REGION_READ, REGION_WRITE and their replies', () => {
    const access = fc.record({ offset: u64, region: u32, count: fc.integer({ min: 0, max: 64 }) });
    roundTrips(access, a => {
      expect(decoded(encode.regionRead(1, a))).toEqual(a);
      const data = new Uint8Array(a.count).fill(a.count);
      expect(decoded(encode.regionWrite(1, { ...a, data }))).toEqual({ ...a, data });
      // Head then data, as sent in two parts, are the same bytes as the whole message.
      for (const posted of [false, true]) {
        const head = encode.regionWriteHead(1, a, posted);
        const whole = new Uint8Array(head.length + a.count);
        whole.set(head);
        whole.set(data, head.length);
        expect(whole).toEqual(encode.regionWrite(1, { ...a, data }, posted));
      }
      const reply = encode.regionReadReply(1, a);
      reply.data.set(data);
      expect(decodeReply.regionRead(payloadOf(reply.msg), a.count)).toEqual(data);
      const written = decodeRequest(
        Command.REGION_READ,
        payloadOf(encode.regionWriteReply(1, a)),
        0,
      );
      expect((written as { body: unknown }).body).toEqual(a);
    });
  });

  it('REGION_WRITE_MULTI', () => {
    const write = fc.record({ offset: u64, region: u32, data: bytes(8) });
    roundTrips(fc.array(write, { maxLength: 6 }), ws => {
      const writes = ws.map(w => ({ ...w, count: w.data.length }));
      expect(decoded(encode.writeMulti(1, writes))).toEqual({ writes });
    });
  });

  it('DIRTY_PAGES', () => {
    const op = fc.constantFrom(DirtyPagesFlag.START, DirtyPagesFlag.STOP);
    roundTrips(op, flags =>
      expect(decoded(encode.dirtyPages(1, { argsz: 8, flags }))).toEqual({ argsz: 8, flags }),
    );
    const range = fc.record({ iova: u64, size: u64, pgsize: u64, bitmapSize: u64 });
    roundTrips(range, r => {
      const d = { argsz: 40 + 8, flags: DirtyPagesFlag.GET_BITMAP, range: r };
      expect(decoded(encode.dirtyPages(1, d))).toEqual(d);
    });
    roundTrips(bytes(64), bitmap => {
      const r = { iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: bitmap.length };
      const back = replied(
        decodeReply.dirtyPages(payloadOf(encode.dirtyPagesReply(1, 1e6, r, bitmap))),
      );
      expect(back).toEqual({
        argsz: 40 + bitmap.length,
        flags: DirtyPagesFlag.GET_BITMAP,
        range: r,
        bitmap,
      });
    });
  });

  it('DEVICE_FEATURE, request and reply', () => {
    const flags = fc
      .tuple(
        fc.integer({ min: 0, max: FeatureFlag.MASK }),
        fc.constantFrom(FeatureFlag.GET, FeatureFlag.SET, FeatureFlag.PROBE),
      )
      .map(([index, op]) => index | op);
    roundTrips(fc.tuple(flags, bytes(32)), ([f, data]) => {
      expect(decoded(encode.feature(1, f, data))).toEqual({
        argsz: 8 + data.length,
        flags: f,
        data,
      });
      expect(decodeReply.feature(payloadOf(encode.featureReply(1, f, data)))).toEqual({
        argsz: 8 + data.length,
        flags: f,
        data,
      });
    });
  });

  it('MIG_DATA_READ and MIG_DATA_WRITE', () => {
    roundTrips(bytes(64), data => {
      const n = data.length;
      expect(decoded(encode.migDataRead(1, n))).toEqual({ argsz: 8 + n, size: n });
      expect(decoded(encode.migDataWrite(1, data))).toEqual({ argsz: 8 + n, size: n, data });
      expect(decodeReply.migDataRead(payloadOf(encode.migDataReadReply(1, data)))).toEqual(data);
      const head = encode.migDataWriteHead(1, n);
      const whole = new Uint8Array(head.length + n);
      whole.set(head);
      whole.set(data, head.length);
      expect(decoded(whole)).toEqual({ argsz: 8 + n, size: n, data });
    });
  });

  it('DMA_READ and DMA_WRITE in both layouts', () => {
    const transfer = fc.record({
      layout: fc.constantFrom('spec' as const, 'qemu' as const),
      address: u64,
      data: bytes(32),
    });
    roundTrips(transfer, ({ layout, address, data }) => {
      const count = data.length;
      const read = payloadOf(dma.readRequest(1, layout, address, count));
      expect(dma.decodeRequest(Command.DMA_READ, layout, read, 1 << 20)).toEqual({
        address,
        count,
      });
      const write = payloadOf(dma.writeRequest(1, layout, address, data));
      expect(dma.decodeRequest(Command.DMA_WRITE, layout, write, 1 << 20)).toEqual({
        address,
        count,
        data,
      });
      const reply = payloadOf(dma.readReplyEncode(1, layout, { address, count }, data));
      expect(dma.readReply(layout, reply, address, count)).toEqual(data);
    });
  });

  it('DEVICE_FEATURE data: MIG_DEVICE_STATE, precopy info, DMA logging start and report', () => {
    roundTrips(fc.tuple(u32, u32), ([state, dataFd]) =>
      expect(decodeFeatureData.migDeviceState(featureData.migDeviceState(state, dataFd))).toEqual({
        state,
        dataFd,
      }),
    );
    roundTrips(fc.tuple(u64, u64), ([initialBytes, dirtyBytes]) =>
      expect(
        decodeFeatureData.precopyInfo(featureData.precopyInfo(initialBytes, dirtyBytes)),
      ).toEqual({ initialBytes, dirtyBytes }),
    );
    const range = fc.record({ iova: u64, length: u64 });
    roundTrips(fc.tuple(u64, fc.array(range, { maxLength: 8 })), ([pageSize, ranges]) =>
      expect(decodeFeatureData.loggingStart(featureData.loggingStart(pageSize, ranges))).toEqual({
        pageSize,
        ranges,
      }),
    );
    roundTrips(fc.tuple(u64, u64, u64), ([iova, length, pageSize]) =>
      expect(
        decodeFeatureData.loggingReport(featureData.loggingReport(iova, length, pageSize)),
      ).toEqual({ iova, length, pageSize }),
    );
  });
});
