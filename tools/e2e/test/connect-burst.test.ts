// Many clients connecting at once while the server cannot accept them: stopped (SIGSTOP, as a
// server busy for a long time looks from outside) or out of fds (RLIMIT_NOFILE lowered). Linux
// refuses a UNIX-socket connect (ECONNREFUSED) only when nothing listens on the path; a full
// listen backlog fails a non-blocking connect with EAGAIN instead, and blocks a blocking one.
// Here no client may fail to connect, and every one gets an answer once the server can give it.
import { describe, it, expect } from 'vitest';
import { connect, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { encodeVersion } from '@vfu/protocol';
import { soakServerForSuite, until } from './helpers.ts';

const BURST = 200;

/** A client as an event-loop program makes one (non-blocking connect), sending VERSION. */
interface Client {
  sock: Socket;
  connectError: string | null;
  answered: boolean;
  closed: boolean;
}

function client(path: string): Promise<Client> {
  return new Promise(resolve => {
    const c: Client = { sock: connect(path), connectError: null, answered: false, closed: false };
    c.sock.once('connect', () => {
      c.sock.write(encodeVersion(0, false, 0, 0, '{}'));
      resolve(c);
    });
    c.sock.once('error', e => {
      // An error before 'connect' is a failed connect; one after it ends the client unanswered.
      if (!c.sock.remoteAddress && !c.answered && c.connectError === null)
        c.connectError = (e as NodeJS.ErrnoException).code ?? e.message;
      resolve(c);
    });
    c.sock.on('data', () => {
      c.answered = true;
    });
    c.sock.once('close', () => {
      c.closed = true;
    });
  });
}

const connectErrors = (cs: Client[]) =>
  cs.filter(c => c.connectError).map(c => c.connectError as string);

describe('a burst of clients while the server cannot accept', () => {
  const live = soakServerForSuite();

  it(`${BURST} clients at once to a stopped server connect; it answers all`, async () => {
    const pid = live.server.proc.pid!;
    process.kill(pid, 'SIGSTOP');
    let clients: Client[];
    try {
      clients = await Promise.all(Array.from({ length: BURST }, () => client(live.server.socket)));
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(connectErrors(clients)).toEqual([]);
    // One becomes the session (its VERSION is answered); the rest are answered EBUSY and closed.
    await until(() => clients.every(c => c.answered), 'every client answered', 30_000);
    for (const c of clients) c.sock.destroy();
    await live.server.idle();
    await live.server.check();
  });

  it('clients arriving while the server is out of fds wait queued; it answers all', async () => {
    const pid = live.server.proc.pid!;
    const limit = live.server.fds() + 4;
    const soft = ['--pid', String(pid), '--nofile', '--noheadings', '--raw', '-o', 'SOFT'];
    const before = execFileSync('prlimit', soft).toString().trim();
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:`]);
    let clients: Client[] = [];
    try {
      clients = await Promise.all(Array.from({ length: 40 }, () => client(live.server.socket)));
      expect(connectErrors(clients)).toEqual([]);
      // Only a few fit; the rest wait in the listen queue while the server retries accept.
      await until(() => clients.filter(c => c.answered).length >= 3, 'some answered', 30_000);
    } finally {
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${before}:`]);
    }
    await until(() => clients.every(c => c.answered), 'every client answered', 30_000);
    // The condition was reached: accept failed for want of an fd (and was retried).
    expect(live.server.tail).toMatch(/accept4 failed: EMFILE/);
    for (const c of clients) c.sock.destroy();
    await live.server.idle();
    await live.server.check();
  });
});
