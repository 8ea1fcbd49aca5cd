// The device-state stream: a sequence of records, each `type u16, reserved u16, length u32,
// payload, crc32 u32` (little-endian; the CRC covers type to payload). The first record is the
// header; later records of the same kind supersede earlier ones, so pre-copy data followed by
// stop-copy data is one valid stream (migration-notes: QEMU concatenates them).
import { crc32 } from 'node:zlib';

export const MAGIC = 'VFUSTRM1';
export const FORMAT_VERSION = 1;
export const Rec = { HEADER: 1, STATE: 2, CONFIG: 3, MEMORY: 4, END: 5 } as const;
export const RECORD_OVERHEAD = 12;
/** Largest payload a record may announce; a destination refuses anything larger before buffering it. */
export const MAX_RECORD_PAYLOAD = (1 << 20) + 64;

export interface StreamHeader { deviceId: string; deviceVersion: number; schema: string; formatVersion: number }

const enc = new TextEncoder(), dec = new TextDecoder();

export function record(type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECORD_OVERHEAD + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, type, true); dv.setUint32(4, payload.length, true);
  out.set(payload, 8);
  dv.setUint32(8 + payload.length, crc32(out.subarray(0, 8 + payload.length)), true);
  return out;
}

export function headerPayload(h: Omit<StreamHeader, 'formatVersion'>): Uint8Array {
  const id = enc.encode(h.deviceId), schema = enc.encode(h.schema);
  const out = new Uint8Array(8 + 2 + 4 + 2 + id.length + 4 + schema.length);
  const dv = new DataView(out.buffer);
  out.set(enc.encode(MAGIC), 0);
  dv.setUint16(8, FORMAT_VERSION, true); dv.setUint32(10, h.deviceVersion, true);
  dv.setUint16(14, id.length, true); out.set(id, 16);
  dv.setUint32(16 + id.length, schema.length, true); out.set(schema, 20 + id.length);
  return out;
}

export function parseHeader(p: Uint8Array): StreamHeader | string {
  if (p.length < 16 || dec.decode(p.subarray(0, 8)) !== MAGIC) return 'not a vfio-user-ts device stream (bad magic)';
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  const formatVersion = dv.getUint16(8, true), deviceVersion = dv.getUint32(10, true), idLen = dv.getUint16(14, true);
  if (16 + idLen + 4 > p.length) return 'stream header truncated';
  const schemaLen = dv.getUint32(16 + idLen, true);
  if (20 + idLen + schemaLen > p.length) return 'stream header truncated';
  return { formatVersion, deviceVersion, deviceId: dec.decode(p.subarray(16, 16 + idLen)), schema: dec.decode(p.subarray(20 + idLen, 20 + idLen + schemaLen)) };
}

/** MEMORY record payload: memory index u16, reserved u16, offset u64 (as two u32), then bytes. */
export function memoryPayload(index: number, offset: number, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + bytes.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, index, true); dv.setUint32(4, offset % 2 ** 32, true); dv.setUint32(8, Math.floor(offset / 2 ** 32), true);
  out.set(bytes, 12);
  return out;
}
