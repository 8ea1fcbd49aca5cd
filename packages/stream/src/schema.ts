// Declared device state: a device lists its fields and their types; this module makes the live
// object, and turns it into bytes and back with every field checked. Device authors write no
// serialization code.

export type FieldType =
  | { readonly t: 'u8' }
  | { readonly t: 'u16' }
  | { readonly t: 'u32' }
  | { readonly t: 'u64' }
  | { readonly t: 'bool' }
  | { readonly t: 'bytes'; readonly n: number };

export const u8 = { t: 'u8' } as const,
  u16 = { t: 'u16' } as const,
  u32 = { t: 'u32' } as const;
/** A 64-bit field held as a number: exact up to 2^53. */
export const u64 = { t: 'u64' } as const;
export const bool = { t: 'bool' } as const;
export const bytes = (n: number) => ({ t: 'bytes', n }) as const;

export type Schema = Record<string, FieldType>;
type Value<F extends FieldType> = F extends { t: 'bytes' }
  ? Uint8Array
  : F extends { t: 'bool' }
    ? boolean
    : number;
export type StateOf<S extends Schema> = { [K in keyof S]: Value<S[K]> };

const width = (f: FieldType) =>
  f.t === 'u8' || f.t === 'bool'
    ? 1
    : f.t === 'u16'
      ? 2
      : f.t === 'u32'
        ? 4
        : f.t === 'u64'
          ? 8
          : f.n;
const max = { u8: 0xff, u16: 0xffff, u32: 0xffffffff, u64: Number.MAX_SAFE_INTEGER } as const;

export function createState<S extends Schema>(schema: S): StateOf<S> {
  const o: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(schema))
    o[k] = f.t === 'bytes' ? new Uint8Array(f.n) : f.t === 'bool' ? false : 0;
  return o as StateOf<S>;
}

export function resetState<S extends Schema>(schema: S, state: StateOf<S>): void {
  const fresh = createState(schema) as Record<string, unknown>;
  for (const k of Object.keys(schema)) {
    const cur = (state as Record<string, unknown>)[k];
    if (cur instanceof Uint8Array) cur.fill(0);
    else (state as Record<string, unknown>)[k] = fresh[k];
  }
}

export const schemaSize = (schema: Schema) =>
  Object.values(schema).reduce((a, f) => a + width(f), 0);

/** A description of the schema (names and types), stored with the state to detect mismatches. */
export const schemaSignature = (schema: Schema) =>
  Object.entries(schema)
    .map(([k, f]) => `${k}:${f.t}${f.t === 'bytes' ? f.n : ''}`)
    .join(',');

export function encodeState<S extends Schema>(schema: S, state: StateOf<S>): Uint8Array {
  const out = new Uint8Array(schemaSize(schema));
  const dv = new DataView(out.buffer);
  let o = 0;
  for (const [k, f] of Object.entries(schema)) {
    const v = (state as Record<string, unknown>)[k];
    switch (f.t) {
      case 'u8':
        dv.setUint8(o, v as number);
        break;
      case 'bool':
        dv.setUint8(o, v ? 1 : 0);
        break;
      case 'u16':
        dv.setUint16(o, v as number, true);
        break;
      case 'u32':
        dv.setUint32(o, v as number, true);
        break;
      case 'u64':
        dv.setBigUint64(o, BigInt(v as number), true);
        break;
      case 'bytes':
        out.set(v as Uint8Array, o);
        break;
    }
    o += width(f);
  }
  return out;
}

/** Decodes state bytes; returns an error message instead of a half-made state. */
export function decodeState<S extends Schema>(schema: S, b: Uint8Array): StateOf<S> | string {
  if (b.length !== schemaSize(schema))
    return `state is ${b.length} bytes, the schema needs ${schemaSize(schema)}`;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const o: Record<string, unknown> = {};
  let at = 0;
  for (const [k, f] of Object.entries(schema)) {
    switch (f.t) {
      case 'u8':
        o[k] = dv.getUint8(at);
        break;
      case 'bool': {
        const v = dv.getUint8(at);
        if (v > 1) return `field ${k}: ${v} is not a boolean`;
        o[k] = v === 1;
        break;
      }
      case 'u16':
        o[k] = dv.getUint16(at, true);
        break;
      case 'u32':
        o[k] = dv.getUint32(at, true);
        break;
      case 'u64': {
        const v = dv.getBigUint64(at, true);
        if (v > BigInt(max.u64)) return `field ${k}: ${v} exceeds 2^53`;
        o[k] = Number(v);
        break;
      }
      case 'bytes':
        o[k] = b.slice(at, at + f.n);
        break;
    }
    at += width(f);
  }
  return o as StateOf<S>;
}

/** Copies decoded state into the live object (keeps the same Uint8Arrays). */
export function assignState<S extends Schema>(schema: S, into: StateOf<S>, from: StateOf<S>): void {
  for (const k of Object.keys(schema)) {
    const cur = (into as Record<string, unknown>)[k];
    const v = (from as Record<string, unknown>)[k];
    if (cur instanceof Uint8Array) cur.set(v as Uint8Array);
    else (into as Record<string, unknown>)[k] = v;
  }
}
