// Feeds a live server sessions of vfio-user messages: half valid (well-formed messages of every
// command the server knows, with random arguments), half mutated (bytes flipped, cut short,
// extended, header fields replaced, or random bytes). A seeded generator (xorshift) makes any run
// repeatable from its seed; it is a loop of cheap byte edits, so a long run spends its time in
// the server, not in the generator.
import { connectUnix, memfdCreate, MessageSocket, NativeError, type OwnedFd } from '@vfu/native';
import { decodeHeader, encode, encodeVersion, featureData, HEADER_SIZE } from '@vfu/protocol';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { SoakServer } from './server.ts';

/** xorshift32: small, fast and repeatable; not for anything but choosing test inputs. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  /** The generator's state: a run restarted from it repeats what followed. */
  get state(): number {
    return this.#s;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  below(n: number): number {
    return this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

const WIDTHS = [1, 2, 4, 8];
const FEATURE_GET = 1 << 16,
  FEATURE_SET = 1 << 17,
  FEATURE_PROBE = 1 << 18;

/** One well-formed message of a command chosen at random, with random (mostly sane) arguments. */
export function validMessage(r: Rng): Uint8Array {
  const id = r.below(0x10000);
  const region = r.below(10);
  const offset = r.chance(0.8) ? r.below(0x100) & ~3 : r.next();
  const count = r.chance(0.8) ? WIDTHS[r.below(4)] : r.below(4097);
  const page = 0x1000;
  switch (r.below(17)) {
    case 0:
      return encode.getInfo(id);
    case 1:
      return encode.getRegionInfo(id, region, r.chance(0.8) ? 32 : r.below(256));
    case 2:
      return encode.getIrqInfo(id, r.below(6));
    case 3:
      return encode.regionRead(id, { region, offset, count });
    case 4:
      return encode.regionWrite(id, { region, offset, count, data: r.bytes(count) });
    case 5:
      return encode.setIrqs(id, {
        flags: [0x21, 0x22, 0x24, 0x11, 0x12, 0x14][r.below(6)],
        index: r.below(5),
        start: r.below(2),
        count: r.below(3),
      });
    case 6:
      return encode.dmaMap(id, {
        flags: 1 + r.below(3),
        offset: 0,
        address: r.below(0x1000) * page,
        size: (1 + r.below(16)) * page,
      });
    case 7:
      return encode.dmaUnmap(id, { flags: r.below(3), address: r.below(0x1000) * page, size: 0 });
    case 8:
      return encode.feature(id, FEATURE_SET | 2, featureData.migDeviceState(r.below(9)));
    case 9:
      return encode.feature(id, [FEATURE_GET, FEATURE_PROBE][r.below(2)] | r.below(10));
    case 10:
      return encode.migDataRead(id, r.below(1 << 16));
    case 11:
      return encode.migDataWrite(id, r.bytes(r.below(512)));
    case 12:
      return encode.reset(id);
    case 13:
      return encode.feature(id, FEATURE_SET | 6, featureData.loggingStart(page, []));
    case 14:
      return encode.feature(
        id,
        FEATURE_GET | 8,
        featureData.loggingReport(r.below(16) * page, 16 * page, page),
        48,
      );
    case 15:
      return encode.writeMulti(
        id,
        Array.from({ length: 1 + r.below(4) }, () => ({
          region: 0,
          offset,
          count: 4,
          data: r.bytes(4),
        })),
        r.chance(0.5),
      );
    default:
      return encodeVersion(id, false, 0, 0, '{}');
  }
}

/**
 * A valid message changed in one of the ways a broken or hostile client changes them, still
 * framed (msg_size says its real length), so that the messages after it are read as messages.
 */
export function mutate(r: Rng, m: Uint8Array): Uint8Array {
  let out: Uint8Array = Uint8Array.from(m);
  switch (r.below(5)) {
    case 0: // a few bytes anywhere
      for (let i = 1 + r.below(4); i > 0; i--) out[r.below(out.length)] = r.next() & 0xff;
      break;
    case 1: // cut short
      out = out.slice(0, HEADER_SIZE + r.below(Math.max(1, out.length - HEADER_SIZE)));
      break;
    case 2: // extra bytes after the payload
      out = Uint8Array.from([...out, ...r.bytes(1 + r.below(64))]);
      break;
    case 3: {
      // a header field replaced: command, flags or error
      const dv = new DataView(out.buffer);
      const field = r.below(3);
      if (field === 0) dv.setUint16(2, r.below(40), true);
      else if (field === 1) dv.setUint32(8, r.next(), true);
      else dv.setUint32(12, r.below(200), true);
      break;
    }
    default: // the payload's first length field lies (argsz, offset or count)
      if (out.length >= HEADER_SIZE + 4)
        new DataView(out.buffer).setUint32(HEADER_SIZE, r.next() % 0x20000, true);
      else out = randomMessage(r);
  }
  new DataView(out.buffer).setUint32(4, out.length, true);
  return out;
}

/**
 * A message whose msg_size lies (too short, too long, or up to 4 GiB): the stream cannot be
 * framed after it, so a session sends at most one, as its last.
 */
export function unframed(r: Rng, m: Uint8Array): Uint8Array {
  const out = Uint8Array.from(m);
  const dv = new DataView(out.buffer);
  const lie = r.below(3);
  if (lie === 0) dv.setUint32(4, r.below(HEADER_SIZE), true);
  else if (lie === 1) dv.setUint32(4, out.length + 1 + r.below(4096), true);
  else dv.setUint32(4, r.next(), true);
  return out;
}

function randomMessage(r: Rng): Uint8Array {
  const payload = r.below(256);
  const m = r.bytes(HEADER_SIZE + payload);
  const dv = new DataView(m.buffer);
  dv.setUint16(2, r.below(30), true);
  dv.setUint32(4, HEADER_SIZE + payload, true);
  return m;
}

export interface FuzzReport {
  messages: number;
  valid: number;
  mutated: number;
  withFd: number;
  sessions: number;
  /** Messages whose msg_size lied (each the last of its session). */
  unframed: number;
  /** Sessions the server ended (e.g. after an unframeable message): an answer, not a fault. */
  closedByServer: number;
  /** Connections answered EBUSY because the previous client was still being let go. */
  busy: number;
  /** Bytes of replies read back: the server answered rather than swallowed. */
  replyBytes: number;
  /** The last session: the generator's state at its start and its messages (hex), to replay. */
  lastSession: { state: number; messages: string[] };
  /** Health checks (a real client negotiating and reading a register) that passed. */
  checks: number;
  samples: Sample[];
  seconds: number;
}
export interface Sample {
  messages: number;
  rssKiB: number;
  fds: number;
}
export interface FuzzOptions {
  messages: number;
  seed: number;
  /** Longest session, in messages (each session is 1..this long). */
  maxSession?: number;
  /** Check health every this many sessions. */
  checkEvery?: number;
  /** Sample RSS and fds (with the server idle) every this many messages. */
  sampleEvery?: number;
  progress?: (line: string) => void;
}

class SessionEnded extends Error {}

/** Sends all of `m` (with `fds` on its first byte), draining replies while the socket is full. */
async function sendAll(ms: MessageSocket, m: Uint8Array, fds: number[], drain: () => void) {
  let sent = 0;
  for (let t = Date.now(); sent < m.length; ) {
    let n: number;
    try {
      n = ms.send(m.subarray(sent), sent === 0 ? fds : []);
    } catch (e) {
      if (e instanceof NativeError) throw new SessionEnded(e.message);
      throw e;
    }
    sent += n;
    if (n > 0) continue;
    drain();
    if (Date.now() - t > 20_000) throw new Error('server took no bytes for 20 s (hung?)');
    await new Promise(r => setImmediate(r));
  }
}

function drainer(ms: MessageSocket, rep: FuzzReport): () => void {
  const buf = new Uint8Array(1 << 20);
  return () => {
    for (;;) {
      let got: ReturnType<MessageSocket['recv']>;
      try {
        got = ms.recv(buf);
      } catch {
        return; // reset by the server: the next send ends the session
      }
      if (!got || got.bytes === 0) return;
      rep.replyBytes += got.bytes;
      for (const f of got.fds) f.close();
    }
  };
}

/** Connects, or explains why not: a refused connect names whether the server is still alive. */
async function connect(server: SoakServer): Promise<OwnedFd> {
  try {
    return connectUnix(server.socket);
  } catch (e) {
    await new Promise(r => setTimeout(r, 500)); // let a dying server's exit status arrive
    const state = server.exit ? `server ${server.exit}` : 'server alive';
    throw new Error(`connect: ${(e as Error).message} (${state}); output: ${server.tail}`);
  }
}

/** Runs `o.messages` messages in sessions against `server`; throws on a crash, hang or leak. */
export async function fuzzServer(server: SoakServer, o: FuzzOptions): Promise<FuzzReport> {
  const r = new Rng(o.seed);
  const rep: FuzzReport = {
    messages: 0,
    valid: 0,
    mutated: 0,
    withFd: 0,
    sessions: 0,
    unframed: 0,
    closedByServer: 0,
    busy: 0,
    replyBytes: 0,
    lastSession: { state: 0, messages: [] },
    checks: 0,
    samples: [],
    seconds: 0,
  };
  const start = Date.now();
  const mem = memfdCreate('soak-fuzz', 0x10000);
  try {
    await fuzzLoop(server, r, rep, o, mem);
  } catch (e) {
    // The failing session, to replay: the generator's state at its start, then its messages.
    const file = `${tmpdir()}/vfu-soak-failure-${process.pid}.txt`;
    writeFileSync(file, `${rep.lastSession.state}\n${rep.lastSession.messages.join('\n')}\n`);
    const where = `after ${rep.messages} messages; the last session is in ${file}`;
    throw new Error(`${(e as Error).message}\n(${where})`);
  } finally {
    mem.close();
  }
  rep.seconds = (Date.now() - start) / 1000;
  return rep;
}

async function fuzzLoop(
  server: SoakServer,
  r: Rng,
  rep: FuzzReport,
  o: FuzzOptions,
  mem: OwnedFd,
): Promise<void> {
  const start = Date.now();
  let nextSample = o.sampleEvery ?? Number.POSITIVE_INFINITY;
  while (rep.messages < o.messages) {
    await session(server, r, rep, o, mem);
    rep.sessions++;
    // Bounded generously: under nice 19 on a busy machine the server may get little CPU.
    await server.idle(60_000);
    if (rep.sessions % (o.checkEvery ?? 50) === 0) await healthy(server, rep);
    if (rep.messages >= nextSample) {
      rep.samples.push({ messages: rep.messages, rssKiB: server.rssKiB(), fds: server.fds() });
      nextSample += o.sampleEvery!;
      o.progress?.(progressLine(rep, start));
    }
  }
  await healthy(server, rep);
}

async function healthy(server: SoakServer, rep: FuzzReport): Promise<void> {
  await server.check();
  await server.idle();
  rep.checks++;
}

/**
 * Opens a session: connects and negotiates, waiting (bounded) for the server's VERSION reply, so
 * the connection is known to be the server's client and not still queued behind the last one.
 */
async function open(server: SoakServer, rep: FuzzReport): Promise<[OwnedFd, MessageSocket]> {
  for (;;) {
    const fd = await connect(server);
    const ms = new MessageSocket(fd.fd);
    ms.send(encodeVersion(0, false, 0, 0, '{}'));
    const error = await versionReply(ms);
    if (error === 0) return [fd, ms];
    fd.close();
    if (error !== 16) throw new Error(`VERSION refused with errno ${error}`);
    rep.busy++; // the previous client was still being let go: EBUSY is the server's answer
    await server.idle();
  }
}

/** The errno of the VERSION reply (0: accepted); its other bytes are left to the drainer. */
async function versionReply(ms: MessageSocket): Promise<number> {
  const buf = new Uint8Array(HEADER_SIZE);
  let got = 0;
  for (const t = Date.now(); got < HEADER_SIZE; ) {
    const r = ms.recv(buf.subarray(got));
    if (r?.bytes === 0) return 16;
    if (r) {
      for (const f of r.fds) f.close();
      got += r.bytes;
      continue;
    }
    if (Date.now() - t > 20_000) throw new Error('no VERSION reply within 20 s (server hung?)');
    await new Promise(res => setImmediate(res));
  }
  return decodeHeader(buf).error;
}

async function session(
  server: SoakServer,
  r: Rng,
  rep: FuzzReport,
  o: FuzzOptions,
  mem: OwnedFd,
): Promise<void> {
  const [fd, ms] = await open(server, rep);
  const drain = drainer(ms, rep);
  rep.lastSession = { state: r.state, messages: [] };
  const length = 1 + r.below(o.maxSession ?? 200);
  try {
    for (let i = 0; i < length && rep.messages < o.messages; i++) {
      const valid = validMessage(r);
      const last = i === length - 1 && r.chance(0.1);
      const m = last ? unframed(r, valid) : r.chance(0.5) ? valid : mutate(r, valid);
      const fds = r.chance(0.05) ? [mem.fd] : [];
      rep.lastSession.messages.push(`${fds.length ? 'fd ' : ''}${Buffer.from(m).toString('hex')}`);
      await sendAll(ms, m, fds, drain);
      rep.messages++;
      if (m === valid) rep.valid++;
      else rep.mutated++;
      if (last) rep.unframed++;
      if (fds.length) rep.withFd++;
      drain();
    }
  } catch (e) {
    if (!(e instanceof SessionEnded)) throw e;
    rep.closedByServer++;
  } finally {
    drain();
    fd.close();
  }
}

function progressLine(rep: FuzzReport, start: number): string {
  const s = (Date.now() - start) / 1000;
  const last = rep.samples[rep.samples.length - 1];
  return (
    `${rep.messages} messages, ${rep.sessions} sessions, ${Math.round(rep.messages / s)}/s; ` +
    `server RSS ${(last.rssKiB / 1024).toFixed(1)} MiB, ${last.fds} fds`
  );
}
