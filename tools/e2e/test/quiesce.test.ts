// A stop is answered once the device has quiesced: I/O a model started (DeviceContext.io) while
// running finishes before the answer to a state change that stops the device, and I/O asked for
// while stopped starts only when the device runs again (include/uapi/linux/vfio.h: a stopped
// device changes nothing outside itself). Over a real socket to a real server process.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { MigState, Region } from '@vfu/protocol';
import { peerHasReadAll } from '@vfu/native';
import { control, tempDir, until, writeModel } from './helpers.ts';

const tmp = tempDir('vfu-quiesce-');
afterAll(() => tmp.cleanup());

// Writing BAR 0 offset 0 starts one piece of I/O that lasts until the `release` control ends
// every piece under way; offset 0 reads how many started, offset 4 how many finished.
const MODEL = `import { defineDevice, bar, registers, u32 } from '@vfu/pci';
const underWay = [];
export default defineDevice({
  id: 'slow-io',
  version: 1,
  description: 'I/O that lasts until released',
  pci: { vendor: 0x1b36, device: 0x01fe, classCode: 0xff0000 },
  state: { started: u32, finished: u32 },
  bars: dev => ({
    0: bar('mem32', registers(4096, dev.state, [
      { offset: 0, width: 4, read: s => s.started, write: s => {
        void dev.io(() => {
          s.started++;
          return new Promise(done => underWay.push(done));
        }).then(() => { s.finished++; });
      } },
      { offset: 4, width: 4, read: s => s.finished },
    ])),
  }),
  controls: { release: () => { for (const done of underWay.splice(0)) done(); } },
});
`;
let model = '';
beforeAll(() => {
  model = writeModel(tmp.dir, 'slow-io.mjs', MODEL);
});

const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

describe('a stop waits for the I/O under way', () => {
  it('answers STOP after the I/O finished; I/O asked for while stopped waits for RUNNING', {
    timeout: 60_000,
  }, async () => {
    const ctl = tmp.path('slow.ctl');
    const s = await startServer(tmp.path('slow.sock'), ['--device', model, '--control', ctl]);
    servers.push(s);
    const c = await VfioUserClient.connect(s.socket);
    clients.push(c);
    const migrationState = async () => (await control(ctl, { get: 'migration' })).migration.state;
    const release = () => control(ctl, { set: 'release', value: 1 });

    await c.write32(Region.BAR0, 0, 1);
    expect(await c.read32(Region.BAR0, 0)).toBe(1);
    // Each answer is noted in its request's first callback: when both come in one read, the
    // callbacks run in the order the answers came (a callback chained later would run last).
    const order: string[] = [];
    const stop = c.setState(MigState.STOP).then(() => {
      order.push('stop');
    });
    await until(async () => (await migrationState()) === 'STOP', 'the server to take STOP');
    expect(order).toEqual([]); // the device is stopped, but its write is still under way
    // A request sent now waits behind the stop: its answer comes after the stop's. The server
    // has read it (nothing left unread on the socket) before the I/O is released.
    const read = c.read32(Region.BAR0, 4).then(v => {
      order.push('read');
      return v;
    });
    await until(() => peerHasReadAll(c.conn.fd), 'the server to read the request');
    expect((await release()).ok).toBe(true);
    await stop;
    expect(await read).toBe(1); // read after the I/O finished
    expect(order).toEqual(['stop', 'read']);
    expect(await c.read32(Region.BAR0, 4)).toBe(1);

    await c.write32(Region.BAR0, 0, 1); // stopped: the I/O waits
    expect(await c.read32(Region.BAR0, 0)).toBe(1);
    await c.setState(MigState.RUNNING);
    expect(await c.read32(Region.BAR0, 0)).toBe(2);
    expect((await release()).ok).toBe(true);
    await until(async () => (await c.read32(Region.BAR0, 4)) === 2, 'the second I/O to finish');
  });
});
