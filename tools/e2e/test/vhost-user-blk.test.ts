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

  it('QEMU live-migrates the guest while it writes and reads; every block reads back', async () => {
    const tmp = tempDir('vfu-vhost-mig-');
    const image = tmp.path('disk.img');
    const src = await startBackend(tmp.path('src.sock'), [
      ...['--device', 'virtio-blk', '--disk', image, '--size', '16M', '--trace'],
    ]);
    const dst = await startBackend(tmp.path('dst.sock'), [
      ...['--device', 'virtio-blk', '--disk', image, '--trace'],
    ]);
    const N = 120;
    // Each block written with O_DIRECT and read straight back (the device writes guest RAM for
    // the read while the migration runs); then every block read again at the destination.
    initrd(
      tmp.path('initrd'),
      [
        'bad=0; n=0',
        `while [ $n -lt ${N} ]; do`,
        '  blk $n 1 > /tmp/w',
        '  dd if=/tmp/w of=/dev/vda bs=4096 seek=$n count=1 oflag=direct 2>/dev/null',
        '  dd if=/dev/vda of=/tmp/r bs=4096 skip=$n count=1 iflag=direct 2>/dev/null',
        '  cmp -s /tmp/w /tmp/r || { bad=$((bad + 1)); say mismatch $n; }',
        '  n=$((n + 1)); [ $n = 20 ] && say migrate-now',
        'done',
        'say written',
        `n=0; while [ $n -lt ${N} ]; do`,
        '  blk $n 1 > /tmp/w',
        '  dd if=/dev/vda of=/tmp/r bs=4096 skip=$n count=1 iflag=direct 2>/dev/null',
        '  cmp -s /tmp/w /tmp/r || { bad=$((bad + 1)); say final-mismatch $n; }',
        '  n=$((n + 1))',
        'done',
        'say bad $bad',
        'say done',
      ].join('\n'),
    );
    const uri = `unix:${tmp.path('migration.sock')}`;
    const a = await startGuest(tmp.dir, 'source', src.socket, tmp.path('initrd'));
    const b = await startGuest(tmp.dir, 'destination', dst.socket, tmp.path('initrd'), uri);
    try {
      await a.line('migrate-now');
      await a.qmp.execute('migrate', { uri });
      let status = '';
      for (;;) {
        const q = await a.qmp.execute('query-migrate');
        status = String(q.status);
        if (!['setup', 'active', 'device', 'pre-switchover'].includes(status)) break;
        await new Promise(r => setTimeout(r, 100));
      }
      await b.exited;
      const v = (k: string) => b.lines.get(k);
      try {
        expect(status).toBe('completed');
        // The guest went on at the destination: it finished there, not at the source.
        expect(a.lines.has('done')).toBe(false);
        expect(v('done'), 'the guest ran to the end at the destination').toBeDefined();
        expect(v('bad')).toEqual(['0']);
        expect(wrongBlocks(image, 0, N, 1)).toEqual([]);
        // The source back-end logged its writes to guest memory for QEMU while it migrated.
        expect(src.output()).toMatch(/<- SET_LOG_BASE .*fds=1/);
        expect(src.output()).toMatch(/<- GET_VRING_BASE/);
      } catch (e) {
        console.error(a.console().slice(-3000), b.console().slice(-3000));
        console.error(src.output().slice(-3000), dst.output().slice(-3000));
        throw e;
      }
    } finally {
      await a.quit();
      await b.quit();
      await src.stop();
      await dst.stop();
      tmp.cleanup();
    }
  }, 300_000);
});
