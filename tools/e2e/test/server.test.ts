// The server as a client sees it, over real sockets to a real server process: protocol.md §11's
// rows that need a device, §11.6's must-succeed rows, config space, DMA and interrupts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync } from 'node:fs';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { RemoteError } from '@vfu/transport';
import {
  eventfdCreate,
  eventfdRead,
  MessageSocket,
  connectUnix,
  peerHasReadAll,
} from '@vfu/native';
import {
  encode,
  Command,
  Errno,
  Feature,
  FeatureFlag as F,
  featureData,
  Irq,
  IrqSetFlag as I,
  RegionCapId,
  RegionFlag,
  decodeReply,
  Bytes,
  encodeVersion,
  decodeHeader,
  HEADER_SIZE,
  V1_DATA_WINDOW,
} from '@vfu/protocol';
import { S } from '@vfu/fsm';
import { Reg as Edu, DMA_BUFFER, DMA_START, DMA_TO_RAM } from '@vfu/device-edu';
import { tempDir, until, clientGone, ControlConnection, readToEnd } from './helpers.ts';

const tmp = tempDir();
let server: ServerProcess;
let c: VfioUserClient;
const ctl = tmp.path('edu.ctl');
/** Kept open: a connection a query would open and close would skew the fd counts. */
let control: ControlConnection;
beforeAll(async () => {
  server = await startServer(tmp.path('edu.sock'), [
    '--device',
    'edu',
    '--memory',
    '1M',
    '--control',
    ctl,
  ]);
  control = await ControlConnection.open(ctl);
});
afterAll(async () => {
  c?.close();
  control?.close();
  await server.stop();
  tmp.cleanup();
});
/** Closes the current client and waits until the server has handled its going. */
const gone = async () => {
  c?.close();
  await clientGone(control);
};
const fresh = async (opts = {}) => {
  await gone();
  c = await VfioUserClient.connect(server.socket, opts);
  return c;
};
const fail = async (p: Promise<unknown>, errno: number = Errno.EINVAL) => {
  await expect(p).rejects.toBeInstanceOf(RemoteError);
  await p.catch((e: RemoteError) => expect(e.errno).toBe(errno));
};
const serverFds = () => readdirSync(`/proc/${server.proc.pid}/fd`).length;
const feature = (flags: number, data: Uint8Array = new Uint8Array(0), argsz?: number) =>
  c.feature(flags, data, argsz);

describe('one client at a time, and nothing leaks', () => {
  it('refuses a second client with EBUSY; the first goes on', async () => {
    await fresh();
    const other = await VfioUserClient.connect(server.socket).catch(e => e);
    expect(other).toBeInstanceOf(RemoteError);
    expect((other as RemoteError).errno).toBe(Errno.EBUSY);
    expect(await c.read32(0, Edu.ID)).toBe(0x010000ed);
  });

  // Mappings, eventfds, region fds.
  it('releases every fd of a session when the client goes', async () => {
    await gone();
    const before = serverFds();
    await fresh();
    await c.addRam(0, 1 << 20);
    await c.addRam(1 << 20, 1 << 20);
    await c.bindIrqs(Irq.INTX);
    await c.bindIrqs(Irq.ERR);
    (await c.regionInfo(2)).fd?.close();
    expect(serverFds()).toBeGreaterThan(before + 3);
    c.close();
    await until(() => serverFds() === before, `server fds back to ${before} (now ${serverFds()})`);
  });
});

