// Every command's happy path against the probe device, through the client the tools use, over
// a real UNIX socket to a server in this process; the server's device is inspected directly.
import { afterEach, describe, expect, it } from 'vitest';
import type { MappedMemory } from '@vfu/native';
import {
  Bytes,
  Command,
  DeviceInfoFlag,
  DirtyPagesFlag,
  Feature,
  FeatureFlag,
  Irq,
  MigState,
  MigrationFlag,
  RegionCapId,
  RegionFlag,
  decodeReply,
  encode,
} from '@vfu/protocol';
import { VfioUserClient } from '@vfu/client';
import { PROBE_ID, Reg, serve, type Served } from './serve.ts';

let served: Served[] = [];
let clients: VfioUserClient[] = [];
afterEach(() => {
  for (const c of clients) c.close();
  for (const s of served) s.stop();
  clients = [];
  served = [];
});
/** A probe server and a client negotiated with it. */
async function session(
  options: Parameters<typeof serve>[0] = {},
  client: Parameters<typeof VfioUserClient.connect>[1] = {},
) {
  const s = serve(options);
  served.push(s);
  const c = await VfioUserClient.connect(s.socket, client);
  clients.push(c);
  return { s, c };
}
const u32le = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
};

describe('device, region and IRQ queries', () => {
  it('DEVICE_GET_INFO: PCI, resettable, 9 regions and the v1 migration one, 5 IRQs', async () => {
    const { c } = await session();
    expect(await c.deviceInfo()).toEqual({
      argsz: 16,
      flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
      numRegions: 10,
      numIrqs: 5,
    });
    const { c: plain } = await session({ migration: false });
    expect((await plain.deviceInfo()).numRegions).toBe(9);
  });

  it('DEVICE_GET_REGION_INFO: sizes and flags; a mappable BAR comes with its fd', async () => {
    const { s, c } = await session();
    expect(await c.regionInfo(0)).toMatchObject({
      index: 0,
      size: 4096,
      flags: RegionFlag.READ | RegionFlag.WRITE,
      caps: [],
    });
    expect(await c.regionInfo(1)).toMatchObject({ index: 1, size: 0, flags: 0 });
    const bar2 = await c.regionInfo(2);
    expect(bar2.flags).toBe(RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP | RegionFlag.CAPS);
    expect(bar2.caps).toEqual([
      { id: RegionCapId.SPARSE_MMAP, areas: [{ offset: 0, size: 4096 }] },
    ]);
    expect(bar2.fd).toBeDefined();
    bar2.fd?.close();
    // The mapping and the region are the same memory.
    const map: MappedMemory = await c.mapRegion(2);
    await c.regionWrite(2, 0x10, Uint8Array.of(1, 2, 3));
    expect([...map.bytes(0x10, 3)]).toEqual([1, 2, 3]);
    map.bytes(0x20, 1)[0] = 0x5a;
    expect(await c.read8(2, 0x20)).toBe(0x5a);
    map.release();
    expect((await c.regionInfo(9)).caps[0]).toMatchObject({ id: RegionCapId.TYPE });
    expect(s.server.connected).toBe(true);
  });

  it('DEVICE_GET_REGION_IO_FDS: no ioeventfds (count 0)', async () => {
    const { c } = await session();
    const b = Bytes.alloc(32);
    const id = c.nextId();
    b.setU16(0, id);
    b.setU16(2, Command.DEVICE_GET_REGION_IO_FDS);
    b.setU32(4, 32);
    b.setU32(16, 16); // argsz
    b.setU32(24, 0); // index: BAR 0
    const r = await c.raw(b.u8);
    const p = new Bytes(r.payload);
    expect(p.u32(8)).toBe(0);
    expect(p.u32(12)).toBe(0);
  });

  it('DEVICE_GET_IRQ_INFO: one INTx, no MSI on the probe, ERR and REQ', async () => {
    const { c } = await session();
    expect(await c.irqInfo(Irq.INTX)).toMatchObject({ index: Irq.INTX, count: 1 });
    expect(await c.irqInfo(Irq.MSI)).toMatchObject({ index: Irq.MSI, count: 0 });
    expect(await c.irqInfo(Irq.ERR)).toMatchObject({ index: Irq.ERR, count: 1 });
    expect(await c.irqInfo(Irq.REQ)).toMatchObject({ index: Irq.REQ, count: 1 });
  });

  it('DEVICE_SET_IRQS: an INTx eventfd is signalled when the device raises its line', async () => {
    const { c } = await session();
    const intx = await c.bindIrqs(Irq.INTX);
    await c.write32(0, Reg.DOORBELL, 1);
    await intx.next();
    expect(intx.counts[0]).toBe(1);
    expect(await c.read32(0, Reg.DOORBELL)).toBe(1);
  });
});

