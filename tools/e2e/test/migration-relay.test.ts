// MigDataRelay (what vfu-migrate moves v2 data with) between servers that break the protocol:
// each plays its part in a process of its own (fixtures/fake-mig-peer.mjs), over real sockets,
// since the relay blocks its thread while it waits for them.
import { describe, it, expect, afterEach } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { VfioUserClient, MigDataRelay, RelayError } from '@vfu/client';
import { RemoteError } from '@vfu/transport';
import { hash, openFdCount } from '@vfu/native';
import { Errno } from '@vfu/protocol';
import { pattern } from '@vfu/qemu-harness';
import { tempDir, until } from './helpers.ts';

const tmp = tempDir();
const MIB = 1 << 20;
const procs: ChildProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(() => {
  clients.splice(0).forEach(c => c.close());
  procs.splice(0).forEach(p => p.kill());
});

let n = 0;
/** A fake-mig-peer.mjs playing `mode`, and a client of it; `out` is what it printed. */
async function peer(mode: string): Promise<{ client: VfioUserClient; out: () => string[] }> {
  const sock = tmp.path(`fake${++n}.sock`);
  const proc = spawn(
    process.execPath,
    [join(__dirname, 'fixtures/fake-mig-peer.mjs'), sock, mode],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  procs.push(proc);
  let text = '';
  proc.stdout!.on('data', d => (text += d));
  await until(() => text.startsWith('listening\n'), `${mode} listening`);
  const client = await VfioUserClient.connect(sock);
  clients.push(client);
  return { client, out: () => text.split('\n').slice(1).filter(Boolean) };
}

const relayBetween = (src: VfioUserClient, dst: VfioUserClient, timeoutMs = 2000) => {
  const relay = MigDataRelay.open(src, dst, timeoutMs);
  if (!relay) throw new Error('no relay');
  return relay;
};

describe('MigDataRelay', () => {
  it('moves each reply as one MIG_DATA_WRITE of the same bytes, and stops at none', async () => {
    const src = await peer('source-good'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client);
    const sizes = [];
    for (;;) {
      relay.ask(MIB);
      const got = relay.relay();
      sizes.push(got);
      if (got === 0) break;
      relay.written();
    }
    relay.close();
    expect(sizes).toEqual([MIB, 1000, 0]);
    await until(() => dst.out().length === 2, 'the writes printed');
    expect(dst.out().map(l => JSON.parse(l))).toEqual([
      { n: MIB, hash: hash(pattern(MIB, 1)) },
      { n: 1000, hash: hash(pattern(1000, 2)) },
    ]);
    // Both connections are back in the clients' hands, in step.
    expect((await src.client.migDataRead(64)).length).toBe(0);
    await dst.client.migDataWrite(new Uint8Array(10));
  });

  it('refuses replies larger than asked or whose sizes disagree, closing that one', async () => {
    for (const [mode, why] of [
      ['source-oversize', /says 1052672 bytes of data \(at most 1048576 were asked for\)/],
      ['source-mismatch', /MIG_DATA_READ reply of 1048600 bytes says 1048676 bytes/],
    ] as const) {
      const src = await peer(mode),
        dst = await peer('dest-good');
      const relay = relayBetween(src.client, dst.client);
      relay.ask(MIB);
      expect(() => relay.relay()).toThrow(why);
      expect(() => relay.relay()).toThrow(RelayError);
      relay.close();
      expect(src.client.conn.closed).toBe(true);
      expect(dst.client.conn.closed).toBe(false);
      await dst.client.migDataWrite(new Uint8Array(10));
    }
  });

  it('names the message that came where the reply was due', async () => {
    const src = await peer('source-unsolicited'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client);
    relay.ask(4096);
    expect(() => relay.relay()).toThrow(/the source sent DMA_READ \(id 30583.*where the reply/);
    relay.close();
    expect(src.client.conn.closed).toBe(true);
  });

  it("takes an error reply as the source's refusal, both streams still in step", async () => {
    const src = await peer('source-error'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client);
    relay.ask(4096);
    const e = (() => {
      try {
        relay.relay();
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(RemoteError);
    expect((e as RemoteError).errno).toBe(Errno.EINVAL);
    relay.ask(4096); // the relay goes on after a refusal
    expect(() => relay.relay()).toThrow(RemoteError);
    relay.close();
    await expect(src.client.migDataRead(64)).rejects.toThrow(/EINVAL/);
    expect(dst.client.conn.closed).toBe(false);
  });

  it('a destination refusing a write is a RemoteError; the next write goes on', async () => {
    const src = await peer('source-good'),
      dst = await peer('dest-error');
    const relay = relayBetween(src.client, dst.client);
    relay.ask(MIB);
    expect(relay.relay()).toBe(MIB);
    expect(() => relay.written()).toThrow(/MIG_DATA_WRITE failed at the peer: EIO/);
    relay.ask(MIB);
    expect(relay.relay()).toBe(1000);
    expect(() => relay.written()).toThrow(RemoteError);
    relay.close();
    expect(src.client.conn.closed || dst.client.conn.closed).toBe(false);
  });

  it('never installs fds a source sends with its reply', async () => {
    const src = await peer('source-fds'),
      dst = await peer('dest-good');
    const before = openFdCount();
    const relay = relayBetween(src.client, dst.client);
    relay.ask(MIB);
    expect(relay.relay()).toBe(MIB);
    relay.written();
    relay.close();
    expect(openFdCount()).toBe(before);
  });

  it('a destination gone before a write: the source reply is read to its end', async () => {
    const src = await peer('source-good'),
      dst = await peer('dest-gone');
    const relay = relayBetween(src.client, dst.client); // lent: its hang-up goes unseen
    await until(() => procs[1].exitCode !== null, 'the destination gone');
    relay.ask(MIB);
    expect(() => relay.relay()).toThrow(/EPIPE|ECONNRESET/);
    relay.close();
    await until(() => dst.client.conn.closed, 'the hang-up seen');
    expect(src.client.conn.closed).toBe(false);
    // The source's next reply is its second (1000 bytes): the rest of the first was dropped.
    expect(await src.client.migDataRead(MIB)).toEqual(pattern(1000, 2));
  });

  for (const source of ['source-good', 'source-trickle'])
    it(`a destination dying mid-write (${source}): the source stays in step`, async () => {
      const src = await peer(source),
        dst = await peer('dest-dies');
      const relay = relayBetween(src.client, dst.client);
      relay.ask(MIB);
      // Where it fails depends on how much the socket took before the destination left.
      expect(() => {
        relay.relay();
        relay.written();
      }).toThrow(/EPIPE|ECONNRESET/);
      relay.close();
      await until(() => dst.client.conn.closed, 'the hang-up seen');
      expect(await src.client.migDataRead(MIB)).toEqual(pattern(1000, 2));
    });

  it('a source dying mid-data: the write is made up with zeros, in step', async () => {
    const src = await peer('source-dies'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client);
    relay.ask(MIB);
    expect(() => relay.relay()).toThrow(/EPIPE|ECONNRESET.*the source failed/);
    relay.close();
    await until(() => src.client.conn.closed, 'the hang-up seen');
    expect(dst.client.conn.closed).toBe(false);
    const made = new Uint8Array(MIB);
    made.set(pattern(MIB, 1).subarray(0, 65536));
    await until(() => dst.out().length === 1, 'the write printed');
    expect(JSON.parse(dst.out()[0])).toEqual({ n: MIB, hash: hash(made) });
    await dst.client.migDataWrite(new Uint8Array(10)); // in step: the next write is answered
  });

  it('is not opened on a connection with a request awaiting its reply', async () => {
    const src = await peer('source-good'),
      dst = await peer('dest-good');
    const pending = src.client.migDataRead(MIB);
    expect(MigDataRelay.open(src.client, dst.client)).toBeNull();
    expect((await pending).length).toBe(MIB);
    const relay = MigDataRelay.open(dst.client, src.client);
    expect(relay).not.toBeNull();
    relay!.close();
  });

  it('a source that answers late: a timeout, then its connection goes on in step', async () => {
    const src = await peer('source-late'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client, 500);
    relay.ask(MIB);
    expect(() => relay.relay()).toThrow(/ETIMEDOUT/);
    expect(() => relay.ask(MIB)).toThrow(/failed; close the relay/);
    relay.close();
    // The late reply is dropped when it comes; the next request gets its own.
    expect(await src.client.migDataRead(MIB)).toEqual(pattern(1000, 2));
    await dst.client.migDataWrite(new Uint8Array(10));
  });

  it('a source that stops mid-data: the write is finished with zeros, both go on', async () => {
    const src = await peer('source-pause'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client, 500);
    relay.ask(MIB);
    expect(() => relay.relay()).toThrow(/ETIMEDOUT.*the source failed/);
    relay.close();
    await until(() => dst.out().length === 1, 'the write printed');
    expect(JSON.parse(dst.out()[0]).n).toBe(MIB);
    await dst.client.migDataWrite(new Uint8Array(10));
    expect(await src.client.migDataRead(MIB)).toEqual(pattern(1000, 2));
  });

  it('takes a timeout of 0 as none, as the client does', async () => {
    const src = await peer('source-late'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client, 0);
    relay.ask(MIB);
    expect(relay.relay()).toBe(MIB);
    relay.written();
    relay.close();
  });

  it('refuses to go on once a lent connection was closed under it', async () => {
    const src = await peer('source-good'),
      dst = await peer('dest-good');
    const relay = relayBetween(src.client, dst.client);
    src.client.conn.close('test');
    expect(() => relay.ask(MIB)).toThrow(/closed while lent/);
    relay.close();
  });
});