describe('§11.1 framing and negotiation at a live server', () => {
  // Then it serves a good VERSION.
  it('refuses a first message other than VERSION, and bad capabilities', async () => {
    await gone();
    for (const bad of [
      encode.getInfo(1),
      encodeVersion(1, false, 0, 0, '{"capabilities":{"max_msg_fds":-1}}'),
    ]) {
      const fd = connectUnix(server.socket),
        ms = new MessageSocket(fd.fd);
      ms.send(bad);
      const buf = Buffer.alloc(64);
      const _r = await until(() => ms.recv(buf), 'error reply');
      expect(decodeHeader(buf)).toMatchObject({ flags: 0x21, error: Errno.EINVAL });
      fd.close();
      await clientGone(control);
    }
    await fresh();
    expect((await c.deviceInfo()).numRegions).toBe(10);
  });

  // And keeps serving.
  it('answers unknown commands, stray replies, short headers with EINVAL', async () => {
    await fresh();
    const h = (cmd: number, flags = 0, size = 24) => {
      const b = Bytes.alloc(size);
      b.setU16(0, c.nextId());
      b.setU16(2, cmd);
      b.setU32(4, size);
      b.setU32(8, flags);
      return b.u8;
    };
    await fail(c.raw(h(19)));
    await fail(c.raw(h(999)));
    await fail(c.raw(h(Command.DMA_READ)));
    const id = c.nextId();
    const reply = encode.deviceInfo(id, { flags: 0, numRegions: 1, numIrqs: 1 });
    const got = c.raw(Object.assign(reply, {}));
    await fail(got); // an unsolicited reply gets an error reply with its id
    expect(await c.read32(0, Edu.ID)).toBe(0x010000ed);
  });

  it('serves a client that sends its messages one byte at a time', async () => {
    await gone();
    const fd = connectUnix(server.socket),
      ms = new MessageSocket(fd.fd);
    const msgs = [
      encodeVersion(0, false, 0, 0, '{}'),
      encode.regionRead(1, { region: 0, offset: 0, count: 4 }),
    ];
    // Each byte is sent once the server has read the one before: one read per byte.
    for (const m of msgs)
      for (let i = 0; i < m.length; i++) {
        ms.send(m.subarray(i, i + 1));
        await until(() => peerHasReadAll(fd.fd), `the server to read byte ${i}`);
      }
    const buf = Buffer.alloc(256);
    let have = 0;
    await until(() => {
      const r = ms.recv(buf.subarray(have));
      if (r) have += r.bytes;
      return have >= decodeHeader(buf).size + 20;
    }, 'both replies');
    const second = buf.subarray(decodeHeader(buf).size);
    expect(second.readUInt32LE(HEADER_SIZE + 16)).toBe(0x010000ed);
    fd.close();
  });
});

describe('§11.2 device, region and IRQ queries', () => {
  it('GET_INFO and GET_IRQ_INFO reply exactly 16 bytes even with a larger argsz', async () => {
    await fresh();
    expect(decodeReply.deviceInfo((await c.raw(encode.getInfo(c.nextId(), 64))).payload)).toEqual({
      argsz: 16,
      flags: 3,
      numRegions: 10,
      numIrqs: 5,
    });
    const r = await c.raw(encode.getIrqInfo(c.nextId(), Irq.MSI, 64));
    expect(r.payload.length).toBe(16);
    expect(decodeReply.irqInfo(r.payload)).toMatchObject({ index: 1, count: 1 });
    expect((await c.irqInfo(Irq.INTX)).flags).toBe(7);
    expect((await c.irqInfo(Irq.MSIX)).count).toBe(0);
  });

  // Out of range: EINVAL. argsz too small for caps: a 32-byte reply, no fd.
  // The full reply carries the sparse area and one fd.
  it('region info: index range, argsz too small for caps, the full reply', async () => {
    await fresh();
    await fail(c.raw(encode.getRegionInfo(c.nextId(), 10)));
    const small = await c.raw(encode.getRegionInfo(c.nextId(), 2, 32));
    expect(small.payload.length).toBe(32);
    expect(small.fds).toHaveLength(0);
    expect(decodeReply.regionInfo(small.payload)).toMatchObject({
      argsz: 64,
      flags: 7,
      size: 1 << 20,
    });
    const full = await c.regionInfo(2);
    expect(full.caps).toEqual([
      { id: RegionCapId.SPARSE_MMAP, areas: [{ offset: 0, size: 1 << 20 }] },
    ]);
    expect(full.fd).toBeDefined();
    full.fd!.close();
    const mig = await c.regionInfo(9);
    expect(mig.caps).toContainEqual({ id: RegionCapId.TYPE, type: 3, subtype: 1 });
    // upper half of the 64-bit BAR 0? no: BAR 1 unimplemented
    expect(await c.regionInfo(1)).toMatchObject({ size: 0, flags: 0 });
  });

  it('SET_IRQS: ranges past the index, a second type, the loop-back trigger', async () => {
    await fresh();
    await fail(c.setIrqs(Irq.MSI, I.DATA_NONE | I.ACTION_TRIGGER, 1, 1));
    // Starts inside the index, ends past it.
    await fail(c.setIrqs(Irq.MSI, I.DATA_NONE | I.ACTION_TRIGGER, 0, 2));
    await fail(c.setIrqs(Irq.MSIX, I.DATA_NONE | I.ACTION_TRIGGER, 0, 1));
    const intx = await c.bindIrqs(Irq.INTX);
    const e = eventfdCreate();
    // INTx is in use
    await fail(c.setIrqs(Irq.MSI, I.DATA_EVENTFD | I.ACTION_TRIGGER, 0, 1, { fds: [e.fd] }));
    e.close();
    await c.setIrqs(Irq.INTX, I.DATA_NONE | I.ACTION_TRIGGER, 0, 1); // loop-back
    await intx.next();
    await c.setIrqs(Irq.INTX, I.DATA_NONE | I.ACTION_TRIGGER, 0, 0); // disable INTx
    await c.bindIrqs(Irq.MSI); // now allowed
  });
});

