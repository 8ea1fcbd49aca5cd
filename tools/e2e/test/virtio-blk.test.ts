// virtio-blk served by a real server process, driven over its socket by a virtio driver that
// plays the guest (VirtioBlkDriver of @vfu/qemu-harness): identity and capabilities, many
// requests in flight on several queues, the image file compared on the host, every request
// type, a read-only disk, and hostile rings that set DEVICE_NEEDS_RESET while the device
// keeps serving.
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { startServer, VirtioBlkDriver, pattern, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { BlkStatus, BlkType, BlkFeature, SECTOR } from '@vfu/device-virtio-blk';
import { Desc, Feature, Status, type DriverQueue } from '@vfu/virtio';
import { Feature as Vfu, FeatureFlag, featureData, setPages } from '@vfu/protocol';
import { tempDir, until } from './helpers.ts';

const tmp = tempDir('vfu-vblk-');
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
const drivers: VirtioBlkDriver[] = [];
afterEach(async () => {
  drivers.splice(0).forEach(d => d.close());
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

let n = 0;
async function serve(args: string[]): Promise<{ client: VfioUserClient; disk: string }> {
  const disk = tmp.path(`disk${++n}.img`);
  const s = await startServer(tmp.path(`blk${n}.sock`), [
    '--device',
    'virtio-blk',
    '--disk',
    disk,
    ...args,
  ]);
  servers.push(s);
  const client = await VfioUserClient.connect(s.socket);
  clients.push(client);
  return { client, disk };
}

async function driver(c: VfioUserClient, o: Parameters<typeof VirtioBlkDriver.start>[1] = {}) {
  const d = await VirtioBlkDriver.start(c, o);
  drivers.push(d);
  return d;
}

describe('virtio-blk over a real socket', () => {
  it('is a modern virtio PCI device: ids, caps, features, capacity, GET_ID', async () => {
    const { client, disk } = await serve(['--size', '8M', '--queues', '2']);
    const id = await client.config.read32(0);
    expect(id).toBe((0x1042 << 16) | 0x1af4);
    expect(await client.config.read8(0x08)).toBeGreaterThanOrEqual(1); // revision
    const d = await driver(client, { queues: 2 });
    expect(d.has(Feature.VERSION_1) && d.has(Feature.RING_EVENT_IDX)).toBe(true);
    expect(d.has(BlkFeature.FLUSH) && d.has(BlkFeature.MQ) && d.has(BlkFeature.RO)).toBe(false);
    expect(d.has(BlkFeature.DISCARD) && d.has(BlkFeature.WRITE_ZEROES)).toBe(true);
    expect(await d.config32(0)).toBe((8 << 20) / SECTOR); // capacity, low half
    expect(await d.config32(4)).toBe(0);
    expect(statSync(disk).size).toBe(8 << 20);
    expect(statSync(disk).blocks).toBe(0); // created sparse
    const r = await d.request(0, BlkType.GET_ID, 0, { readLen: 20 });
    expect(r.status).toBe(BlkStatus.OK);
    expect(Buffer.from(r.data).toString().replace(/\0+$/, '')).toBe(`disk${n}.img`);
  });

  it('many requests in flight on two queues; read back; the image matches', async () => {
    const { client, disk } = await serve(['--size', '4M', '--queues', '2']);
    const d = await driver(client, { queues: 2, queueSize: 128, maxData: 32 * 1024 });
    const data = pattern(4 << 20, 7);
    const chunk = 32 * 1024;
    const writes: Promise<{ status: number }>[] = [];
    for (let off = 0; off < data.length; off += chunk) {
      const q = (off / chunk) % 2;
      writes.push(
        d.request(q, BlkType.OUT, off / SECTOR, { data: data.subarray(off, off + chunk) }),
      );
    }
    expect((await Promise.all(writes)).every(r => r.status === BlkStatus.OK)).toBe(true);
    expect(d.peakInFlight).toBeGreaterThan(8);
    expect((await d.request(1, BlkType.FLUSH, 0)).status).toBe(BlkStatus.OK);
    const reads = [];
    for (let off = 0; off < data.length; off += chunk)
      reads.push(d.request((off / chunk + 1) % 2, BlkType.IN, off / SECTOR, { readLen: chunk }));
    const back = Buffer.concat((await Promise.all(reads)).map(r => r.data));
    expect(Buffer.compare(back, Buffer.from(data))).toBe(0);
    expect(Buffer.compare(readFileSync(disk), Buffer.from(data))).toBe(0);
    expect(d.unexpected).toBe(0);
  });

  it('indirect descriptors and no event index; WRITE_ZEROES, DISCARD; bad requests', async () => {
    const { client, disk } = await serve(['--size', '1M']);
    const d = await driver(client, { indirect: true, eventIdx: false });
    expect(d.has(Feature.RING_INDIRECT_DESC)).toBe(true);
    const data = pattern(64 * 1024, 3);
    expect((await d.request(0, BlkType.OUT, 8, { data })).status).toBe(BlkStatus.OK);
    const seg = (sector: number, count: number, flags = 0) => {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(BigInt(sector), 0);
      b.writeUInt32LE(count, 8);
      b.writeUInt32LE(flags, 12);
      return b;
    };
    const wz = await d.request(0, BlkType.WRITE_ZEROES, 0, { data: seg(16, 8, 1) });
    expect(wz.status).toBe(BlkStatus.OK);
    expect((await d.request(0, BlkType.DISCARD, 0, { data: seg(40, 8) })).status).toBe(
      BlkStatus.OK,
    );
    const expected = Buffer.alloc(1 << 20);
    expected.set(data, 8 * SECTOR);
    expected.fill(0, 16 * SECTOR, 24 * SECTOR);
    expected.fill(0, 40 * SECTOR, 48 * SECTOR);
    const r = await d.request(0, BlkType.IN, 0, { readLen: 64 * 1024 });
    expect(Buffer.compare(Buffer.from(r.data), expected.subarray(0, 64 * 1024))).toBe(0);
    expect(Buffer.compare(readFileSync(disk), expected)).toBe(0);
    // Past the end, a reserved flag, an unknown type: refused with the right status.
    const last = (1 << 20) / SECTOR;
    expect((await d.request(0, BlkType.IN, last - 1, { readLen: 1024 })).status).toBe(
      BlkStatus.IOERR,
    );
    expect((await d.request(0, BlkType.OUT, 2 ** 52, { data })).status).toBe(BlkStatus.IOERR);
    expect((await d.request(0, BlkType.DISCARD, 0, { data: seg(0, 8, 1) })).status).toBe(
      BlkStatus.UNSUPP,
    );
    expect((await d.request(0, 99, 0)).status).toBe(BlkStatus.UNSUPP);
    expect(await d.status()).toBe(
      Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK,
    );
  });

  it('a read-only disk offers RO and fails writes; bad options exit with a reason', async () => {
    const disk = tmp.path('ro.img');
    writeFileSync(disk, pattern(64 * 1024, 9));
    const s = await startServer(tmp.path('ro.sock'), [
      '--device',
      'virtio-blk',
      '--disk',
      disk,
      '--read-only',
      'on',
    ]);
    servers.push(s);
    const client = await VfioUserClient.connect(s.socket);
    clients.push(client);
    const d = await driver(client);
    expect(d.has(BlkFeature.RO)).toBe(true);
    const w = await d.request(0, BlkType.OUT, 0, { data: new Uint8Array(512) });
    expect(w.status).toBe(BlkStatus.IOERR);
    const r = await d.request(0, BlkType.IN, 0, { readLen: 512 });
    expect(Buffer.compare(Buffer.from(r.data), Buffer.from(pattern(512, 9)))).toBe(0);
    await expect(
      startServer(tmp.path('bad.sock'), ['--device', 'virtio-blk', '--queues', '2']),
    ).rejects.toThrow(/needs --disk PATH/);
    await expect(
      startServer(tmp.path('bad.sock'), ['--device', 'virtio-blk', '--disk', disk, '--size', '1M']),
    ).rejects.toThrow(/only sizes a new or empty image/);
  });

  it('hostile rings: DEVICE_NEEDS_RESET, still serving, works after a reset', async () => {
    const { client } = await serve(['--size', '1M']);
    // A chain that loops; a buffer outside guest memory; an avail index far ahead; no header.
    const cases: ((q: DriverQueue, ram: number) => void)[] = [
      (q, ram) => {
        q.writeDesc(q.layout.desc, 0, { address: ram, len: 16, flags: Desc.NEXT, next: 1 });
        q.writeDesc(q.layout.desc, 1, { address: ram, len: 16, flags: Desc.NEXT, next: 0 });
        q.publish(0);
      },
      q => {
        q.writeDesc(q.layout.desc, 0, { address: 0x7000_0000, len: 4096, flags: 0, next: 0 });
        q.publish(0);
      },
      q => q.set16(q.layout.driver + 2, 1000),
      (q, ram) => q.add([{ address: ram, len: 1, write: true }]), // no request header
    ];
    let d = await driver(client);
    for (const [i, corrupt] of cases.entries()) {
      corrupt(d.queues[0], d.ram.address);
      d.kick(0);
      await until(async () => (await d.status()) & Status.DEVICE_NEEDS_RESET, 'NEEDS_RESET');
      // The device still answers its registers; a reset and a new initialization bring it back.
      expect((await d.status()) & Status.DRIVER_OK).toBe(Status.DRIVER_OK);
      d.close();
      d = await driver(client, { ramAddress: 0x1000000 * (i + 1) });
      const data = pattern(4096, i + 1);
      expect((await d.request(0, BlkType.OUT, 0, { data })).status).toBe(BlkStatus.OK);
      const r = await d.request(0, BlkType.IN, 0, { readLen: 4096 });
      expect(Buffer.compare(Buffer.from(r.data), Buffer.from(data))).toBe(0);
    }
  });
});

// The device writes guest memory through views of it (data of IN requests, status bytes, the
// used ring), not through GuestMemory.write: while DMA logging runs, those pages must be in
// DMA_LOGGING_REPORT too, or a migration's copy of guest RAM misses them (vfio-user.rst,
// VFIO_USER_DEVICE_FEATURE; include/uapi/linux/vfio.h, VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT).
describe('virtio-blk under DMA dirty logging', () => {
  it('reports the pages an IN request wrote: data, status and the used ring', async () => {
    const { client } = await serve(['--size', '1M']);
    const ramAt = 0x100000;
    const d = await driver(client, { ramAddress: ramAt });
    const data = pattern(8192, 11);
    expect((await d.request(0, BlkType.OUT, 0, { data })).status).toBe(BlkStatus.OK);
    const span = d.ram.size,
      pages = span / 4096;
    const report = async () => {
      const r = await client.feature(
        FeatureFlag.GET | Vfu.DMA_LOGGING_REPORT,
        featureData.loggingReport(ramAt, span, 4096),
        8 + 24 + Math.ceil(pages / 64) * 8,
      );
      return setPages(r.data.subarray(24), pages);
    };
    await client.feature(
      FeatureFlag.SET | Vfu.DMA_LOGGING_START,
      featureData.loggingStart(4096, [{ iova: ramAt, length: span }]),
    );
    expect(await report()).toEqual([]);
    // The driver takes its slots in turn: this second request has slot 1, 0x4000 past the
    // queue's base plus one slot (a 4 KiB header page, then 64 KiB of data): its status byte
    // is in page 0x15, its data in pages 0x16-0x17. The used ring is page 0x2.
    const r = await d.request(0, BlkType.IN, 0, { readLen: 8192 });
    expect(r.status).toBe(BlkStatus.OK);
    expect(Buffer.compare(Buffer.from(r.data), Buffer.from(data))).toBe(0);
    expect(await report()).toEqual([0x2, 0x15, 0x16, 0x17]);
    expect(await report()).toEqual([]); // read and cleared
  });
});
