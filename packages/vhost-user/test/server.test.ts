// The listening back-end over a real UNIX socket path: one front-end at a time, the next one
// served once it goes, and a session's fds and mappings released when its front-end leaves.
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { connectUnix, openFdCount } from '@vfu/native';
import { Frontend, Request, VhostUserServer, type BackendSession } from '@vfu/vhost-user';
import { TestDevice } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vhost-user-'));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves on the server's next session event (a front-end came or went). */
const nextSession = (s: VhostUserServer) =>
  new Promise<BackendSession | null>(resolve => {
    s.onSession = x => resolve(x);
  });

it('serves one front-end at a time, then the next; closing removes the socket', async () => {
  const before = openFdCount();
  const path = join(dir, 'blk.sock');
  const server = new VhostUserServer(path, new TestDevice());
  for (let round = 0; round < 2; round++) {
    const came = nextSession(server);
    const fe = new Frontend(connectUnix(path));
    const f = await fe.request({ request: Request.GET_QUEUE_NUM });
    expect(f.payload[0]).toBe(2);
    expect(await came).toBe(server.session);
    // A second front-end meanwhile is refused: its connection is closed unanswered.
    const other = new Frontend(connectUnix(path));
    await expect(other.request({ request: Request.GET_FEATURES })).rejects.toThrow(/closed/);
    const gone = nextSession(server);
    fe.close();
    expect(await gone).toBeNull();
  }
  server.close();
  expect(existsSync(path)).toBe(false);
  expect(openFdCount()).toBe(before);
});
