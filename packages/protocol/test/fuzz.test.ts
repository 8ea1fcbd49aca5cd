// Fuzzing the codec with fast-check: arbitrary bytes and mutations of valid messages must give
// a typed message or a ProtocolError, never an exception, for every command. Runs are bounded
// here (VFU_FUZZ_RUNS raises them: `pnpm fuzz`); every failure found is kept in test/corpus/
// and replayed on every run.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodeRequest,
  decodeVersion,
  decodeHeader,
  checkHeader,
  decodeRegionCaps,
  decodeReply,
  decodeFeatureData,
  dma,
  encode,
  encodeVersion,
  ProtocolError,
  HEADER_SIZE,
  Command,
  featureData,
  type Request,
} from '@vfu/protocol';

const RUNS = Number(process.env.VFU_FUZZ_RUNS ?? 3000);
const corpusDir = join(__dirname, 'corpus');

/** Every decoder on one input: anything but a ProtocolError or a value is a bug. */
function decodeAll(cmd: number, payload: Uint8Array, fds: number): void {
  const r = decodeRequest(cmd, payload, fds, { maxRegionXfer: 1 << 20, maxMigXfer: 1 << 20 });
  if (!(r instanceof ProtocolError)) {
    // Whatever decodes must stay inside the payload it came from.
    const body = (r as Request).body as Record<string, unknown>;
    for (const v of Object.values(body))
      if (v instanceof Uint8Array) expect(v.buffer).toBe(payload.buffer);
  }
  decodeVersion(payload);
  decodeVersion(payload, null);
  decodeRegionCaps(
    payload,
    payload.length > 12
      ? new DataView(payload.buffer, payload.byteOffset).getUint32(
          Math.min(12, payload.length - 4),
          true,
        )
      : 0,
  );
  for (const f of Object.values(decodeReply)) f(payload, 4);
  decodeFeatureData.loggingStart(payload);
  decodeFeatureData.loggingReport(payload);
  decodeFeatureData.migDeviceState(payload);
  for (const layout of ['spec', 'qemu'] as const) {
    dma.decodeRequest(Command.DMA_WRITE, layout, payload, 1 << 20);
    dma.readReply(layout, payload, 0, 4);
  }
  if (payload.length >= HEADER_SIZE) checkHeader(decodeHeader(payload), 1 << 20);
}

function keep(name: string, cmd: number, payload: Uint8Array, fds: number): void {
  mkdirSync(corpusDir, { recursive: true });
  writeFileSync(
    join(corpusDir, `${name}-${cmd}-${Date.now()}.json`),
    JSON.stringify({ cmd, fds, payload: Buffer.from(payload).toString('hex') }),
  );
}

const valid = (): Uint8Array[] => [
  encode.dmaMap(1, { flags: 3, offset: 0, address: 0x1000, size: 0x1000 }),
  encode.dmaUnmap(1, { flags: 1, address: 0, size: 0x40000, bitmap: { pgsize: 4096, size: 8 } }),
  encode.getInfo(1),
  encode.getRegionInfo(1, 2, 64),
  encode.getIrqInfo(1, 1),
  encode.setIrqs(1, { flags: 0x22, index: 1, start: 0, count: 2, bools: Uint8Array.of(1, 0) }),
  encode.regionRead(1, { region: 0, offset: 8, count: 4 }),
  encode.regionWrite(1, { region: 0, offset: 8, count: 4, data: Uint8Array.of(1, 2, 3, 4) }),
  encode.writeMulti(1, [{ region: 0, offset: 0, count: 1, data: Uint8Array.of(1) }]),
  encode.feature(1, (1 << 16) | 8, featureData.loggingReport(0, 0x40000, 4096), 40),
  encode.feature(1, (1 << 17) | 6, featureData.loggingStart(4096, [{ iova: 0, length: 0x1000 }])),
  encode.migDataRead(1, 100),
  encode.migDataWrite(1, Uint8Array.of(1, 2)),
  encode.dirtyPages(1, {
    argsz: 48,
    flags: 4,
    range: { iova: 0, size: 0x40000, pgsize: 4096, bitmapSize: 8 },
  }),
  encodeVersion(1, false, 0, 0, '{"capabilities":{"max_msg_fds":8,"migration":{"pgsize":4096}}}'),
];

describe('codec fuzz', () => {
  it('replays every kept crash input', () => {
    let n = 0;
    try {
      for (const f of readdirSync(corpusDir).filter(x => x.endsWith('.json'))) {
        const c = JSON.parse(readFileSync(join(corpusDir, f), 'utf8'));
        decodeAll(c.cmd, Buffer.from(c.payload, 'hex'), c.fds);
        n++;
      }
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
    }
    expect(n).toBeGreaterThanOrEqual(0);
  });

  it('fuzz: any payload for any command decodes or fails with a ProtocolError', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20 }),
        fc.uint8Array({ maxLength: 256 }),
        fc.integer({ min: 0, max: 9 }),
        (cmd, payload, fds) => {
          try {
            decodeAll(cmd, payload, fds);
          } catch (e) {
            keep('arbitrary', cmd, payload, fds);
            throw e;
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  // Bit flips, truncation, extension, lying length fields.
  it('fuzz: mutated valid messages never throw', () => {
    const seeds = valid();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: seeds.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.integer({ min: -40, max: 40 }),
        (i, flips, resize) => {
          const m = Uint8Array.from(seeds[i]);
          for (const [at, v] of flips) m[at % m.length] = v;
          const cmd = new DataView(m.buffer).getUint16(2, true);
          const payload =
            resize < 0
              ? m.subarray(HEADER_SIZE, Math.max(HEADER_SIZE, m.length + resize))
              : Uint8Array.from([...m.subarray(HEADER_SIZE), ...new Uint8Array(resize)]);
          try {
            decodeAll(cmd, payload, flips.length % 3);
          } catch (e) {
            keep('mutated', cmd, payload, flips.length % 3);
            throw e;
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('fuzz: lying length fields never make the codec allocate past the message', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(
          Command.REGION_WRITE_MULTI,
          Command.DEVICE_FEATURE,
          Command.MIG_DATA_WRITE,
          Command.DIRTY_PAGES,
          Command.DMA_UNMAP,
        ),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (cmd, a, b) => {
          const p = new Uint8Array(48);
          const dv = new DataView(p.buffer);
          dv.setUint32(0, a, true);
          dv.setUint32(4, b, true);
          dv.setUint32(8, a, true);
          dv.setUint32(32, b, true);
          const before = process.memoryUsage().arrayBuffers;
          decodeAll(cmd, p, 0);
          expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
        },
      ),
      { numRuns: Math.min(RUNS, 2000) },
    );
  });
});
