// The wire between `vfu-migrate send` and `vfu-migrate receive` (docs/migration.md, "Between
// hosts"): frames of `type u16, reserved u16, length u32` (little-endian) and a payload. DATA
// carries the device-state stream as it is (its records are checksummed end to end: the
// destination's server checks them); every other message is a small JSON object, checked here
// field by field. Pure: no I/O.

/** Version of this wire protocol; a peer speaking another is refused at HELLO. */
export const WIRE_VERSION = 1;
const FRAME_HEAD = 8;
/** Largest JSON payload: control messages are small; anything larger is a broken peer. */
export const MAX_CONTROL = 64 * 1024;
/** Largest DATA payload; a sender cuts bigger chunks. */
export const MAX_DATA = 16 << 20;

export const Msg = {
  HELLO: 1,
  AUTH: 2,
  DEVICE: 3,
  START: 4,
  DATA: 5,
  PROGRESS: 6,
  SWITCHOVER: 7,
  RESULT: 8,
  ABORT: 9,
} as const;
export type MsgType = (typeof Msg)[keyof typeof Msg];
const names = Object.fromEntries(Object.entries(Msg).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;
export const msgName = (t: number): string => names[t] ?? `type ${t}`;

export type Role = 'source' | 'destination';

interface Hello {
  wire: number;
  role: Role;
  nonce: string;
  software: string;
}
interface Auth {
  proof: string;
}
interface DeviceMsg {
  protocol: 'v1' | 'v2';
  identity: Record<string, string>;
  state?: string;
}
interface ProgressMsg {
  phase: string;
  iteration: number;
  bytes: number;
  pending: number;
}
export interface ResultMsg {
  step: 'start' | 'switchover' | 'report';
  ok: boolean;
  state?: string;
  error?: string;
  report?: Record<string, unknown>;
}
interface AbortMsg {
  reason: string;
  state?: string;
}

export type Message =
  | { type: typeof Msg.HELLO; body: Hello }
  | { type: typeof Msg.AUTH; body: Auth }
  | { type: typeof Msg.DEVICE; body: DeviceMsg }
  | { type: typeof Msg.START; body: Record<string, never> }
  | { type: typeof Msg.DATA; data: Uint8Array }
  | { type: typeof Msg.PROGRESS; body: ProgressMsg }
  | { type: typeof Msg.SWITCHOVER; body: Record<string, never> }
  | { type: typeof Msg.RESULT; body: ResultMsg }
  | { type: typeof Msg.ABORT; body: AbortMsg };

/** A peer broke the wire protocol (bad frame, bad message, message out of order). */
export class WireError extends Error {
  override readonly name = 'WireError';
}

const enc = new TextEncoder(),
  dec = new TextDecoder('utf-8', { fatal: true });

function head(type: number, length: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEAD);
  const dv = new DataView(h.buffer);
  dv.setUint16(0, type, true);
  dv.setUint32(4, length, true);
  return h;
}

/** A DATA frame as head and payload (the payload is not copied). */
export function dataFrame(data: Uint8Array): [Uint8Array, Uint8Array] {
  if (data.length > MAX_DATA) throw new RangeError(`DATA of ${data.length} bytes > ${MAX_DATA}`);
  return [head(Msg.DATA, data.length), data];
}

/** A control frame: its JSON body after the head. */
export function controlFrame(type: Exclude<MsgType, typeof Msg.DATA>, body: object): Uint8Array {
  const json = enc.encode(JSON.stringify(body));
  if (json.length > MAX_CONTROL) throw new RangeError(`${msgName(type)} too large`);
  const out = new Uint8Array(FRAME_HEAD + json.length);
  out.set(head(type, json.length));
  out.set(json, FRAME_HEAD);
  return out;
}

/**
 * Cuts frames out of bytes as they arrive in any chunking. States: reading a head, reading a
 * payload, failed (for good: a byte stream cannot be resynchronised). Lengths are checked
 * against the limits before anything is buffered.
 */
export class FrameDecoder {
  #state: 'head' | 'payload' | 'failed' = 'head';
  #head = new Uint8Array(FRAME_HEAD);
  #have = 0;
  #type = 0;
  #payload = new Uint8Array(0);
  /**
   * Largest DATA payload taken now: none until the handshake is done (a peer that has proved
   * nothing cannot make this side buffer a stream), MAX_DATA after.
   */
  maxData = 0;

  get state(): 'head' | 'payload' | 'failed' {
    return this.#state;
  }
  /** True between frames (a clean place for the stream to end). */
  get idle(): boolean {
    return this.#state === 'head' && this.#have === 0;
  }

