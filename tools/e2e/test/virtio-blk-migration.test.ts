// virtio-blk live-migrated with requests in flight, driven by the project's own VMM side: the
// test driver plays the guest's virtio driver over the client and keeps many writes in flight on
// two queues; vfu-migrate's migrate() moves the device between two server processes in the
// middle of the run (v2 and v1); the driver then goes on against the destination, as a guest
// does. Every request completes exactly once, OK, and the image holds what was written.
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync } from 'node:fs';
import { startServer, VirtioBlkDriver, pattern, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate } from '@vfu/vfu-migrate';
import { BlkStatus, BlkType, SECTOR } from '@vfu/device-virtio-blk';
import { MAX_QUEUES, Q, QREC } from '@vfu/virtio';
import { tempDir, until, control } from './helpers.ts';

const tmp = tempDir('vfu-vblk-mig-');
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

const BLOCK = 16 * 1024;
const DISK = 64 << 20;

let n = 0;
async function server(disk: string, role: string): Promise<[VfioUserClient, string]> {
  const ctl = tmp.path(`${role}${n}.ctl`);
  const s = await startServer(tmp.path(`${role}${n}.sock`), [
    '--device',
    'virtio-blk',
    '--disk',
    disk,
    '--size',
    String(DISK),
    '--queues',
    '2',
    '--on-disconnect',
    'keep',
    '--control',
    ctl,
  ]);
  servers.push(s);
  const c = await VfioUserClient.connect(s.socket);
  clients.push(c);
  return [c, ctl];
}

/** Requests a stopped device holds as taken and not yet returned (its state's bitmaps). */
async function inflightAt(ctl: string): Promise<number> {
  const hex: string = (await control(ctl, { get: 'state' })).state.virtioQueues;
  const b = Buffer.from(hex, 'hex');
  let bits = 0;
  for (let q = 0; q < MAX_QUEUES; q++)
    for (const byte of b.subarray(q * QREC + Q.INFLIGHT, (q + 1) * QREC))
      for (let v = byte; v; v &= v - 1) bits++;
  return bits;
}

