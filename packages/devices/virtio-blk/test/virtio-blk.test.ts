// virtio-blk in-process, through @vfu/pci/testing: a guest's virtio driver played over the
// harness's RAM (one split queue), requests served from a real image file: what a write does to
// the file, what a read brings back, and that a stopped device returns nothing until it runs.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceHarness } from '@vfu/pci/testing';
import { Common, DriverQueue, Layout, Status } from '@vfu/virtio';
import virtioBlk, { BlkStatus, BlkType, SECTOR } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'vfu-vblk-unit-'));
let h: DeviceHarness<typeof virtioBlk.state> | undefined;
afterEach(() => h?.release());
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Guest RAM: the queue's three areas, then a request's header, data and status byte.
const DESC = 0x0,
  DRIVER = 0x1000,
  DEVICE = 0x2000,
  HEADER = 0x3000,
  DATA = 0x4000,
  STATUS = 0x8000;
const VERSION_1_HI = 1; // feature bit 32: the second 32-bit feature word's bit 0

/** The device with one queue of 16 set up as a driver does (§3.1.1), and its disk file. */
function start(name: string) {
  const disk = join(dir, name);
  h = new DeviceHarness(virtioBlk, { options: { disk, size: '1M' } });
  h.enableBusMaster();
  const bar = h.bar(0);
  bar.write8(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER);
  bar.write32(Common.DRIVER_FEATURE_SELECT, 1);
  bar.write32(Common.DRIVER_FEATURE, VERSION_1_HI);
  bar.write8(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  const layout = { size: 16, desc: DESC, driver: DRIVER, device: DEVICE };
  bar.write16(Common.QUEUE_SELECT, 0);
  bar.write16(Common.QUEUE_SIZE, layout.size);
  bar.write64(Common.QUEUE_DESC, layout.desc);
  bar.write64(Common.QUEUE_DRIVER, layout.driver);
  bar.write64(Common.QUEUE_DEVICE, layout.device);
  bar.write16(Common.QUEUE_ENABLE, 1);
  bar.write8(Common.DEVICE_STATUS, 0xf & ~Status.FAILED);
  const queue = new DriverQueue({ address: 0, bytes: h.ram }, layout);
  return { disk, bar, queue };
}

type Started = ReturnType<typeof start>;

/** Makes one request available and notifies: header, then data out or room for data in. */
function submit({ bar, queue }: Started, type: number, sector: number, data: Uint8Array | number) {
  const header = new DataView(h!.ram.buffer, h!.ram.byteOffset + HEADER, 16);
  header.setUint32(0, type, true);
  header.setBigUint64(8, BigInt(sector), true);
  const write = typeof data === 'number';
  const len = write ? data : data.length;
  if (!write) h!.ram.set(data, DATA);
  h!.ram[STATUS] = 0xff;
  const head = queue.add([
    { address: HEADER, len: 16 },
    { address: DATA, len, write },
    { address: STATUS, len: 1, write: true },
  ]);
  queue.publish(head);
  bar.write16(Layout.NOTIFY, 0);
}

/** Waits (bounded) for the device to return the request; its status byte. */
async function completion({ queue }: Started): Promise<number> {
  for (let tries = 0; tries < 2000; tries++) {
    if (queue.takeUsed().length) return h!.ram[STATUS];
    await new Promise(r => setTimeout(r, 1));
  }
  throw new Error('the device returned no request within 2000 polls');
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => i * seed);

describe('virtio-blk in the harness', () => {
  it('writes land in the image where the sector says; reads bring them back', async () => {
    const s = start('rw.img');
    const data = pattern(2 * SECTOR, 7);
    submit(s, BlkType.OUT, 3, data);
    expect(await completion(s)).toBe(BlkStatus.OK);
    const image = readFileSync(s.disk);
    expect(Buffer.compare(image.subarray(3 * SECTOR, 5 * SECTOR), data)).toBe(0);
    h!.ram.fill(0, DATA, DATA + data.length);
    submit(s, BlkType.IN, 3, data.length);
    expect(await completion(s)).toBe(BlkStatus.OK);
    expect([...h!.ram.subarray(DATA, DATA + data.length)]).toEqual([...data]);
    submit(s, BlkType.OUT, 2048, pattern(SECTOR, 3)); // past the end of a 1 MiB disk
    expect(await completion(s)).toBe(BlkStatus.IOERR);
  });

  it('a stopped device returns nothing; the request completes once it runs again', async () => {
    const s = start('stopped.img');
    h!.stop();
    submit(s, BlkType.OUT, 0, pattern(SECTOR, 5));
    await h!.settled();
    expect(s.queue.takeUsed()).toEqual([]);
    expect(h!.ram[STATUS]).toBe(0xff); // no status written while stopped
    h!.run();
    expect(await completion(s)).toBe(BlkStatus.OK);
    expect(Buffer.compare(readFileSync(s.disk).subarray(0, SECTOR), pattern(SECTOR, 5))).toBe(0);
  });
});