describe('§11.3 region access and config space', () => {
  // Bad regions: out of range or unimplemented.
  it('refuses bad regions and accesses past the end; count 0 echoes', async () => {
    await fresh();
    await fail(c.regionRead(10, 0, 4));
    await fail(c.regionRead(1, 0, 4));
    await fail(c.regionRead(0, (1 << 20) - 2, 4));
    await fail(c.regionRead(7, 254, 4));
    expect(
      (await c.raw(encode.regionRead(c.nextId(), { region: 0, offset: 0, count: 0 }))).payload
        .length,
    ).toBe(16);
  });

  it('ignores read-only fields, sizes BARs, keeps type bits, clears W1C bits', async () => {
    await fresh();
    await c.config.write32(0, 0xffffffff);
    expect(await c.config.read32(0)).toBe(0x11e81234);
    await c.config.write32(0x10, 0xffffffff);
    expect((await c.config.read32(0x10)) >>> 0).toBe(~((1 << 20) - 1) >>> 0);
    await c.config.write32(0x18, 0xffffffff);
    expect((await c.config.read32(0x18)) >>> 0).toBe((~((1 << 20) - 1) | 0b1100) >>> 0);
    await c.config.write8(0x3d, 4);
    expect(await c.config.read8(0x3d)).toBe(1);
    await c.config.write16(0x06, 0xffff);
    expect((await c.config.read16(0x06)) & 0xf900).toBe(0);
    // unaligned 2-byte write inside the MSI capability: accepted
    await c.regionWrite(7, 0x45, Uint8Array.of(1, 2));
  });

  it('REGION_WRITE_MULTI only when negotiated; applied in order', async () => {
    await fresh();
    await fail(
      c.writeMulti([{ region: 0, offset: Edu.LIVENESS, data: Uint8Array.of(1, 0, 0, 0) }], false),
    );
    await fresh({ writeMultiple: true });
    expect(
      await c.writeMulti(
        [
          { region: 0, offset: Edu.LIVENESS, data: Uint8Array.of(1, 0, 0, 0) },
          { region: 0, offset: Edu.LIVENESS, data: Uint8Array.of(2, 0, 0, 0) },
        ],
        false,
      ),
    ).toBe(2);
    expect(await c.read32(0, Edu.LIVENESS)).toBe(~2 >>> 0);
    // Entries apply in order; the first outside its region ends the message with EINVAL.
    const bar0 = (await c.regionInfo(0)).size;
    await fail(
      c.writeMulti(
        [
          { region: 0, offset: Edu.LIVENESS, data: Uint8Array.of(3, 0, 0, 0) },
          { region: 0, offset: bar0 - 2, data: Uint8Array.of(1, 0, 0, 0) },
        ],
        false,
      ),
    );
    expect(await c.read32(0, Edu.LIVENESS)).toBe(~3 >>> 0);
  });
});

