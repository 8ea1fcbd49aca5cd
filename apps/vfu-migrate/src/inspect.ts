// `vfu-migrate inspect PATH`: what a saved stream holds, read with the stream's own record
// parser (checksums and bounds checked as a destination checks them), without a server.
import { open } from 'node:fs/promises';
import { RecordFramer, Rec, parseHeader, FORMAT_VERSION, type StreamHeader } from '@vfu/stream';

const kinds: Record<number, string> = {
  [Rec.HEADER]: 'header',
  [Rec.STATE]: 'state',
  [Rec.CONFIG]: 'config',
  [Rec.MEMORY]: 'memory',
  [Rec.END]: 'end',
  [Rec.KIT]: 'kit',
};

export interface StreamSummary {
  path: string;
  bytes: number;
  records: number;
  header?: StreamHeader;
  /** Records and payload bytes of each kind. */
  kinds: Record<string, { records: number; bytes: number }>;
  /** Memory runs per memory index: how many, their bytes, the span they cover. */
  memories: { index: number; runs: number; bytes: number; from: number; to: number }[];
  complete: boolean;
  /** Why the stream cannot be loaded as it is; absent when it can (as far as a file shows). */
  problem?: string;
}

/** Reads the file at `path` record by record. Throws only if the file cannot be read. */
export async function inspectFile(path: string): Promise<StreamSummary> {
  const s: StreamSummary = { path, bytes: 0, records: 0, kinds: {}, memories: [], complete: false };
  const framer = new RecordFramer(r => take(s, r));
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (!bytesRead) break;
      framer.write(buf.subarray(0, bytesRead));
      s.bytes += bytesRead;
    }
    if (framer.pending) s.problem = `truncated: ${framer.pending} bytes of an unfinished record`;
    else if (!s.complete) s.problem ??= 'no end record: the stream is incomplete';
  } catch (e) {
    s.problem ??= `${(e as Error).message} (in record ${s.records + 1}, near byte ${s.bytes})`;
  } finally {
    await fh.close();
  }
  s.records = framer.records;
  return s;
}

/** One checked record; throws to stop at the first thing a destination would refuse. */
function take(s: StreamSummary, r: Uint8Array): void {
  const dv = new DataView(r.buffer, r.byteOffset, r.length);
  const type = dv.getUint16(0, true),
    len = dv.getUint32(4, true),
    p = r.subarray(8, 8 + len);
  const kind = kinds[type] ?? `unknown type ${type}`;
  s.kinds[kind] ??= { records: 0, bytes: 0 };
  const k = s.kinds[kind];
  k.records++;
  k.bytes += len;
  if (!s.header && type !== Rec.HEADER) stop(s, 'the stream does not start with a header');
  if (s.complete) stop(s, 'data after the end record');
  if (type === Rec.HEADER) {
    const h = parseHeader(p);
    if (typeof h === 'string') stop(s, h);
    if (s.header) stop(s, 'a second stream header');
    s.header = h;
    // Before any memory record: another format checks those differently.
    if (h.formatVersion !== FORMAT_VERSION)
      stop(s, `stream format ${h.formatVersion} (this version reads ${FORMAT_VERSION})`);
  } else if (type === Rec.MEMORY) {
    if (len < 12) stop(s, 'memory record truncated');
    memoryRun(s, new DataView(p.buffer, p.byteOffset, len), len - 12);
  } else if (type === Rec.END) s.complete = true;
  else if (!kinds[type]) stop(s, `unknown record type ${type}`);
}

function memoryRun(s: StreamSummary, dv: DataView, bytes: number): void {
  const index = dv.getUint16(0, true),
    at = dv.getUint32(4, true) + dv.getUint32(8, true) * 2 ** 32;
  let m = s.memories.find(x => x.index === index);
  if (!m) {
    m = { index, runs: 0, bytes: 0, from: at, to: at };
    s.memories.push(m);
  }
  m.runs++;
  m.bytes += bytes;
  m.from = Math.min(m.from, at);
  m.to = Math.max(m.to, at + bytes);
}

function stop(s: StreamSummary, problem: string): never {
  s.problem = problem;
  throw new Error(problem);
}

const size = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`);

/** The summary as lines a user reads. */
export function describeStream(s: StreamSummary): string {
  const h = s.header;
  const lines = [`${s.path}: ${size(s.bytes)}, ${s.records} records`];
  if (h) {
    lines.push(`  model      ${h.deviceId}, state version ${h.deviceVersion}`);
    lines.push(`  format     ${h.formatVersion}; state layout ${h.schema}`);
  }
  for (const [kind, k] of Object.entries(s.kinds))
    lines.push(`  ${kind.padEnd(10)} ${k.records} record(s), ${size(k.bytes)}`);
  for (const m of s.memories)
    lines.push(
      `  memory ${m.index}   ${m.runs} run(s), ${size(m.bytes)} in [0x${m.from.toString(16)}, ` +
        `0x${m.to.toString(16)})`,
    );
  lines.push(s.problem ? `  NOT USABLE: ${s.problem}` : '  complete; every checksum good');
  return lines.join('\n');
}
