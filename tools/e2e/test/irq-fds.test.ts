// The cause of the ECONNREFUSED a live fuzz run once met after 1,263 sessions: a SET_IRQS that
// handed the server a memfd as INTx's unmask (resample) fd. The server polled it, and koffi's
// poll aborts the process on an fd epoll refuses (FATAL ERROR, SIGABRT); the socket file stayed
// behind, so the next client's connect was refused. Interrupt fds must now be eventfds (EINVAL
// otherwise) and no fd epoll refuses is polled at all.
import { describe, it, expect } from 'vitest';
import { openSync, closeSync, writeFileSync } from 'node:fs';
import { VfioUserClient } from '@vfu/client';
import { RemoteError } from '@vfu/transport';
import {
  eventfdCreate,
  FdWatcher,
  memfdCreate,
  NativeError,
  OwnedFd,
  socketPair,
} from '@vfu/native';
import { Errno, Irq, IrqSetFlag as I } from '@vfu/protocol';
import { soakServerForSuite } from './helpers.ts';

/** fds of every kind a client can send that are not eventfds. */
function notEventfds(dir: string): { what: string; fd: OwnedFd }[] {
  writeFileSync(`${dir}/file`, 'x');
  const [a, b] = socketPair();
  b.close();
  return [
    { what: 'memfd', fd: memfdCreate('not-an-eventfd', 4096) },
    { what: 'regular file', fd: new OwnedFd(openSync(`${dir}/file`, 'r')) },
    { what: '/dev/null', fd: new OwnedFd(openSync('/dev/null', 'r')) },
    { what: 'socket', fd: a },
  ];
}

describe('interrupt fds that are not eventfds', () => {
  const live = soakServerForSuite();
  const tmp = live.tmp;

  it('SET_IRQS with a memfd, file, /dev/null or socket: EINVAL; the server serves on', async () => {
    const cases = [
      { index: Irq.INTX, flags: I.DATA_EVENTFD | I.ACTION_UNMASK }, // the resample fd: polled
      { index: Irq.INTX, flags: I.DATA_EVENTFD | I.ACTION_TRIGGER }, // the trigger: written
      { index: Irq.MSI, flags: I.DATA_EVENTFD | I.ACTION_TRIGGER },
    ];
    for (const { what, fd } of notEventfds(tmp.dir)) {
      for (const { index, flags } of cases) {
        const c = await VfioUserClient.connect(live.server.socket);
        const refused = await c.setIrqs(index, flags, 0, 1, { fds: [fd.fd] }).catch(e => e);
        expect(refused, `${what}, index ${index}, flags 0x${flags.toString(16)}`).toBeInstanceOf(
          RemoteError,
        );
        expect((refused as RemoteError).errno).toBe(Errno.EINVAL);
        c.close();
        await live.server.idle();
        expect(live.server.exit).toBeNull();
      }
      fd.close();
    }
    // Eventfds are still taken, and the server still serves the next client.
    const c = await VfioUserClient.connect(live.server.socket);
    const e = eventfdCreate();
    await c.setIrqs(Irq.INTX, I.DATA_EVENTFD | I.ACTION_UNMASK, 0, 1, { fds: [e.fd] });
    await c.setIrqs(Irq.INTX, I.DATA_EVENTFD | I.ACTION_TRIGGER, 0, 1, { fds: [e.fd] });
    c.close();
    e.close();
    await live.server.idle();
    await live.server.check();
  });

  it('watching an fd epoll refuses throws a NativeError (it used to abort the process)', () => {
    const mem = memfdCreate('not-pollable', 4096);
    const file = openSync(tmp.path('file2'), 'w');
    try {
      for (const fd of [mem.fd, file]) {
        const thrown = (() => {
          try {
            new FdWatcher(fd, () => {}).close();
            return null;
          } catch (e) {
            return e;
          }
        })();
        expect(thrown).toBeInstanceOf(NativeError);
        expect((thrown as NativeError).message).toMatch(/EPERM/);
      }
    } finally {
      mem.close();
      closeSync(file);
    }
  });
});