describe('§11.4 DMA', () => {
  // Exact duplicate OK, overlap EINVAL, unaligned EINVAL, too big ENOSPC;
  // UNMAP exact or ENOENT; UNMAP ALL.
  it('DMA_MAP and DMA_UNMAP rules', async () => {
    await fresh();
    const ram = await c.addRam(0x10000, 0x10000);
    await c.dmaMap({ flags: 3, offset: 0, address: 0x10000, size: 0x10000 }, ram.fd!.fd);
    await fail(c.dmaMap({ flags: 3, offset: 0, address: 0x18000, size: 0x10000 }, ram.fd!.fd));
    await fail(c.dmaMap({ flags: 3, offset: 0, address: 0x30001, size: 0x1000 }));
    await fail(c.dmaMap({ flags: 3, offset: 0, address: 0x40000, size: 2 ** 44 }), Errno.ENOSPC);
    await fail(c.dmaMap({ flags: 8 | 3, offset: 0, address: 0x40000, size: 0x1000 }));
    await fail(c.dmaUnmap(0x10000, 0x8000), Errno.ENOENT);
    await fail(c.dmaUnmap(0x10000, 0x10000, { bitmapPage: 4096 })); // not logging
    await c.dmaUnmap(0, 0, { all: true });
    await c.dmaUnmap(0, 0, { all: true }); // with no mappings: fine
  });

  it('fd-less guest memory is reached through DMA_READ/DMA_WRITE messages', async () => {
    await fresh();
    await c.config.write16(4, 6);
    const ram = await c.addRam(0x100000, 0x10000, { viaMessages: true });
    ram.bytes.set(Buffer.from('through messages'), 0x100);
    await c.write32(0, Edu.DMA_SRC, 0x100100);
    await c.write32(0, Edu.DMA_DST, DMA_BUFFER);
    await c.write32(0, Edu.DMA_COUNT, 16);
    await c.write32(0, Edu.DMA_CMD, DMA_START);
    await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & 1) === 0, 'DMA in');
    await c.write32(0, Edu.DMA_SRC, DMA_BUFFER);
    await c.write32(0, Edu.DMA_DST, 0x100800);
    await c.write32(0, Edu.DMA_CMD, DMA_START | DMA_TO_RAM);
    await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & 1) === 0, 'DMA out');
    expect(Buffer.from(ram.bytes.subarray(0x800, 0x810)).toString()).toBe('through messages');
  });

  it('no DMA without bus mastering', async () => {
    await fresh();
    const ram = await c.addRam(0x100000, 0x10000);
    ram.bytes.fill(7, 0, 16);
    await c.write32(0, Edu.DMA_SRC, 0x100000);
    await c.write32(0, Edu.DMA_DST, DMA_BUFFER);
    await c.write32(0, Edu.DMA_COUNT, 16);
    await c.write32(0, Edu.DMA_CMD, DMA_START);
    await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & 1) === 0, 'the DMA to end');
    expect(server.output()).toMatch(/DMA while bus mastering is disabled/);
    // The buffer (declared state, read through the control socket) did not get the 7s.
    const { state } = await control.request({ get: 'state' });
    expect(state.buffer.slice(0, 32)).toBe('00'.repeat(16));
  });

  it('a DMA that runs past the 4 KiB buffer is refused whole, both ways', async () => {
    await fresh();
    await c.config.write16(4, 0x6); // memory + bus master
    const ram = await c.addRam(0x100000, 0x10000);
    const dma = async (cmd: number, src: number, dst: number, count: number) => {
      await c.write32(0, Edu.DMA_SRC, src);
      await c.write32(0, Edu.DMA_DST, dst);
      await c.write32(0, Edu.DMA_COUNT, count);
      await c.write32(0, Edu.DMA_CMD, cmd);
      await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & 1) === 0, 'the DMA to end');
    };
    const buffer = async () => (await control.request({ get: 'state' })).state.buffer as string;
    // The buffer's last 0x100 bytes get 7s (inside it: done).
    ram.bytes.fill(7, 0, 0x100);
    await dma(DMA_START, 0x100000, DMA_BUFFER + 0xf00, 0x100);
    const before = '00'.repeat(0xf00) + '07'.repeat(0x100);
    expect(await buffer()).toBe(before);
    const log = server.output().length;
    // 0x200 bytes from 0xf00, 0x100 of them past the end: nothing moves, either way.
    ram.bytes.fill(9, 0, 0x200);
    await dma(DMA_START, 0x100000, DMA_BUFFER + 0xf00, 0x200);
    expect(await buffer()).toBe(before);
    await dma(DMA_START | DMA_TO_RAM, DMA_BUFFER + 0xf00, 0x100000 + 0x2000, 0x200);
    expect(ram.bytes.subarray(0x2000, 0x2200).every(b => b === 0)).toBe(true);
    expect(
      server
        .output()
        .slice(log)
        .match(/edu DMA outside the buffer/g),
    ).toHaveLength(2);
  });
});