describe('region access and reset', () => {
  it('REGION_READ/WRITE, answered and posted, in place and through the queue', async () => {
    const { s, c } = await session();
    expect(await c.read32(0, Reg.ID)).toBe(PROBE_ID);
    await c.write32(0, Reg.SCRATCH, 0xabcd);
    expect(s.device.state.scratch).toBe(0xabcd);
    await c.write32(0, Reg.SCRATCH, 0x1234, true);
    expect(await c.read32(0, Reg.SCRATCH)).toBe(0x1234);
    // Larger than the in-place path takes (4 KiB): the general path.
    expect((await c.regionRead(2, 0, 4096)).length).toBe(4096);
    expect(await c.config.read16(0)).toBe(0x1b36);
  });

  it("a device's refusal comes back as its errno (EBUSY), and the session goes on", async () => {
    const { c } = await session();
    await expect(c.write32(0, Reg.BUSY, 1)).rejects.toMatchObject({ errno: 16 });
    expect(await c.read32(0, Reg.ID)).toBe(PROBE_ID);
  });

  it('REGION_WRITE_MULTI: every write done, the count in the reply', async () => {
    const { s, c } = await session({}, { writeMultiple: true });
    const done = await c.writeMulti(
      [
        { region: 0, offset: Reg.SCRATCH, data: u32le(7) },
        { region: 2, offset: 0x40, data: Uint8Array.of(9, 9) },
      ],
      false,
    );
    expect(done).toBe(2);
    expect(s.device.state.scratch).toBe(7);
    expect([...(await c.regionRead(2, 0x40, 2))]).toEqual([9, 9]);
  });

  it('DEVICE_RESET: the declared state is back to its reset values', async () => {
    const { s, c } = await session();
    await c.write32(0, Reg.SCRATCH, 3);
    await c.reset();
    expect(s.device.state.scratch).toBe(0);
    expect(await c.read32(0, Reg.SCRATCH)).toBe(0);
  });
});

describe('DMA', () => {
  it('DMA_MAP with an fd: the device reads and writes the client memory directly', async () => {
    const { s, c } = await session();
    const ram = await c.addRam(0x10000, 0x2000);
    ram.bytes.set(Buffer.from('from the client'), 0x100);
    const read = await s.device.guest.read(0x10100, 15);
    expect(Buffer.from(read).toString()).toBe('from the client');
    await s.device.guest.write(0x11000, Buffer.from('from the device'));
    expect(Buffer.from(ram.bytes.subarray(0x1000, 0x100f)).toString()).toBe('from the device');
    expect(s.device.guest.mappings).toEqual([
      { address: 0x10000, size: 0x2000, flags: 3, hasFd: true },
    ]);
  });

  it('DMA_MAP without an fd: DMA_READ and DMA_WRITE go to the client as messages', async () => {
    const { s, c } = await session();
    const ram = await c.addRam(0x40000, 0x1000, { viaMessages: true });
    ram.bytes.set([1, 2, 3, 4], 0x10);
    expect([...(await s.device.guest.read(0x40010, 4))]).toEqual([1, 2, 3, 4]);
    await s.device.guest.write(0x40020, Uint8Array.of(5, 6));
    expect([...ram.bytes.subarray(0x20, 0x22)]).toEqual([5, 6]);
  });

  it('DMA through messages comes in pieces of the client max_data_xfer_size', async () => {
    const { s, c } = await session({}, { maxDataXferSize: 4096 });
    const ram = await c.addRam(0x40000, 0x4000, { viaMessages: true });
    const data = Uint8Array.from({ length: 0x3000 }, (_, i) => (i * 7) & 0xff);
    ram.bytes.set(data, 0x800);
    // The client refuses a DMA_READ or DMA_WRITE larger than the 4 KiB it offered.
    expect(Buffer.from(await s.device.guest.read(0x40800, 0x3000))).toEqual(Buffer.from(data));
    await s.device.guest.write(0x40400, data.slice().reverse());
    expect(Buffer.from(ram.bytes.subarray(0x400, 0x3400))).toEqual(
      Buffer.from(data.slice().reverse()),
    );
  });

  it('DMA_UNMAP one mapping, then ALL', async () => {
    const { s, c } = await session();
    await c.addRam(0x10000, 0x1000);
    await c.addRam(0x20000, 0x1000);
    await c.addRam(0x30000, 0x1000);
    await c.dmaUnmap(0x20000, 0x1000);
    expect(s.device.guest.mappings.map(m => m.address)).toEqual([0x10000, 0x30000]);
    await c.dmaUnmap(0, 0, { all: true });
    expect(s.device.guest.mappings).toEqual([]);
  });

  it('DIRTY_PAGES (v1): START, a device write, GET_BITMAP shows its page, STOP', async () => {
    const { s, c } = await session();
    await c.addRam(0x100000, 0x4000);
    const dirty = (flags: number, range?: Parameters<typeof encode.dirtyPages>[1]['range']) =>
      c.raw(encode.dirtyPages(c.nextId(), { argsz: range ? 48 : 8, flags, range }));
    await dirty(DirtyPagesFlag.START);
    expect(s.device.guest.logging).toBe(true);
    await s.device.guest.write(0x102000, Uint8Array.of(1));
    const r = await dirty(DirtyPagesFlag.GET_BITMAP, {
      iova: 0x100000,
      size: 0x4000,
      pgsize: 4096,
      bitmapSize: 8,
    });
    expect(new Bytes(r.payload).u64(40)).toBe(0b100);
    await dirty(DirtyPagesFlag.STOP);
    expect(s.device.guest.logging).toBe(false);
  });
});

