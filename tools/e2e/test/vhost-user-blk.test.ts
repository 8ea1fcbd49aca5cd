// The same virtio-blk model served over vhost-user to a real QEMU 11.1.3 (vhost-user-blk-pci on
// memfd guest RAM) and driven by a real Linux guest's virtio_blk; then live-migrated by QEMU
// to a second QEMU with its own back-end process on the same image while the guest writes and
// reads. Guests run under TCG: the data is kept small.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir, until } from './helpers.ts';
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
    // 8 MiB of pseudo-random data the host puts in the image, read by the guest into its page
    // cache after QEMU has sent every page once.
    const CACHED_MB = 8;
    const cached = randomBytes(CACHED_MB << 20);
    writeFileSync(image, cached, { flag: 'r+' });
    const LOOP = 3072; // blocks 3072..3583: written and read back, one per step, all along
    const WINDOW = 512;
    const MARK = 4000; // the host's word to the guest, in the image: "go" then "migrated"
    const mark = (word: string) => {
      const fd = openSync(image, 'r+');
      writeSync(fd, Buffer.from(word.padEnd(8, '-')), 0, 8, MARK * 4096);
      closeSync(fd);
    };
    initrd(
      tmp.path('initrd'),
      [
        'echo 3 > /proc/sys/vm/drop_caches',
        // Held open all along: the last close of a block device drops its page cache (Linux's
        // blkdev_put), and the cached blocks below must stay in it until the destination.
        'exec 3< /dev/vda',
        'bad=0; k=0',
        // Step k: block LOOP + k % WINDOW, pass k / WINDOW + 1, written with O_DIRECT and read
        // straight back (the device DMAs into guest RAM), all along the migration.
        'step() {',
        `  b=$((${LOOP} + k % ${WINDOW})); blk $b $((k / ${WINDOW} + 1)) > /tmp/w`,
        '  dd if=/tmp/w of=/dev/vda bs=4096 seek=$b count=1 oflag=direct 2>/dev/null',
        '  dd if=/dev/vda of=/tmp/r bs=4096 skip=$b count=1 iflag=direct 2>/dev/null',
        '  cmp -s /tmp/w /tmp/r || { bad=$((bad + 1)); say mismatch $k; }',
        '  k=$((k + 1))',
        '}',
        `word() { dd if=/dev/vda bs=4096 skip=${MARK} count=1 iflag=direct 2>/dev/null |`,
        '  head -c 8; }',
        // Memory the guest CPU keeps writing, so that QEMU always has pages left to send.
        '(while :; do echo $k > /tmp/spin; done) & spin=$!',
        'say migrate-now',
        'while [ "$(word)" != go------ ]; do step; done',
        // Every page has been sent once: these reads DMA into page-cache pages QEMU may have
        // sent already; the back-end's dirty log is how QEMU learns to send them again.
        `dd if=/dev/vda of=/dev/null bs=65536 count=${CACHED_MB * 16} 2>/dev/null`,
        'say cached',
        'while [ "$(word)" != migrated ]; do step; done',
        'kill $spin',
        // At the destination: the cached blocks read from the page cache, no device access.
        `say cached-sum $(dd if=/dev/vda bs=65536 count=${CACHED_MB * 16} 2>/dev/null | md5sum)`,
        'step; step',
        'say steps $k',
        'say bad $bad',
        'say done',
      ].join('\n'),
    );
    const uri = `unix:${tmp.path('migration.sock')}`;
    const a = await startGuest(tmp.dir, 'source', src.socket, tmp.path('initrd'));
    const b = await startGuest(tmp.dir, 'destination', dst.socket, tmp.path('initrd'), uri);
    const status = async () => (await a.qmp.execute('query-migrate')) as Record<string, any>;
    /** Polls QMP's migration status (every 50 ms, up to 4 minutes) until `done` says so. */
    const migration = (done: (s: Record<string, any>) => boolean, what: string) =>
      until(
        async () => {
          const s = await status();
          if (s.status === 'failed' || s.status === 'cancelled')
            throw new Error(`migration ${s.status}: ${JSON.stringify(s)}`);
          return done(s) ? s : null;
        },
        what,
        240_000,
        50,
      );
    try {
      await a.line('migrate-now');
      // Held back: at 8 MiB/s a 1 ms downtime allows 8 KiB, less than the guest keeps dirtying.
      await a.qmp.execute('migrate-set-parameters', {
        'downtime-limit': 1,
        'max-bandwidth': 8 << 20,
      });
      await a.qmp.execute('migrate', { uri });
      await migration(s => (s.ram?.['dirty-sync-count'] ?? 0) >= 2, 'every page sent once');
      mark('go');
      // At the source while the migration is held back; at the destination should QEMU have
      // converged all the same (the data is checked either way).
      await Promise.race([a.line('cached'), b.line('cached')]);
      await a.qmp.execute('migrate-set-parameters', {
        'downtime-limit': 2000,
        'max-bandwidth': 1 << 30,
      });
      const end = await migration(
        s => !['setup', 'active', 'device'].includes(s.status),
        'the migration to end',
      );
      mark('migrated');
      await b.exited;
      const v = (k: string) => b.lines.get(k);
      try {
        expect(end.status).toBe('completed');
        // The guest went on at the destination: it finished there, not at the source.
        expect(a.lines.has('done')).toBe(false);
        expect(v('done'), 'the guest ran to the end at the destination').toBeDefined();
        expect(v('bad')).toEqual(['0']);
        // What the guest read from its page cache at the destination is what the device wrote.
        expect(v('cached-sum')?.[0]).toBe(createHash('md5').update(cached).digest('hex'));
        // Every step's block holds what its last step wrote.
        const steps = Number(v('steps')![0]);
        expect(steps).toBeGreaterThan(2);
        const img = readFileSync(image);
        const wrong: number[] = [];
        for (let k = Math.max(0, steps - WINDOW); k < steps; k++) {
          const n = LOOP + (k % WINDOW);
          const want = block(n, Math.floor(k / WINDOW) + 1);
          if (!img.subarray(n * 4096, (n + 1) * 4096).equals(want)) wrong.push(n);
        }
        expect(wrong).toEqual([]);
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
