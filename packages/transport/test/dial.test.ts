import { describe, it, expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acceptUnix, connectUnix, listenUnix } from '@vfu/native';
import { dial } from '@vfu/transport';

describe('dial', () => {
  it('waits for a server whose queue is full, within its bound, without blocking', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-dial-'));
    const path = join(dir, 's.sock');
    const listener = listenUnix(path, 0); // room for one connection not yet accepted
    const first = connectUnix(path);
    await expect(dial(path, 100)).rejects.toThrow(/ETIMEDOUT.*took no connection within 100 ms/);
    let timerRan = false; // the event loop keeps turning while dial waits
    setTimeout(() => {
      timerRan = true;
      acceptUnix(listener.fd)?.close(); // the server takes the first: room for the next
    }, 50);
    const second = await dial(path, 5000);
    expect(timerRan).toBe(true);
    [first, second, listener].forEach(f => f.close());
    await expect(dial(path, 100)).rejects.toThrow(/ECONNREFUSED/); // nobody listens: at once
    rmSync(dir, { recursive: true });
  });
});
