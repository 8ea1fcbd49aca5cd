// fds stay with the message that carried them when the server reads many messages at once: a
// real server process, one raw client sending each message with its own sendmsg (as QEMU does),
// with the server stopped (SIGSTOP) while messages pile up so its reads take many at once, and
// with messages split into pieces (fds on the first) so their bytes come in several reads.
// Each fd's owner is checked by its effect: a memory fd by the bytes a device DMA moves through
// it, an eventfd by the interrupt it delivers, a stray fd by the answer of its neighbours.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync } from 'node:fs';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import {
  connectUnix,
  MessageSocket,
  MappedMemory,
  memfdCreate,
  eventfdCreate,
  eventfdRead,
  peerHasReadAll,
  type OwnedFd,
} from '@vfu/native';
import { encode, encodeVersion, decodeHeader, Flag, HEADER_SIZE } from '@vfu/protocol';
import { Reg as Edu, DMA_BUFFER, DMA_START, DMA_TO_RAM } from '@vfu/device-edu';
import { tempDir, until, stopProcess } from './helpers.ts';

const tmp = tempDir();
let server: ServerProcess;
beforeAll(async () => {
  server = await startServer(tmp.path('edu.sock'), ['--device', 'edu', '--memory', '1M']);
});
afterAll(async () => {
  await server.stop();
  tmp.cleanup();
});
const serverFds = () => readdirSync(`/proc/${server.proc.pid}/fd`).length;

interface Reply {
  id: number;
  error: number;
}
/** The id of the register read that the DMA checks poll with (no reply is kept for it). */
const READ_ID = 0xfff0;

/** A raw, negotiated connection: sends whole byte strings, collects replies in order. */
async function rawClient() {
  const fd = connectUnix(server.socket),
    ms = new MessageSocket(fd.fd);
  const buf = Buffer.alloc(1 << 16);
  let have = 0;
  const replies: Reply[] = [];
  let lastRead: number | null = null;
  const sendAll = async (bytes: Uint8Array, fds: number[] = []) => {
    let off = ms.send(bytes, fds);
    const sentAll = () => {
      off += ms.send(bytes.subarray(off));
      return off === bytes.length;
    };
    if (off < bytes.length) await until(sentAll, 'the socket to take the rest of a message');
  };
  const poll = () => {
    for (let r = ms.recv(buf.subarray(have)); r && r.bytes > 0; r = ms.recv(buf.subarray(have))) {
      r.fds.forEach(f => f.close());
      have += r.bytes;
    }
    while (have >= HEADER_SIZE && have >= buf.readUInt32LE(4)) {
      const h = decodeHeader(buf);
      expect(h.flags & Flag.TYPE_MASK).toBe(Flag.REPLY); // no DMA message: every map had its fd
      if (h.id === READ_ID) lastRead = buf.readUInt32LE(HEADER_SIZE + 16);
      else replies.push({ id: h.id, error: h.flags & Flag.ERROR ? h.error : 0 });
      buf.copyWithin(0, h.size, have);
      have -= h.size;
    }
  };
  const await_ = async (n: number) => {
    await until(() => {
      poll();
      return replies.length >= n;
    }, `${n} replies`);
  };
  /** A 4-byte read of BAR 0 at `offset`, answered before anything sent after it. */
  const read32 = async (offset: number): Promise<number> => {
    lastRead = null;
    await sendAll(encode.regionRead(READ_ID, { region: 0, offset, count: 4 }));
    await until(
      () => {
        poll();
        return lastRead !== null;
      },
      `the read of 0x${offset.toString(16)}`,
    );
    return lastRead!;
  };
  await sendAll(encodeVersion(0, false, 0, 0, '{}'));
  await await_(1);
  replies.length = 0;
  return { fd, sendAll, replies, wait: await_, read32 };
}

type Raw = Awaited<ReturnType<typeof rawClient>>;

/** A message to send, the fds it carries, and the errno its reply must have. */
interface Step {
  bytes: Uint8Array;
  fds: OwnedFd[];
  errno: number;
}

const RAM = [0x100000, 0x300000, 0x500000];
const REF = 0x900000; // a mapping set up alone, where the checks copy bytes to
const FDLESS = 0x700000;

/** Guest RAM in a memfd filled with `fill`, mapped here too so the test sees its bytes. */
function ram(fill: number) {
  const fd = memfdCreate('ram', 0x1000);
  const map = MappedMemory.map(fd.fd, 0, 0x1000);
  map.bytes(0, 0x1000).fill(fill);
  return { fd, map };
}

/** Region writes as the device sees them: 4 or 8 bytes little-endian. */
const w32 = (id: number, off: number, v: number, noReply = false) =>
  encode.regionWrite(
    id,
    { region: 0, offset: off, count: 4, data: new Uint8Array(new Uint32Array([v]).buffer) },
    noReply,
  );
const w64 = (id: number, off: number, v: number) =>
  encode.regionWrite(id, {
    region: 0,
    offset: off,
    count: 8,
    data: new Uint8Array(new BigUint64Array([BigInt(v)]).buffer),
  });

