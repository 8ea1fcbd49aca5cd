// Posted REGION_WRITEs that arrive back to back are applied in one run straight from the
// receive buffer; the run must stop at a write it cannot take (refused the usual way, no reply)
// and before a message that carried fds (that one goes the general way: with more fds than
// max_msg_fds it is refused, not applied). A real server process, stopped (SIGSTOP) while the
// messages pile up so one read takes them all.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync } from 'node:fs';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { connectUnix, MessageSocket, eventfdCreate } from '@vfu/native';
import {
  encode,
  encodeVersion,
  decodeHeader,
  Errno,
  Flag,
  HEADER_SIZE,
  Defaults,
} from '@vfu/protocol';
import { Reg as Edu } from '@vfu/device-edu';
import { tempDir, until, writeModel } from './helpers.ts';

const tmp = tempDir();
let server: ServerProcess;
beforeAll(async () => {
  server = await startServer(tmp.path('edu.sock'), ['--device', 'edu', '--memory', '1M']);
});
afterAll(async () => {
  await server.stop();
  tmp.cleanup();
});

const posted = (id: number, offset: number, v: number) =>
  encode.regionWrite(
    id,
    { region: 0, offset, count: 4, data: new Uint8Array(new Uint32Array([v]).buffer) },
    true,
  );
const join = (...parts: Uint8Array[]) => Buffer.concat(parts);
const serverFds = () => readdirSync(`/proc/${server.proc.pid}/fd`).length;

describe('runs of posted writes', () => {
  it('stop at a refused write and before fds; the rest applies in order', async () => {
    const baseline = serverFds();
    const fd = connectUnix(server.socket),
      ms = new MessageSocket(fd.fd);
    const buf = Buffer.alloc(1 << 16);
    let have = 0;
    const replies: { id: number; flags: number; data: number }[] = [];
    const collect = () => {
      for (let r = ms.recv(buf.subarray(have)); r && r.bytes > 0; r = ms.recv(buf.subarray(have))) {
        r.fds.forEach(f => f.close());
        have += r.bytes;
      }
      while (have >= HEADER_SIZE && have >= buf.readUInt32LE(4)) {
        const h = decodeHeader(buf);
        const data = h.size >= 36 ? buf.readUInt32LE(32) : -1;
        replies.push({ id: h.id, flags: h.flags, data });
        buf.copyWithin(0, h.size, have);
        have -= h.size;
      }
    };
    const wait = (n: number) =>
      until(() => {
        collect();
        return replies.length >= n;
      }, `${n} replies`);
    expect(ms.send(encodeVersion(0, false, 0, 0, '{}'))).toBeGreaterThan(0);
    await wait(1);
    const strays = Array.from({ length: Defaults.maxMsgFds + 1 }, () => eventfdCreate());
    const read = (id: number) =>
      encode.regionRead(id, { region: 0, offset: Edu.LIVENESS, count: 4 });
    server.proc.kill('SIGSTOP');
    try {
      // One read takes these three sendmsgs (it ends at the one with the fd).
      ms.send(join(posted(1, Edu.LIVENESS, 1), posted(2, 1 << 30, 9), posted(3, Edu.LIVENESS, 2)));
      ms.send(join(read(4), posted(5, Edu.LIVENESS, 3))); // a run would go on into the next
      // Refused for its fds (more than max_msg_fds): not applied, the fds closed.
      ms.send(
        posted(6, Edu.LIVENESS, 7),
        strays.map(s => s.fd),
      );
      ms.send(join(read(7), posted(8, Edu.LIVENESS, 4), posted(9, Edu.LIVENESS, 5), read(10)));
    } finally {
      server.proc.kill('SIGCONT');
    }
    for (const s of strays) s.close();
    await wait(4);
    // Only the reads answer; edu's liveness register reads back the complement of the last write.
    expect(replies.slice(1)).toEqual([
      { id: 4, flags: Flag.REPLY, data: ~2 >>> 0 },
      { id: 7, flags: Flag.REPLY, data: ~3 >>> 0 },
      { id: 10, flags: Flag.REPLY, data: ~5 >>> 0 },
    ]);
    expect(serverFds()).toBe(baseline + 1); // our connection; the strays are gone
    fd.close();
  });
});

