// vfu-migrate against a server that lies about its v1 migration region: a real edu server behind a
// proxy that rewrites its answers (fixtures/lying-proxy.mjs), as the source or the destination.
// The driver must neither die nor hang; what it cannot trust it does without, or it fails with
// a reason and leaves the source running and the destination not.
import { describe, it, expect, afterEach } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate } from '@vfu/vfu-migrate';
import { Reg as Edu } from '@vfu/device-edu';
import { tempDir, until } from './helpers.ts';

const tmp = tempDir();
const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
const proxies: ChildProcess[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  proxies.splice(0).forEach(p => p.kill());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

let n = 0;
/**
 * A source and a destination edu, one of them (`behind`) behind a lying proxy; clients of both
 * (the one behind the proxy through it); the lies told.
 */
async function setUp(mode: string, behind: 'source' | 'destination' = 'source') {
  const args = ['--device', 'edu', '--memory', '1M', '--on-disconnect', 'keep'];
  const src = await startServer(tmp.path(`src${++n}.sock`), args);
  const dst = await startServer(tmp.path(`dst${n}.sock`), args);
  servers.push(src, dst);
  const sock = tmp.path(`lying${n}.sock`);
  const upstream = behind === 'source' ? src.socket : dst.socket;
  const fixture = join(import.meta.dirname, 'fixtures/lying-proxy.mjs');
  const proxy = spawn(process.execPath, [fixture, sock, upstream, mode], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  proxies.push(proxy);
  let out = '';
  proxy.stdout!.on('data', d => (out += d));
  await until(() => out.includes('"listening"'), `${mode} proxy listening`);
  const a = await VfioUserClient.connect(behind === 'source' ? sock : src.socket);
  const b = await VfioUserClient.connect(behind === 'destination' ? sock : dst.socket);
  clients.push(a, b);
  const lies = () =>
    out
      .split('\n')
      .filter(line => line.includes('"lie"'))
      .map(line => JSON.parse(line).lie as string);
  return { a, b, lies };
}

describe('vfu-migrate with a v1 server that lies', () => {
  // A window fd without seals could be truncated under the driver's mapping (SIGBUS, the driver
  // dies): the driver does not map it and moves the data in messages. The proxy empties the file
  // once the first chunk is announced, so a driver that mapped it would die here.
  it('an unsealed data window is not mapped: the data moves in messages', async () => {
    const { a, b, lies } = await setUp('unsealed-window');
    await a.write32(0, Edu.LIVENESS, 0x5eed1e55);
    const rep = await migrate(a, b, { protocol: 'v1', maxIterations: 2 });
    expect(rep, rep.error).toMatchObject({
      outcome: 'completed',
      dataPath: 'messages',
      destination: { state: 'RUNNING' },
    });
    expect(lies()).toEqual(expect.arrayContaining(['unsealed window', 'window emptied']));
    expect(await b.read32(0, Edu.LIVENESS)).toBe(~0x5eed1e55 >>> 0); // edu answers the inverse
  });

  // The same as a destination: the driver would write each chunk into the mapping.
  it('an unsealed destination window is not mapped: the data moves in messages', async () => {
    const { a, b, lies } = await setUp('unsealed-window', 'destination');
    await a.write32(0, Edu.LIVENESS, 0xdea110c8);
    const rep = await migrate(a, b, { protocol: 'v1', maxIterations: 2 });
    expect(rep, rep.error).toMatchObject({
      outcome: 'completed',
      destination: { state: 'RUNNING' },
    });
    expect(lies()).toEqual(expect.arrayContaining(['unsealed window', 'window emptied']));
    expect(await b.read32(0, Edu.LIVENESS)).toBe(~0xdea110c8 >>> 0);
  });

  // A chunk said to lie past the region's end: the driver says so and stops. The source runs on
  // with its state; the destination is reset, as a fresh device, not a second copy.
  it('a data window past the region fails with a reason; the source runs on', async () => {
    const { a, b, lies } = await setUp('window-outside');
    await a.write32(0, Edu.LIVENESS, 0x0ff51de);
    const fresh = await b.read32(0, Edu.LIVENESS);
    const rep = await migrate(a, b, { protocol: 'v1', maxIterations: 2 });
    expect(rep.outcome).toBe('failed');
    expect(rep.error).toMatch(/v1 data window .* lies outside its \d+-byte migration region/);
    expect(lies()).toContain('data_offset outside the region');
    expect(rep.source.state).toBe('RUNNING');
    expect(await a.read32(0, Edu.LIVENESS)).toBe(~0x0ff51de >>> 0);
    expect(await b.read32(0, Edu.LIVENESS)).toBe(fresh);
  });
});