describe.each(['v2', 'v1'] as const)(
  'virtio-blk migrates with requests in flight (%s)',
  protocol => {
    it('under a write-heavy run every request completes once, OK; the image matches', async () => {
      const disk = tmp.path(`disk${++n}.img`);
      const [src, srcCtl] = await server(disk, 'src');
      const [dst] = await server(disk, 'dst');
      const d = await VirtioBlkDriver.start(src, { queues: 2, queueSize: 64, maxData: BLOCK });
      const blocks = DISK / BLOCK;
      const data = (i: number) => pattern(BLOCK, i * 7919 + n);
      const statuses: number[] = [];
      const completions = new Array<number>(blocks).fill(0);
      let next = 0;
      let migrated = false;
      let afterMigration = 0;
      // Writers keep the queues full of distinct blocks until well after the switchover.
      const writer = async () => {
        while (next < blocks && !(migrated && afterMigration >= 256)) {
          const i = next++;
          const r = await d.request(i % 2, BlkType.OUT, (i * BLOCK) / SECTOR, { data: data(i) });
          statuses[i] = r.status;
          completions[i]++;
          if (migrated) afterMigration++;
        }
      };
      const writers = Array.from({ length: 40 }, writer);
      await until(() => next >= 200, 'writes under way');
      await d.mapInto(dst); // as QEMU maps guest RAM into the destination before loading state
      const rep = await migrate(src, dst, { protocol, maxIterations: 2 });
      expect(rep, rep.error).toMatchObject({
        outcome: 'completed',
        destination: { state: 'RUNNING' },
      });
      const outstanding = d.inFlight; // submitted to the source, not completed there
      const heldBySource = await inflightAt(srcCtl);
      migrated = true;
      await d.moveTo(dst);
      await Promise.all(writers);
      console.log(
        `${protocol}: ${next} writes, ${outstanding} outstanding at the switchover, ` +
          `${heldBySource} taken by the source and not returned (re-run by the destination)`,
      );
      expect(outstanding).toBeGreaterThan(0);
      expect(next).toBeLessThan(blocks); // the run went on well after the switchover
      expect(d.unexpected).toBe(0);
      for (let i = 0; i < next; i++) {
        expect(completions[i], `write ${i}`).toBe(1);
        expect(statuses[i], `write ${i}`).toBe(BlkStatus.OK);
      }
      expect((await d.request(0, BlkType.FLUSH, 0)).status).toBe(BlkStatus.OK);
      // The destination reads back what was written before, across and after the switchover.
      const image = readFileSync(disk);
      for (let i = 0; i < next; i++) {
        const want = Buffer.from(data(i));
        expect(Buffer.compare(image.subarray(i * BLOCK, (i + 1) * BLOCK), want), `block ${i}`).toBe(
          0,
        );
      }
      expect(image.subarray(next * BLOCK).every(b => b === 0)).toBe(true);
      for (const i of [0, Math.floor(next / 2), next - 1]) {
        const r = await d.request(1, BlkType.IN, (i * BLOCK) / SECTOR, { readLen: BLOCK });
        expect(Buffer.compare(Buffer.from(r.data), Buffer.from(data(i)))).toBe(0);
      }
      d.close();
    }, 120_000);

    it('requests held in flight by the source run again at the destination, once', async () => {
      const disk = tmp.path(`disk${++n}.img`);
      const [src, srcCtl] = await server(disk, 'src');
      const [dst] = await server(disk, 'dst');
      const d = await VirtioBlkDriver.start(src, { queues: 2, queueSize: 64, maxData: BLOCK });
      const data = (i: number) => pattern(BLOCK, i * 31 + 5);
      const write = (i: number) =>
        d.request(i % 2, BlkType.OUT, (i * BLOCK) / SECTOR, { data: data(i) });
      const before = await Promise.all([0, 1, 2, 3].map(write));
      expect(before.every(r => r.status === BlkStatus.OK)).toBe(true);
      // The source holds its next requests before their I/O: taken from the queues, not returned.
      expect((await control(srcCtl, { set: 'stall', value: 1 })).ok).toBe(true);
      const held = Array.from({ length: 24 }, (_, k) => write(4 + k));
      await until(async () => (await inflightAt(srcCtl)) === 24, 'the source to take 24');
      await d.mapInto(dst);
      const rep = await migrate(src, dst, { protocol });
      expect(rep, rep.error).toMatchObject({
        outcome: 'completed',
        destination: { state: 'RUNNING' },
      });
      expect(await inflightAt(srcCtl)).toBe(24); // the stopped source returned none of them
      await d.moveTo(dst);
      const done = await Promise.all(held);
      expect(done.every(r => r.status === BlkStatus.OK && r.usedLen === 1)).toBe(true);
      expect(d.unexpected).toBe(0);
      expect(d.inFlight).toBe(0);
      // The guest writes newer data over the blocks the source still holds requests for.
      const newer = (i: number) => pattern(BLOCK, i * 17 + 3);
      const rewrite = (i: number) =>
        d.request(i % 2, BlkType.OUT, (i * BLOCK) / SECTOR, { data: newer(i) });
      const rewritten = await Promise.all(Array.from({ length: 24 }, (_, k) => rewrite(4 + k)));
      expect(rewritten.every(r => r.status === BlkStatus.OK)).toBe(true);
      // Released, the stopped source must not start their file writes: they belong to a device
      // that was handed over (its I/O starts only while it runs), else stale data would land
      // over the newer. A new request completes once, at the destination.
      expect((await control(srcCtl, { set: 'stall', value: 0 })).ok).toBe(true);
      expect((await write(28)).status).toBe(BlkStatus.OK);
      expect(d.unexpected).toBe(0);
      expect((await d.request(1, BlkType.FLUSH, 0)).status).toBe(BlkStatus.OK);
      const want = (i: number) => Buffer.from(i >= 4 && i < 28 ? newer(i) : data(i));
      const stale = () => {
        const image = readFileSync(disk);
        return Array.from({ length: 29 }, (_, i) => i).filter(
          i => Buffer.compare(image.subarray(i * BLOCK, (i + 1) * BLOCK), want(i)) !== 0,
        );
      };
      // A stale write would land within milliseconds of the release; look for one for a while.
      const seen = await until(() => stale().length > 0, 'a stale write', 1000).catch(() => false);
      expect(seen).toBe(false);
      expect(stale()).toEqual([]);
      d.close();
    }, 60_000);
  },
);
