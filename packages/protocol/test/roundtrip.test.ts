import { describe, it, expect } from 'vitest';
import {
  encode,
  decodeRequest,
  decodeReply,
  decodeHeader,
  HEADER_SIZE,
  Command,
  ProtocolError,
  RegionCapId,
  type RegionCap,
  dma,
  encodeVersion,
  decodeVersion,
  capabilitiesJson,
  featureData,
  decodeFeatureData,
  IrqSetFlag,
  DirtyPagesFlag,
  bitmapBytes,
  convertBitmap,
  setPages,
  setBit,
} from '@vfu/protocol';

const body = (m: Uint8Array) => m.subarray(HEADER_SIZE);
const dec = (m: Uint8Array, fds = 0) => {
  const h = decodeHeader(m);
  expect(h.size).toBe(m.length);
  const r = decodeRequest(h.cmd, body(m), fds);
  if (r instanceof ProtocolError) throw r;
  return r.body as any;
};

describe('every command round-trips through encode and decode', () => {
  it('requests', () => {
    expect(
      dec(encode.dmaMap(1, { flags: 3, offset: 4096, address: 0x1_0000_0000, size: 2 ** 40 })),
    ).toEqual({ argsz: 32, flags: 3, offset: 4096, address: 0x1_0000_0000, size: 2 ** 40 });
    expect(dec(encode.dmaUnmap(1, { flags: 0, address: 0x1000, size: 0x2000 }))).toEqual({
      argsz: 24,
      flags: 0,
      address: 0x1000,
      size: 0x2000,
    });
    expect(
      dec(
        encode.dmaUnmap(1, {
          flags: 1,
          address: 0x1000,
          size: 0x2000,
          bitmap: { pgsize: 4096, size: 8 },
        }),
      ),
    ).toMatchObject({ bitmap: { pgsize: 4096, size: 8 }, argsz: 48 });
    expect(dec(encode.getInfo(1))).toEqual({ argsz: 16 });
    expect(dec(encode.getRegionInfo(1, 7, 64))).toEqual({ argsz: 64, index: 7 });
    expect(dec(encode.getIrqInfo(1, 4))).toEqual({ argsz: 16, index: 4 });
    expect(
      dec(
        encode.setIrqs(1, {
          flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER,
          index: 1,
          start: 0,
          count: 2,
        }),
        2,
      ),
    ).toMatchObject({ index: 1, count: 2 });
    expect(
      dec(
        encode.setIrqs(1, {
          flags: IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER,
          index: 2,
          start: 1,
          count: 3,
          bools: Uint8Array.of(1, 0, 1),
        }),
      ).bools,
    ).toEqual(Uint8Array.of(1, 0, 1));
    expect(dec(encode.regionRead(1, { region: 2, offset: 0x40, count: 4 }))).toEqual({
      region: 2,
      offset: 0x40,
      count: 4,
    });
    expect(
      dec(encode.regionWrite(1, { region: 0, offset: 8, count: 2, data: Uint8Array.of(9, 8) }))
        .data,
    ).toEqual(Uint8Array.of(9, 8));
    expect(decodeRequest(Command.DEVICE_RESET, new Uint8Array(0), 0)).toEqual({
      cmd: 13,
      body: {},
    });
    expect(dec(encode.dirtyPages(1, { argsz: 8, flags: DirtyPagesFlag.START }))).toEqual({
      argsz: 8,
      flags: 1,
    });
    expect(
      dec(
        encode.dirtyPages(1, {
          argsz: 48,
          flags: DirtyPagesFlag.GET_BITMAP,
          range: { iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: 8 },
        }),
      ).range,
    ).toEqual({ iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: 8 });
    const multi = dec(
      encode.writeMulti(1, [
        { region: 0, offset: 0, count: 1, data: Uint8Array.of(1) },
        { region: 2, offset: 4, count: 8, data: new Uint8Array(8).fill(7) },
      ]),
    );
    expect(multi.writes.map((w: any) => [w.region, w.offset, w.count, [...w.data]])).toEqual([
      [0, 0, 1, [1]],
      [2, 4, 8, [7, 7, 7, 7, 7, 7, 7, 7]],
    ]);
    expect(dec(encode.feature(1, (1 << 17) | 2, featureData.migDeviceState(6))).data).toEqual(
      featureData.migDeviceState(6),
    );
    expect(dec(encode.migDataRead(1, 100))).toEqual({ argsz: 108, size: 100 });
    expect(dec(encode.migDataWrite(1, Uint8Array.of(1, 2, 3))).data).toEqual(
      Uint8Array.of(1, 2, 3),
    );
  });

  it('replies', () => {
    expect(
      decodeReply.deviceInfo(body(encode.deviceInfo(1, { flags: 3, numRegions: 10, numIrqs: 5 }))),
    ).toEqual({ argsz: 16, flags: 3, numRegions: 10, numIrqs: 5 });
    const caps: RegionCap[] = [
      { id: RegionCapId.TYPE, type: 3, subtype: 1 },
      {
        id: RegionCapId.SPARSE_MMAP,
        areas: [
          { offset: 4096, size: 8192 },
          { offset: 0x10000, size: 4096 },
        ],
      } as const,
    ];
    const full = encode.regionInfo(1, 1000, {
      flags: 7,
      index: 9,
      size: 0x20000,
      offset: 0x90000,
      caps,
    });
    expect(full.withCaps).toBe(true);
    const ri = decodeReply.regionInfo(body(full.msg)) as any;
    expect(ri).toMatchObject({
      argsz: 32 + 16 + 48,
      flags: 15,
      index: 9,
      capOffset: 32,
      size: 0x20000,
      offset: 0x90000,
    });
    expect(ri.caps).toEqual(caps);
    const short = encode.regionInfo(1, 32, { flags: 7, index: 9, size: 0x20000, offset: 0, caps });
    expect(short.withCaps).toBe(false);
    expect(body(short.msg).length).toBe(32);
    expect(decodeReply.regionInfo(body(short.msg))).toMatchObject({
      argsz: 96,
      flags: 7,
      capOffset: 0,
      caps: [],
    });
    expect(decodeReply.irqInfo(body(encode.irqInfo(1, { flags: 9, index: 2, count: 4 })))).toEqual({
      argsz: 16,
      flags: 9,
      index: 2,
      count: 4,
    });
    const rr = encode.regionReadReply(1, { region: 1, offset: 0, count: 3 });
    rr.data.set([5, 6, 7]);
    expect([...(decodeReply.regionRead(body(rr.msg), 3) as Uint8Array)]).toEqual([5, 6, 7]);
    expect(decodeReply.migDataRead(body(encode.migDataReadReply(1, Uint8Array.of(4, 5))))).toEqual(
      Uint8Array.of(4, 5),
    );
    const um = decodeReply.dmaUnmap(
      body(
        encode.dmaUnmapReply(
          1,
          { argsz: 48, flags: 1, address: 0, size: 0x40000, bitmap: { pgsize: 4096, size: 8 } },
          Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8),
        ),
      ),
    ) as any;
    expect([...um.bitmapData]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const dp = decodeReply.dirtyPages(
      body(
        encode.dirtyPagesReply(
          1,
          100,
          { iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: 8 },
          new Uint8Array(8).fill(3),
        ),
      ),
    ) as any;
    expect(dp.bitmap.every((b: number) => b === 3)).toBe(true);
    expect(
      body(
        encode.dirtyPagesReply(
          1,
          8,
          { iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: 8 },
          new Uint8Array(8),
        ),
      ).length,
    ).toBe(8);
  });

  it('VERSION both ways, and the capabilities we send parse back', () => {
    const json = capabilitiesJson({
      maxMsgFds: 8,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096,
      migration: { pgsize: 4096 },
      writeMultiple: true,
    });
    const v = decodeVersion(body(encodeVersion(0, true, 0, 0, json))) as any;
    expect(v.caps).toMatchObject({
      maxMsgFds: 8,
      maxDataXferSize: 1 << 20,
      migration: { pgsize: 4096 },
      writeMultiple: true,
    });
    // What QEMU 11.1.3 sends (protocol.md §2.3).
    const q =
      '{"capabilities":{"pgsizes":4096,"max_msg_fds":16,"max_dma_maps":65535,' +
      '"max_data_xfer_size":1048576,' +
      '"migration":{"max_bitmap_size":268435456,"pgsize":4096},"write_multiple":true}}';
    expect(decodeVersion(body(encodeVersion(0, false, 0, 0, q)))).toMatchObject({
      caps: { maxMsgFds: 16, migration: { maxBitmapSize: 268435456 }, writeMultiple: true },
    });
  });

  it('DMA_READ/DMA_WRITE in the spec layout and in QEMU 11 layout', () => {
    for (const layout of ['spec', 'qemu'] as const) {
      const rq = dma.readRequest(1, layout, 0x1000, 4);
      expect(dma.decodeRequest(Command.DMA_READ, layout, body(rq), 1 << 20)).toEqual({
        address: 0x1000,
        count: 4,
      });
      const reply = dma.readReplyEncode(
        1,
        layout,
        { address: 0x1000, count: 4 },
        Uint8Array.of(1, 2, 3, 4),
      );
      expect([...(dma.readReply(layout, body(reply), 0x1000, 4) as Uint8Array)]).toEqual([
        1, 2, 3, 4,
      ]);
      const wq = dma.writeRequest(2, layout, 0x2000, Uint8Array.of(9, 9));
      expect(dma.decodeRequest(Command.DMA_WRITE, layout, body(wq), 1 << 20)).toMatchObject({
        address: 0x2000,
        count: 2,
        data: Uint8Array.of(9, 9),
      });
    }
    // QEMU: u32 count at 8, data at payload offset 12; its DMA_WRITE reply is a bare header.
    expect(body(dma.writeRequest(2, 'qemu', 0x2000, Uint8Array.of(7)))[12]).toBe(7);
    expect(body(dma.writeRequest(2, 'spec', 0x2000, Uint8Array.of(7)))[16]).toBe(7);
    expect(dma.writeReplyEncode(1, 'qemu', { address: 0, count: 1 }).length).toBe(16);
  });

  it('feature payloads', () => {
    expect(
      decodeFeatureData.loggingStart(
        featureData.loggingStart(4096, [
          { iova: 0, length: 0x100000 },
          { iova: 2 ** 32, length: 0x1000 },
        ]),
      ),
    ).toEqual({
      pageSize: 4096,
      ranges: [
        { iova: 0, length: 0x100000 },
        { iova: 2 ** 32, length: 0x1000 },
      ],
    });
    expect(decodeFeatureData.loggingReport(featureData.loggingReport(1, 2, 3))).toEqual({
      iova: 1,
      length: 2,
      pageSize: 3,
    });
    expect(decodeFeatureData.precopyInfo(featureData.precopyInfo(10, 20))).toEqual({
      initialBytes: 10,
      dirtyBytes: 20,
    });
  });
});

describe('dirty bitmaps (§6.3)', () => {
  it('sizes round up to u64 words', () => {
    expect(bitmapBytes(0x40000, 4096)).toBe(8);
    expect(bitmapBytes(4096 * 65, 4096)).toBe(16);
  });
  it("converts between page sizes as libvfio-user's test expects", () => {
    // 0b0000001111000001 at 4 KiB -> 0b00000000000011111111000000000011 at 2 KiB -> 0b00011001 at 8
    // KiB
    const bm = new Uint8Array(8);
    for (const p of [0, 6, 7, 8, 9]) setBit(bm, p);
    const len = 16 * 4096;
    expect(setPages(convertBitmap(bm, 4096, len, 2048))).toEqual([
      0, 1, 12, 13, 14, 15, 16, 17, 18, 19,
    ]);
    expect(setPages(convertBitmap(bm, 4096, len, 8192))).toEqual([0, 3, 4]);
  });
});