describe('§11.5 DEVICE_FEATURE, migration state and DMA logging', () => {
  it('generic feature checks', async () => {
    await fresh();
    await fail(feature(F.SET | Feature.MIGRATION, featureData.u64(0)));
    await fail(feature(F.PROBE | F.SET | F.GET | Feature.MIGRATION));
    expect((await feature(F.PROBE | F.GET | Feature.MIGRATION, new Uint8Array(0), 8)).flags).toBe(
      F.PROBE | F.GET | Feature.MIGRATION,
    );
    await fail(feature(F.GET | Feature.MIGRATION, new Uint8Array(0), 8));
    await fail(feature(F.SET | Feature.MIG_DEVICE_STATE, featureData.migDeviceState(S.STOP), 8));
    await fail(feature(F.GET | 0x7777));
    expect(await c.migrationFlags()).toBe(5);
  });

  // Refused: unreachable, ERROR, P2P, STOP_COPY -> PRE_COPY. Same state: no-op.
  it('states: what is refused, what is a no-op, reset in every state', async () => {
    await fresh();
    for (const s of [0xabcd, 8, S.ERROR, S.RUNNING_P2P, S.PRE_COPY_P2P]) await fail(c.setState(s));
    await c.setState(S.RUNNING);
    await c.setState(S.STOP_COPY); // RUNNING -> STOP -> STOP_COPY
    await c.setState(S.STOP_COPY);
    await fail(c.setState(S.PRE_COPY));
    await c.reset();
    expect(await c.getState()).toBe(S.RUNNING);
  });

  // Bounded by max_data_xfer_size.
  it('MIG_DATA_READ only saving, MIG_DATA_WRITE only resuming, sizes bounded', async () => {
    await fresh({ maxDataXferSize: 4096 });
    for (const s of [S.RUNNING, S.STOP, S.RESUMING]) {
      await c.setState(s);
      await fail(c.migDataRead(16));
    }
    await c.setState(S.STOP);
    await fail(c.migDataWrite(Uint8Array.of(1)));
    await c.setState(S.PRE_COPY);
    await fail(c.migDataRead(4097));
    expect((await c.migDataRead(4096)).length).toBe(4096);
    const info = await c.precopyInfo();
    expect(info.initialBytes).toBeGreaterThan(0);
    await c.setState(S.RUNNING);
    await fail(c.precopyInfo());
  });

  // Page size 0, a changed page size, REPORT argsz one byte short.
  it('DMA logging: bad page sizes, short REPORT argsz; STOP when idle is fine', async () => {
    await fresh();
    await c.addRam(0, 0x100000);
    await c.feature(F.SET | Feature.DMA_LOGGING_STOP);
    await fail(feature(F.SET | Feature.DMA_LOGGING_START, featureData.loggingStart(0, [])));
    await feature(
      F.SET | Feature.DMA_LOGGING_START,
      featureData.loggingStart(4096, [{ iova: 0, length: 0x100000 }]),
    );
    await feature(
      F.SET | Feature.DMA_LOGGING_START,
      featureData.loggingStart(4096, [{ iova: 0, length: 0x100000 }]),
    );
    await fail(feature(F.SET | Feature.DMA_LOGGING_START, featureData.loggingStart(8192, [])));
    await fail(
      feature(
        F.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(0, 0x40000, 4096),
        8 + 24 + 8 - 1,
      ),
    );
    await fail(
      feature(
        F.GET | Feature.DMA_LOGGING_REPORT,
        featureData.loggingReport(0, 0x40000, 1000),
        8 + 24 + 64,
      ),
    );
    const r = await feature(
      F.GET | Feature.DMA_LOGGING_REPORT,
      featureData.loggingReport(0x80000, 0x100000, 4096),
      8 + 24 + 32,
    ); // past the mapping: zeros
    expect(r.data.subarray(24).every(b => b === 0)).toBe(true);
  });

  it('v1 region: wrong widths, reserved values, error, gap, read-only registers', async () => {
    await fresh();
    const w32 = (o: number, v: number) => c.write32(9, o, v);
    await fail(c.regionWrite(9, 0, Uint8Array.of(3, 0, 0)));
    expect(await c.read32(9, 0)).toBe(1);
    for (const v of [5, 6, 7, 9, 0x80000001]) await fail(w32(0, v));
    await fail(c.regionRead(9, 40, 4));
    await fail(c.regionWrite(9, 8, new Uint8Array(8)));
    expect(await c.read32(9, 4)).toBe(0);
    await w32(4, 0xffffffff); // reserved: reads 0, writes ignored
    await w32(0, 2);
    await fail(w32(0, 3)); // 010b -> 011b
    await w32(0, 2); // same state: no-op
    await fail(c.regionRead(9, 24, 8)); // data_size before data_offset
    expect(await c.getState()).toBe(S.STOP_COPY); // one machine for both protocols
    await c.reset();
    expect(await c.read32(9, 0)).toBe(1);
    // Resuming: the data window holds 1 MiB. Filled with the first MiB of a real stream (edu
    // with 1 MiB of memory makes more), a data_size one byte past it is refused, the
    // window's own size taken.
    await c.setState(S.STOP);
    await c.setState(S.STOP_COPY);
    const stream = await readToEnd(c);
    await c.reset();
    const MIB = 1 << 20;
    expect(stream.length).toBeGreaterThan(MIB);
    await w32(0, 0);
    await w32(0, 4);
    for (let off = 0; off < MIB; off += 65536)
      await c.regionWrite(9, V1_DATA_WINDOW + off, stream.subarray(off, off + 65536));
    const dataSize = (n: number) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
      return c.regionWrite(9, 24, b);
    };
    await fail(dataSize(MIB + 1));
    await dataSize(MIB);
    await c.reset();
    expect(await c.read32(9, 0)).toBe(1);
  });

  // A client that maps the window reads chunks there, unseen: a chunk counts as read once its
  // data_size was, so pre-copy -> stop-and-copy does not offer it again (it would be sent twice).
  it('v1 region: the data window maps, for saving and for resuming', async () => {
    await fresh();
    const info = await c.regionInfo(9);
    info.fd?.close();
    expect(info.flags & RegionFlag.MMAP).toBe(RegionFlag.MMAP);
    const areas = [{ offset: V1_DATA_WINDOW, size: 1 << 20 }];
    expect(info.caps).toContainEqual({ id: RegionCapId.SPARSE_MMAP, areas });
    const win = await c.mapRegion(9);
    const u64 = async (o: number) => Buffer.from(await c.regionRead(9, o, 8)).readBigUInt64LE();
    await c.write32(9, 0, 3); // 011b: pre-copy
    expect(await u64(8)).toBeGreaterThan(0n);
    expect(await u64(16)).toBe(BigInt(V1_DATA_WINDOW));
    const n = Number(await u64(24));
    const head = Buffer.from(win.bytes(0, 64));
    expect(Buffer.from(await c.regionRead(9, V1_DATA_WINDOW, 64))).toEqual(head);
    await c.write32(9, 0, 2); // 010b: stop-and-copy
    expect(await u64(8)).toBeGreaterThan(0n);
    await u64(16);
    expect(Buffer.from(win.bytes(0, 64))).not.toEqual(head); // the next chunk, not this again
    await c.reset();
    // Resuming: what the client put in the window is what data_size hands to the device.
    const first = await (async () => {
      await c.setState(S.STOP);
      await c.setState(S.STOP_COPY);
      return (await readToEnd(c)).subarray(0, n);
    })();
    await c.reset();
    await c.write32(9, 0, 0);
    await c.write32(9, 0, 4); // 100b: resuming
    const dataSize = (k: number) =>
      c.regionWrite(9, 24, Buffer.from(new BigUint64Array([BigInt(k)]).buffer));
    win.bytes(0, n).fill(0x5a);
    await fail(dataSize(n)); // not a stream
    await c.reset();
    await c.write32(9, 0, 0);
    await c.write32(9, 0, 4);
    win.bytes(0, n).set(first);
    await dataSize(n);
    win.release();
    await c.reset();
  });

  // A mapping outlives the connection that gave the fd: the next client gets a window of its own.
  it('v1 region: a client that left cannot see the window of the next', async () => {
    await fresh();
    const before = await c.mapRegion(9);
    await gone();
    await fresh();
    await c.write32(9, 0, 3); // 011b: pre-copy; a chunk is prepared at data_offset
    await c.regionRead(9, 16, 8);
    const chunk = Buffer.from(await c.regionRead(9, V1_DATA_WINDOW, 64));
    expect(chunk.some(b => b !== 0)).toBe(true);
    expect(Buffer.from(before.bytes(0, 64))).toEqual(Buffer.alloc(64)); // not this client's
    before.release();
    await c.reset();
  });
});