// BAR 0 is a raw region handler that counts the accesses it is given, and those that reach
// past its 4096 bytes (which the server must never hand it): offset 0 reads the writes, offset
// 4 the strays.
const COUNTING = `import { defineDevice, bar } from '@vfu/pci';
let writes = 0, strays = 0;
const SIZE = 4096;
const counted = (offset, len) => {
  if (offset + len > SIZE) strays++;
};
export default defineDevice({
  id: 'counting',
  version: 1,
  description: 'counts the accesses its BAR 0 is given',
  pci: { vendor: 0x1b36, device: 0x01fd, classCode: 0xff0000 },
  state: {},
  bars: () => ({
    0: bar('mem32', {
      size: SIZE,
      read: (offset, out) => {
        counted(offset, out.length);
        out.fill(0);
        if (out.length === 4) new DataView(out.buffer, out.byteOffset, 4)
          .setUint32(0, offset === 0 ? writes : strays, true);
      },
      write: (offset, data) => {
        counted(offset, data.length);
        writes++;
      },
    }),
  }),
});
`;

describe('accesses outside a region', () => {
  it('never reach the device: in a posted run, first of a run, or answered', async () => {
    const model = writeModel(tmp.dir, 'counting.mjs', COUNTING);
    const s = await startServer(tmp.path('counting.sock'), ['--device', model]);
    const fd = connectUnix(s.socket),
      ms = new MessageSocket(fd.fd);
    try {
      const buf = Buffer.alloc(1 << 16);
      let have = 0;
      const replies: { id: number; error: number; data: number }[] = [];
      const wait = (n: number) =>
        until(() => {
          for (let r = ms.recv(buf.subarray(have)); r && r.bytes > 0; ) {
            r.fds.forEach(f => f.close());
            have += r.bytes;
            r = ms.recv(buf.subarray(have));
          }
          while (have >= HEADER_SIZE && have >= buf.readUInt32LE(4)) {
            const h = decodeHeader(buf);
            replies.push({
              id: h.id,
              error: h.error,
              data: h.size >= 36 ? buf.readUInt32LE(32) : -1,
            });
            buf.copyWithin(0, h.size, have);
            have -= h.size;
          }
          return replies.length >= n;
        }, `${n} replies`);
      ms.send(encodeVersion(0, false, 0, 0, '{}'));
      await wait(1);
      const write = (id: number, offset: number, reply = false) =>
        encode.regionWrite(id, { region: 0, offset, count: 4, data: new Uint8Array(4) }, !reply);
      const read = (id: number, offset: number) =>
        encode.regionRead(id, { region: 0, offset, count: 4 });
      s.proc.kill('SIGSTOP');
      try {
        // One read takes them all: a run of posted writes with two outside BAR 0 in it (at
        // its end, and across it), one outside first, then answered ones.
        ms.send(
          Buffer.concat([
            write(1, 0x10),
            write(2, 0x14),
            write(3, 4096),
            write(4, 0x18),
            write(5, 4094),
            write(6, 0x1c),
            write(7, 2 ** 40),
            write(8, 0x20),
            write(9, 4096, true),
            read(10, 4094),
            read(11, 0),
            read(12, 4),
          ]),
        );
      } finally {
        s.proc.kill('SIGCONT');
      }
      await wait(5);
      expect(replies.slice(1)).toEqual([
        { id: 9, error: Errno.EINVAL, data: -1 },
        { id: 10, error: Errno.EINVAL, data: -1 },
        { id: 11, error: 0, data: 5 }, // writes 1, 2, 4, 6 and 8
        { id: 12, error: 0, data: 0 }, // no stray access
      ]);
    } finally {
      fd.close();
      await s.stop();
    }
  });
});
