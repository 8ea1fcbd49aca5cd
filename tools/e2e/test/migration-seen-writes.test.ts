// Device memory written only through REGION_WRITE (no client maps it): the source's server
// sees every write and its scan for changed pages compares only the blocks written. Every
// write made during pre-copy must reach the destination, v2 and v1.
import { describe, it, expect, afterEach } from 'vitest';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate } from '@vfu/vfu-migrate';
import { tempDir } from './helpers.ts';

const tmp = tempDir();
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

const MEM = 4 << 20,
  BAR = 2;

async function server(name: string): Promise<VfioUserClient> {
  const args = ['--device', 'edu', '--memory', '4M', '--on-disconnect', 'keep'];
  const s = await startServer(tmp.path(name), args);
  servers.push(s);
  const c = await VfioUserClient.connect(s.socket);
  clients.push(c);
  return c;
}

/** Writes 8 bytes at pseudo-random places of BAR 2 through REGION_WRITE, mirrored in `copy`. */
function writer(c: VfioUserClient, copy: Uint8Array) {
  let seq = 1;
  return async (): Promise<number> => {
    for (let i = 0; i < 16; i++) {
      const at = ((seq * 2654435761) >>> 0) % (MEM - 8);
      const data = new Uint8Array(8).fill(seq++ & 0xff);
      await c.regionWrite(BAR, at, data);
      copy.set(data, at);
    }
    return 16;
  };
}

describe.each(['v2', 'v1'] as const)('memory written through REGION_WRITE, over %s', protocol => {
  it('every write made during pre-copy is in the destination', async () => {
    const src = await server(`seen-src-${protocol}.sock`),
      dst = await server(`seen-dst-${protocol}.sock`);
    const copy = new Uint8Array(MEM);
    const write = writer(src, copy);
    await write(); // before the migration too
    const r = await migrate(src, dst, {
      protocol,
      workload: write,
      downtimeLimitMs: 0, // never fits: every round runs, each after a workload round
      maxIterations: 4,
    });
    expect(r.outcome, r.error).toBe('completed');
    expect(r.workloadWrites).toBe(4 * 16);
    const got = new Uint8Array(MEM);
    for (let off = 0; off < MEM; off += 1 << 20)
      got.set(await dst.regionRead(BAR, off, 1 << 20), off);
    expect(Buffer.compare(got, copy)).toBe(0);
  });
});