describe('interrupts reach the client', () => {
  it('INTx with INTX_DISABLE gating and MSI delivery', async () => {
    await fresh();
    const intx = await c.bindIrqs(Irq.INTX);
    await c.config.write16(4, 0x0402); // memory + INTX_DISABLE
    await c.write32(0, Edu.IRQ_RAISE, 1);
    expect((await c.config.read16(6)) & 8).toBe(8); // STATUS.INTERRUPT set while pending
    // The raise ran before the write's reply: a signal would be on the eventfd by now.
    expect(intx.counts[0]).toBe(0);
    expect(eventfdRead(intx.fds[0].fd)).toBeNull();
    await c.config.write16(4, 0x0002);
    await intx.next();
    await c.write32(0, Edu.IRQ_ACK, 1);
    await c.setIrqs(Irq.INTX, I.DATA_NONE | I.ACTION_TRIGGER, 0, 0);
    const msi = await c.bindIrqs(Irq.MSI);
    await c.config.write16(0x42, 1); // MSI enable (capability at 0x40)
    await c.write32(0, Edu.IRQ_RAISE, 2);
    await msi.next();
    expect(eventfdRead(msi.fds[0].fd)).toBeNull();
  });
});

describe('every migration message in every state (§8.10, §7.5, §11.5)', () => {
  it('is accepted exactly where the protocol allows it, else EINVAL', async () => {
    await fresh({ maxDataXferSize: 1 << 20 });
    const ok = (p: Promise<unknown>) =>
      p.then(
        () => true,
        e => {
          if (!(e instanceof RemoteError) || e.errno !== Errno.EINVAL) throw e;
          return false;
        },
      );
    const messages: Record<string, () => Promise<boolean>> = {
      MIG_DATA_READ: () => ok(c.migDataRead(64)),
      'MIG_DATA_WRITE (empty)': () => ok(c.migDataWrite(new Uint8Array(0))),
      PRECOPY_INFO: () => ok(c.precopyInfo()),
      MIG_DATA_SIZE: () => ok(c.dataSize()),
      'GET MIG_DEVICE_STATE': () => ok(c.getState()),
      'v1 data_offset read': () => ok(c.regionRead(9, 16, 8)),
      'v1 data_size write': () => ok(c.regionWrite(9, 24, new Uint8Array(8))),
      'config read': () => ok(c.regionRead(7, 0, 4)),
      'BAR read': () => ok(c.read32(0, Edu.ID)),
      SET_IRQS: () => ok(c.setIrqs(Irq.INTX, I.DATA_NONE | I.ACTION_UNMASK, 0, 1)),
      'DMA_MAP/UNMAP': () =>
        ok(
          c
            .dmaMap({ flags: 3, offset: 0, address: 0x7000000, size: 0x1000 })
            .then(() => c.dmaUnmap(0x7000000, 0x1000)),
        ),
    };
    const allowed: Record<number, string[]> = {
      [S.RUNNING]: [
        'MIG_DATA_SIZE',
        'GET MIG_DEVICE_STATE',
        'config read',
        'BAR read',
        'SET_IRQS',
        'DMA_MAP/UNMAP',
      ],
      [S.STOP]: [
        'MIG_DATA_SIZE',
        'GET MIG_DEVICE_STATE',
        'config read',
        'BAR read',
        'SET_IRQS',
        'DMA_MAP/UNMAP',
      ],
      [S.PRE_COPY]: [
        'MIG_DATA_READ',
        'PRECOPY_INFO',
        'MIG_DATA_SIZE',
        'GET MIG_DEVICE_STATE',
        'config read',
        'BAR read',
        'SET_IRQS',
        'DMA_MAP/UNMAP',
      ],
      [S.STOP_COPY]: [
        'MIG_DATA_READ',
        'MIG_DATA_SIZE',
        'GET MIG_DEVICE_STATE',
        'config read',
        'BAR read',
        'SET_IRQS',
        'DMA_MAP/UNMAP',
      ],
      [S.RESUMING]: [
        'MIG_DATA_WRITE (empty)',
        'MIG_DATA_SIZE',
        'GET MIG_DEVICE_STATE',
        'v1 data_offset read',
        'config read',
        'BAR read',
        'SET_IRQS',
        'DMA_MAP/UNMAP',
      ],
    };
    for (const [state, yes] of Object.entries(allowed)) {
      await c.reset();
      await c.setState(Number(state));
      for (const [name, send] of Object.entries(messages)) {
        // A session's data belongs to the transport that first touched it (§9): v2 reads claim it.
        if (name.startsWith('v1') && yes.includes('MIG_DATA_READ')) continue;
        expect(await send(), `${name} in state ${state}`).toBe(yes.includes(name));
      }
    }
    // One session, two transports: once v2 has read, the v1 window is refused, and vice versa.
    await c.reset();
    await c.setState(S.PRE_COPY);
    await c.migDataRead(64);
    await fail(c.regionRead(9, 16, 8));
    await c.reset();
    await c.setState(S.PRE_COPY);
    await c.regionRead(9, 16, 8);
    await fail(c.migDataRead(64));
    await c.reset();
  });

  it('DMA at the edges of mapped memory: the last byte works, one more does not', async () => {
    await fresh();
    await c.config.write16(4, 6);
    const ram = await c.addRam(0x200000, 0x1000);
    ram.bytes.set([1, 2, 3, 4], 0x1000 - 4);
    const dma = async (src: number, n: number) => {
      await c.write32(0, Edu.DMA_SRC, src);
      await c.write32(0, Edu.DMA_DST, DMA_BUFFER);
      await c.write32(0, Edu.DMA_COUNT, n);
      await c.write32(0, Edu.DMA_CMD, DMA_START);
      await until(async () => ((await c.read32(0, Edu.DMA_CMD)) & 1) === 0, 'DMA');
    };
    const log = server.output().length;
    await dma(0x200000 + 0x1000 - 4, 4);
    expect(server.output().slice(log)).not.toMatch(/DMA failed/);
    await dma(0x200000 + 0x1000 - 4, 5);
    expect(server.output().slice(log)).toMatch(
      /edu DMA failed: DMA read of \[0x200ffc, \+5\) outside mapped memory/,
    );
  });
});
