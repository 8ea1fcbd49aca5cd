// A TCP proxy for fault tests: forwards both ways between a client and a server, and can delay,
// cut or corrupt the traffic at a chosen point (a byte offset, or the first chunk holding some
// bytes). Real sockets both sides; nothing is simulated.
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface Fault {
  /** Which traffic: client to server (`up`) or server to client (`down`). */
  dir: 'up' | 'down';
  /** Where: at this byte offset of that direction's traffic, or at the first chunk with `match`. */
  at?: number;
  match?: Buffer;
  /** What: drop both connections, flip the bits of `xor` into the byte, or hold each chunk. */
  kind: 'cut' | 'corrupt' | 'delay';
  xor?: number;
  delayMs?: number;
}

export interface Proxy {
  port: number;
  /** Whether the fault happened (a test checks it did). */
  fired(): boolean;
  close(): Promise<void>;
}

export async function tcpProxy(target: number, fault: Fault | null): Promise<Proxy> {
  let fired = false;
  const sockets: Socket[] = [];
  const server: Server = createServer(client => {
    const upstream = connect({ host: '127.0.0.1', port: target });
    sockets.push(client, upstream);
    const counts = { up: 0, down: 0 };
    const tails: Record<string, Buffer> = { up: Buffer.alloc(0), down: Buffer.alloc(0) };
    const cutAll = () => {
      client.destroy();
      upstream.destroy();
    };
    let chain = Promise.resolve();
    const pipe = (from: Socket, to: Socket, dir: 'up' | 'down') => {
      from.on('data', (chunk: Buffer) => {
        const start = counts[dir];
        counts[dir] += chunk.length;
        const at =
          fault && fault.dir === dir && !fired ? where(fault, chunk, start, tails[dir]) : -1;
        if (fault?.match) tails[dir] = chunk.subarray(-fault.match.length);
        if (at >= 0 && fault!.kind === 'cut') {
          fired = true;
          // Forward what precedes the cut point, then end both connections.
          to.write(chunk.subarray(0, at));
          return void setImmediate(cutAll);
        }
        if (at >= 0 && fault!.kind === 'corrupt') {
          fired = true;
          chunk = Buffer.from(chunk);
          chunk[at] ^= fault!.xor ?? 0x10;
        }
        if (fault?.kind === 'delay' && fault.dir === dir && counts[dir] > (fault.at ?? 0)) {
          fired = true;
          from.pause();
          chain = chain.then(
            () =>
              new Promise<void>(r =>
                setTimeout(() => {
                  to.write(chunk);
                  from.resume();
                  r();
                }, fault.delayMs ?? 20),
              ),
          );
          return;
        }
        to.write(chunk);
      });
      from.on('end', () => to.end());
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    };
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
  });
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    fired: () => fired,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>(r => server.close(() => r()));
    },
  };
}

/** The fault's offset inside `chunk` (a match may begin in the previous chunk: 0), or -1. */
function where(f: Fault, chunk: Buffer, start: number, tail: Buffer): number {
  if (f.at !== undefined) return start <= f.at && f.at < start + chunk.length ? f.at - start : -1;
  if (!f.match) return -1;
  const i = Buffer.concat([tail, chunk]).indexOf(f.match);
  return i < 0 ? -1 : Math.max(0, i - tail.length);
}
