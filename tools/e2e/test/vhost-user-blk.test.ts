// The same virtio-blk model served over vhost-user to a real QEMU 11.1.3 (vhost-user-blk-pci on
// memfd guest RAM) and driven by a real Linux guest's virtio_blk; then live-migrated by QEMU
// to a second QEMU with its own back-end process on the same image while the guest writes and
// reads. Guests run under TCG: the data is kept small.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.ts';
import { block, initrd, startBackend, startGuest } from './vhost-user-guest.ts';

const BLOCKS = 48;

/** The blocks [from, to) of the image, compared with pass `pass` of the guest's pattern. */
function wrongBlocks(image: string, from: number, to: number, pass: number, at = 0): number[] {
  const img = readFileSync(image);
  const bad: number[] = [];
  for (let n = from; n < to; n++)
    if (!img.subarray((at + n) * 4096, (at + n + 1) * 4096).equals(block(n, pass))) bad.push(n);
  return bad;
}

describe('vhost-user-blk: a real QEMU and a Linux guest on our back-end', () => {
  it('the guest sees the disk, writes a pattern (direct, buffered) and reads it back', async () => {
    const tmp = tempDir('vfu-vhost-');
    const image = tmp.path('disk.img');
    const be = await startBackend(tmp.path('blk.sock'), [
      '--device',
      'virtio-blk',
      '--disk',
      image,
      '--size',
      '16M',
    ]);
    // Blocks 0..47 written with O_DIRECT, 64..111 buffered then fsync'ed; caches dropped; read.
    initrd(
      tmp.path('initrd'),
      [
        'say size $(cat /sys/block/vda/size)',
        `n=0; while [ $n -lt ${BLOCKS} ]; do`,
        '  blk $n 1 >> /tmp/direct; blk $((n + 64)) 1 >> /tmp/buf; n=$((n + 1))',
        'done',
        'dd if=/tmp/direct of=/dev/vda bs=4096 oflag=direct 2>/dev/null || say dd-failed direct',
        'dd if=/tmp/buf of=/dev/vda bs=4096 seek=64 conv=fsync 2>/dev/null || say dd-failed buf',
        'echo 3 > /proc/sys/vm/drop_caches',
        'sum() { md5sum | cut -c1-32; }',
        `say direct $(sum < /tmp/direct) \\`,
        `  $(dd if=/dev/vda bs=4096 count=${BLOCKS} iflag=direct 2>/dev/null | sum)`,
        `say buffered $(sum < /tmp/buf) \\`,
        `  $(dd if=/dev/vda bs=4096 skip=64 count=${BLOCKS} 2>/dev/null | sum)`,
        'say done',
      ].join('\n'),
    );
    const guest = await startGuest(tmp.dir, 'guest', be.socket, tmp.path('initrd'));
    try {
      await guest.exited;
      const v = (k: string) => guest.lines.get(k);
      try {
        expect(v('done'), 'the guest ran to the end').toBeDefined();
        expect(v('size')).toEqual([String((16 << 20) / 512)]);
        const [wrote, read] = v('direct')!;
        expect(read).toBe(wrote);
        const [wroteB, readB] = v('buffered')!;
        expect(readB).toBe(wroteB);
        // The host sees in the image what the guest wrote.
        expect(wrongBlocks(image, 0, BLOCKS, 1)).toEqual([]);
        expect(wrongBlocks(image, 64, 64 + BLOCKS, 1)).toEqual([]);
      } catch (e) {
        console.error(guest.console().slice(-4000), be.output().slice(-2000));
        throw e;
      }
    } finally {
      await guest.quit();
      await be.stop();
      tmp.cleanup();
    }
  }, 180_000);
});