/** Every kind of message that carries fds, fds where none belong, and fd-less neighbours. */
function plan(mem: ReturnType<typeof ram>[], intx: OwnedFd, strays: OwnedFd[]): Step[] {
  let id = 10;
  const s = (bytes: Uint8Array, fds: OwnedFd[] = [], errno = 0): Step => ({ bytes, fds, errno });
  const map = (address: number) =>
    encode.dmaMap(id++, { flags: 3, offset: 0, address, size: 0x1000 });
  return [
    s(map(RAM[0]), [mem[0].fd]),
    s(w32(id++, Edu.LIVENESS, 1, true)), // posted: no reply
    s(encode.regionRead(id++, { region: 0, offset: 0, count: 4 }), strays), // fds where none belong
    s(map(FDLESS)), // a stray fd here would make it fail (an eventfd cannot be mapped)
    s(encode.setIrqs(id++, { flags: 0x24, index: 0, start: 0, count: 1 }), [intx]),
    s(map(RAM[1]), [mem[1].fd]),
    s(encode.setIrqs(id++, { flags: 0x21, index: 1, start: 0, count: 0 })), // fds here: EINVAL
    s(map(RAM[2]), [mem[2].fd]),
    s(encode.regionWrite(id++, { region: 7, offset: 4, count: 2, data: Uint8Array.of(6, 0) })),
    s(encode.dmaUnmap(id++, { flags: 0, address: FDLESS, size: 0x1000 }), [strays[0]]),
  ];
}

type Mode = 'coalesced' | 'split' | 'both';

/** Sends the plan: with the server stopped (reads coalesce), or split in pieces, or mixed. */
async function send(c: Raw, steps: Step[], mode: Mode): Promise<void> {
  const stop = () => stopProcess(server.proc);
  const cont = () => server.proc.kill('SIGCONT');
  // Once the server has read every byte sent so far, the next bytes come in a read of their own.
  const read = () => until(() => peerHasReadAll(c.fd.fd), 'the server to read a piece');
  if (mode === 'coalesced') await stop();
  for (const [k, st] of steps.entries()) {
    const fds = st.fds.map(f => f.fd);
    const split = mode === 'split' || (mode === 'both' && k % 2 === 1);
    if (!split) {
      await c.sendAll(st.bytes, fds);
      continue;
    }
    // Head (with the fds) while the server is stopped, after the previous message: one read
    // takes the previous message's bytes and this one's head; the rest comes in two more reads.
    if (mode === 'both') await stop();
    await c.sendAll(st.bytes.subarray(0, 5), fds);
    if (mode === 'both') cont();
    await read();
    const mid = Math.min(st.bytes.length, 5 + ((st.bytes.length - 5) >> 1));
    await c.sendAll(st.bytes.subarray(5, mid));
    await read();
    await c.sendAll(st.bytes.subarray(mid));
  }
  if (mode === 'coalesced') cont();
}

/** edu's DMA engine: RAM -> buffer -> REF, one message at a time; returns REF's first bytes. */
async function copyThroughDevice(c: Raw, from: number, ref: MappedMemory): Promise<number> {
  ref.bytes(0, 4).fill(0);
  let id = 100;
  const dma = async (src: number, dst: number, cmd: number) => {
    const n = c.replies.length;
    await c.sendAll(w64(id++, Edu.DMA_SRC, src));
    await c.sendAll(w64(id++, Edu.DMA_DST, dst));
    await c.sendAll(w64(id++, Edu.DMA_COUNT, 4));
    await c.sendAll(w32(id++, Edu.DMA_CMD, cmd));
    await c.wait(n + 4);
    expect(c.replies.slice(n).map(r => r.error)).toEqual([0, 0, 0, 0]);
  };
  const done = (what: string) =>
    until(async () => ((await c.read32(Edu.DMA_CMD)) & DMA_START) === 0, what);
  await dma(from, DMA_BUFFER, DMA_START);
  await done('the DMA in');
  await dma(DMA_BUFFER, REF, DMA_START | DMA_TO_RAM);
  // edu writes REF, then clears its start bit in a promise continuation, which waits while the
  // server lingers for this client's next request (up to 1 ms). The transfer is over at the bit,
  // as a driver polls it: registers written before then are ignored, as on the real device.
  await until(() => ref.bytes(0, 1)[0] !== 0, 'the copy to REF');
  await done('the DMA out');
  return ref.bytes(0, 1)[0];
}

describe('fds under batched reads, at a real server', () => {
  for (const mode of ['coalesced', 'split', 'both'] as const)
    it(`each fd reaches the message that carried it (${mode})`, async () => {
      const baseline = serverFds();
      const c = await rawClient();
      const ref = ram(0);
      await c.sendAll(encode.dmaMap(1, { flags: 3, offset: 0, address: REF, size: 0x1000 }), [
        ref.fd.fd,
      ]);
      await c.wait(1);
      expect(c.replies[0]).toEqual({ id: 1, error: 0 });
      const mem = [ram(0xa0), ram(0xb1), ram(0xc2)];
      const intx = eventfdCreate();
      const strays = [eventfdCreate(), eventfdCreate()];
      const steps = plan(mem, intx, strays);
      await send(c, steps, mode);
      const answered = steps.filter(st => !(decodeHeader(st.bytes).flags & Flag.NO_REPLY));
      await c.wait(1 + answered.length);
      expect(c.replies.slice(1)).toEqual(
        answered.map(st => ({ id: decodeHeader(st.bytes).id, error: st.errno })),
      );
      for (let i = 0; i < mem.length; i++)
        expect(await copyThroughDevice(c, RAM[i], ref.map)).toBe(0xa0 + 0x11 * i);
      const n = c.replies.length;
      await c.sendAll(w32(200, Edu.IRQ_RAISE, 1));
      await c.wait(n + 1);
      await until(() => eventfdRead(intx.fd), 'INTx on the eventfd SET_IRQS carried');
      c.fd.close();
      for (const f of [...mem.flatMap(m => [m.fd]), ref.fd, intx, ...strays]) f.close();
      for (const m of [...mem, ref]) m.map.release();
      await until(() => serverFds() === baseline, `server fds back to ${baseline}`);
    });
});
