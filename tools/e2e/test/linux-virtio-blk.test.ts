// A real Linux guest (Debian's kernel) drives virtio-blk with its own virtio_pci and virtio_blk
// drivers: /dev/vda of the right size, dd patterns direct and buffered read back in the guest
// and compared with the image file on the host, an ext2 file system written on one boot and
// read on the next. Booted under TCG when KVM does not work (slow): the data stays small.
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startServer, bootGuest, type GuestRun } from '@vfu/qemu-harness';
import { tempDir } from './helpers.ts';

const MiB = 1 << 20;
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

async function boot(disk: string, socket: string, phase: number): Promise<GuestRun> {
  const server = await startServer(socket, [
    '--device',
    'virtio-blk',
    '--disk',
    disk,
    '--size',
    '32M',
    '--queues',
    '2',
  ]);
  try {
    const run = await bootGuest([{ socket, addr: '4.0' }], async () => {}, 200_000, {
      init: 'init-virtio-blk',
      modules: [
        'virtio',
        'virtio_ring',
        'virtio_pci_modern_dev',
        'virtio_pci_legacy_dev',
        'virtio_pci',
        'virtio_blk',
        'crc16',
        'crc32c_generic',
        'mbcache',
        'jbd2',
        'ext4',
      ],
      append: `vfu_phase=${phase}`,
    });
    console.log(`boot ${phase} under ${run.accel}${run.notes.length ? ` (${run.notes})` : ''}`);
    if (process.env.VFU_SHOW_GUEST) console.log(run.console);
    return run;
  } finally {
    await server.stop();
  }
}

describe('a Linux guest with virtio_blk', () => {
  it('sees /dev/vda, writes and reads patterns and a file system across two boots', async () => {
    const tmp = tempDir();
    const disk = tmp.path('disk.img');
    try {
      const first = await boot(disk, tmp.path('blk.sock'), 1);
      const v = (k: string) => first.lines.get(k);
      try {
        expect(v('done'), 'the first boot ran to the end').toBeDefined();
        expect(v('insmod-failed')).toBeUndefined();
        expect(v('blk-size')).toEqual([String((32 * MiB) / 512)]);
        expect(v('blk-driver')).toEqual(['virtio_blk']);
        const [direct, directBack] = v('pattern-direct')!;
        const [buffered, bufferedBack] = v('pattern-buffered')!;
        expect(directBack).toBe(direct);
        expect(bufferedBack).toBe(buffered);
        expect(direct).not.toBe(buffered);
        // The host reads the image: the guest's bytes are where it put them.
        const image = readFileSync(disk);
        expect(md5(image.subarray(16 * MiB, 18 * MiB))).toBe(direct);
        expect(md5(image.subarray(20 * MiB, 22 * MiB))).toBe(buffered);
        expect(v('mkfs-failed') ?? v('mount-failed') ?? v('umount-failed')).toBeUndefined();
        expect(v('fs-write')).toEqual([direct]);
        expect(image.readUInt16LE(1024 + 56)).toBe(0xef53); // the ext2 superblock's magic
      } catch (e) {
        console.error(first.console.slice(-6000));
        throw e;
      }
      const second = await boot(disk, tmp.path('blk2.sock'), 2);
      const w = (k: string) => second.lines.get(k);
      try {
        expect(w('done'), 'the second boot ran to the end').toBeDefined();
        expect(w('mount-failed')).toBeUndefined();
        expect(w('fs-read')).toEqual([v('fs-write')![0], 'written_on_the_first_boot']);
        expect(w('pattern-buffered-again')).toEqual([v('pattern-buffered')![0]]);
      } catch (e) {
        console.error(second.console.slice(-6000));
        throw e;
      }
    } finally {
      tmp.cleanup();
    }
  }, 450_000);
});