describe('migration: DEVICE_FEATURE and MIG_DATA', () => {
  it('PROBE and GET MIGRATION: STOP_COPY and PRE_COPY', async () => {
    const { c } = await session();
    const probed = await c.feature(FeatureFlag.PROBE | FeatureFlag.GET | Feature.MIGRATION);
    expect(probed.flags & FeatureFlag.MASK).toBe(Feature.MIGRATION);
    expect(await c.migrationFlags()).toBe(MigrationFlag.STOP_COPY | MigrationFlag.PRE_COPY);
  });

  it('GET and SET MIG_DEVICE_STATE: RUNNING, STOP (the device stops), RUNNING', async () => {
    const { s, c } = await session();
    expect(await c.getState()).toBe(MigState.RUNNING);
    await c.setState(MigState.STOP);
    expect(await c.getState()).toBe(MigState.STOP);
    expect(s.device.running).toBe(false);
    expect(s.server.migration?.status()).toMatchObject({ state: 'STOP' });
    await c.setState(MigState.RUNNING);
    expect(s.device.running).toBe(true);
  });

  it('saves with MIG_DATA_READ and loads with MIG_DATA_WRITE into a second server', async () => {
    const src = await session();
    await src.c.write32(0, Reg.SCRATCH, 0x600d);
    await src.c.write32(0, Reg.DOORBELL, 1);
    await src.c.setState(MigState.STOP_COPY);
    const parts: Uint8Array[] = [];
    for (let d = await src.c.migDataRead(4096); d.length; d = await src.c.migDataRead(4096))
      parts.push(Uint8Array.from(d));
    expect(parts.length).toBeGreaterThan(0);
    const dst = await session();
    await dst.c.setState(MigState.RESUMING);
    for (const p of parts) await dst.c.migDataWrite(p);
    await dst.c.setState(MigState.RUNNING);
    expect(dst.s.device.state.scratch).toBe(0x600d);
    expect(dst.s.device.state.rings).toBe(1);
    expect(await dst.c.read32(0, Reg.SCRATCH)).toBe(0x600d);
  });

  it('without migration offered, DEVICE_FEATURE is refused (EINVAL)', async () => {
    const { c } = await session({ migration: false });
    const got = c.feature(FeatureFlag.GET | Feature.MIGRATION, new Uint8Array(0), 16);
    await expect(got).rejects.toMatchObject({ errno: 22 });
    expect(decodeReply.deviceInfo((await c.raw(encode.getInfo(c.nextId()))).payload)).toEqual({
      argsz: 16,
      flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
      numRegions: 9,
      numIrqs: 5,
    });
  });
});
