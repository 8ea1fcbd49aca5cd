import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SaveSession,
  record,
  headerPayload,
  memoryRecord,
  Rec,
  FORMAT_VERSION,
  type DeviceImage,
} from '@vfu/stream';
import { inspectFile } from '../src/inspect.ts';

const mem = Uint8Array.from({ length: 8192 }, (_, i) => i & 255);
const image: DeviceImage = {
  deviceId: 'x',
  deviceVersion: 1,
  schema: 'a:u32',
  saveState: () => new Uint8Array(4),
  checkState: () => null,
  loadState: () => {},
  saveConfig: () => new Uint8Array(256),
  configSize: 256,
  loadConfig: () => {},
  memories: [{ name: 'm', size: mem.length, bytes: (o, n) => mem.subarray(o, o + n) }],
};

/** A whole stream of `image`, as a saved file holds it. */
function saved(): Buffer {
  const s = new SaveSession(image);
  s.stop();
  const parts: Uint8Array[] = [];
  for (let d = s.read(1 << 20); d.length; d = s.read(1 << 20)) parts.push(d.slice());
  return Buffer.concat(parts);
}

describe('inspect', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vfu-inspect-'));
  const file = (name: string, bytes: Uint8Array) => {
    writeFileSync(join(dir, name), bytes);
    return join(dir, name);
  };

  it('checks memory records by their hash: good, then one flipped byte of memory', async () => {
    const good = saved();
    const ok = await inspectFile(file('good', good));
    expect(ok.problem).toBeUndefined();
    expect(ok.memories).toEqual([{ index: 0, runs: 1, bytes: 8192, from: 0, to: 8192 }]);
    // The memory record's head: type 4, reserved, payload length 12 + 8192.
    const at = good.indexOf(Buffer.from([4, 0, 0, 0, 0x0c, 0x20, 0, 0]));
    expect(at).toBeGreaterThan(0);
    const bad = Buffer.from(good);
    bad[at + 20 + 5000] ^= 1;
    const refused = await inspectFile(file('bad', bad));
    expect(refused.problem).toMatch(
      new RegExp(`^checksum mismatch in record \\d+ \\(at byte ${at} of the stream\\)`),
    );
  });

  it('names another format instead of failing its memory records', async () => {
    const head = headerPayload(image);
    new DataView(head.buffer).setUint16(8, FORMAT_VERSION - 1, true);
    const r = memoryRecord(0, 0, mem);
    const old = Buffer.concat([record(Rec.HEADER, head), r.head, mem, r.crc]);
    const s = await inspectFile(file('old', old));
    expect(s.problem).toBe(
      `stream format ${FORMAT_VERSION - 1} (this version reads ${FORMAT_VERSION})`,
    );
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));
});