  /** Decodes every frame completed by `chunk`. Throws WireError (and stays failed). */
  push(chunk: Uint8Array): Message[] {
    if (this.#state === 'failed') throw new WireError('the wire already failed');
    const out: Message[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.#state === 'head') {
        const n = Math.min(FRAME_HEAD - this.#have, chunk.length - off);
        this.#head.set(chunk.subarray(off, off + n), this.#have);
        this.#have += n;
        off += n;
        if (this.#have < FRAME_HEAD) break;
        this.#begin();
        this.#have = 0;
        if (this.#payload.length > 0) continue;
      } else {
        const n = Math.min(this.#payload.length - this.#have, chunk.length - off);
        this.#payload.set(chunk.subarray(off, off + n), this.#have);
        this.#have += n;
        off += n;
        if (this.#have < this.#payload.length) break;
      }
      out.push(this.#finish());
    }
    return out;
  }

  #fail(msg: string): never {
    this.#state = 'failed';
    throw new WireError(msg);
  }

  /** A head is complete: checks type and length, readies the payload buffer. */
  #begin(): void {
    const dv = new DataView(this.#head.buffer);
    const type = dv.getUint16(0, true),
      reserved = dv.getUint16(2, true),
      length = dv.getUint32(4, true);
    if (!names[type]) this.#fail(`unknown message type ${type} (corrupted wire?)`);
    if (reserved !== 0) this.#fail(`reserved bits set in a ${msgName(type)} frame`);
    const max = type === Msg.DATA ? this.maxData : MAX_CONTROL;
    if (length > max) this.#fail(`${msgName(type)} of ${length} bytes exceeds ${max}`);
    this.#type = type;
    this.#payload = new Uint8Array(length);
    this.#state = 'payload';
  }

  #finish(): Message {
    this.#state = 'head';
    this.#have = 0;
    const p = this.#payload;
    this.#payload = new Uint8Array(0);
    if (this.#type === Msg.DATA) return { type: Msg.DATA, data: p };
    return parseControl(this.#type, p, m => this.#fail(m));
  }
}

type Fail = (m: string) => never;
type Json = Record<string, unknown>;

function str(o: Json, k: string, fail: Fail, max = 4096): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length > max) fail(`field "${k}" must be a string`);
  return v;
}
function optStr(o: Json, k: string, fail: Fail): string | undefined {
  return o[k] === undefined ? undefined : str(o, k, fail);
}
function num(o: Json, k: string, fail: Fail): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    fail(`field "${k}" must be a whole number`);
  return v;
}
function oneOf<T extends string>(o: Json, k: string, allowed: readonly T[], fail: Fail): T {
  const v = o[k];
  if (!allowed.includes(v as T)) fail(`field "${k}" must be one of ${allowed.join(', ')}`);
  return v as T;
}
function facts(o: Json, k: string, fail: Fail): Record<string, string> {
  const v = o[k];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`field "${k}" not an object`);
  for (const x of Object.values(v)) if (typeof x !== 'string') fail(`field "${k}" not strings`);
  return v as Record<string, string>;
}

/** A control message's JSON, checked field by field for its type. */
function parseControl(type: number, p: Uint8Array, fail: Fail): Message {
  let o: Json;
  try {
    o = JSON.parse(dec.decode(p)) as Json;
  } catch {
    fail(`${msgName(type)} is not JSON (corrupted wire?)`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    fail(`${msgName(type)} is not a JSON object`);
  const f: Fail = m => fail(`${msgName(type)}: ${m}`);
  switch (type) {
    case Msg.HELLO:
      return {
        type,
        body: {
          wire: num(o, 'wire', f),
          role: oneOf(o, 'role', ['source', 'destination'] as const, f),
          nonce: str(o, 'nonce', f, 128),
          software: str(o, 'software', f, 256),
        },
      };
    case Msg.AUTH:
      return { type, body: { proof: str(o, 'proof', f, 256) } };
    case Msg.DEVICE:
      return {
        type,
        body: {
          protocol: oneOf(o, 'protocol', ['v1', 'v2'] as const, f),
          identity: facts(o, 'identity', f),
          state: optStr(o, 'state', f),
        },
      };
    case Msg.START:
    case Msg.SWITCHOVER:
      return { type, body: {} };
    case Msg.PROGRESS:
      return {
        type,
        body: {
          phase: str(o, 'phase', f, 32),
          iteration: num(o, 'iteration', f),
          bytes: num(o, 'bytes', f),
          pending: num(o, 'pending', f),
        },
      };
    case Msg.RESULT: {
      const ok = o.ok;
      if (typeof ok !== 'boolean') f('field "ok" must be true or false');
      const report = o.report;
      if (report !== undefined && (typeof report !== 'object' || report === null))
        f('field "report" must be an object');
      return {
        type,
        body: {
          step: oneOf(o, 'step', ['start', 'switchover', 'report'] as const, f),
          ok,
          state: optStr(o, 'state', f),
          error: optStr(o, 'error', f),
          report: report as Json | undefined,
        },
      };
    }
    case Msg.ABORT:
      return { type, body: { reason: str(o, 'reason', f), state: optStr(o, 'state', f) } };
  }
  return fail(`unknown message type ${type}`);
}

/**
 * What a destination half accepts next, state by state (a source half's messages): anything
 * else is a protocol error. ABORT is accepted in every state but the last; the source's final
 * RESULT (its report) once the device was readied.
 */
export type ReceiverState = 'hello' | 'auth' | 'device' | 'start' | 'data' | 'result' | 'done';
const receiverArcs: Record<ReceiverState, Partial<Record<number, ReceiverState>>> = {
  hello: { [Msg.HELLO]: 'auth' },
  auth: { [Msg.AUTH]: 'device' },
  device: { [Msg.DEVICE]: 'start' },
  start: { [Msg.START]: 'data', [Msg.PROGRESS]: 'start', [Msg.RESULT]: 'done' },
  data: {
    [Msg.DATA]: 'data',
    [Msg.PROGRESS]: 'data',
    [Msg.SWITCHOVER]: 'result',
    [Msg.RESULT]: 'done',
  },
  result: { [Msg.RESULT]: 'done', [Msg.PROGRESS]: 'result' },
  done: {},
};

/** The receiver's next state after `type`, or a WireError naming what was expected. */
export function receiverNext(state: ReceiverState, type: number): ReceiverState {
  if (type === Msg.ABORT && state !== 'done') return 'done';
  const next = receiverArcs[state][type];
  if (!next) {
    const want = Object.keys(receiverArcs[state]).map(t => msgName(Number(t)));
    throw new WireError(
      `${msgName(type)} out of order (expected ${want.join(' or ') || 'nothing more'})`,
    );
  }
  return next;
}
