// The device-state stream: a sequence of records, each `type u16, reserved u16, length u32,
// payload, check u32` (little-endian; the check covers type to payload: a CRC-32, except for
// MEMORY records, see memoryCheck). The first record is the header; later records of the same
// kind supersede earlier ones, so pre-copy data followed by stop-copy data is one valid stream
// (QEMU sends them one after the other, §10.2).
import { crc32 } from 'node:zlib';
import { hash } from '@vfu/native';
import type { DeviceIdentity } from './identity.js';

export const MAGIC = 'VFUSTRM1';
/**
 * 2: the header carries the device's identity (its guest-visible layout) after the schema.
 * 3: adds the KIT record (the device kit's own state: interrupts, queued device work).
 * 4: a MEMORY record's bytes are checked by a lane hash (memoryCheck), not a CRC-32.
 * 5: that hash has sixteen lanes instead of four (a vector unit runs eight at once).
 */
export const FORMAT_VERSION = 5;
export const Rec = { HEADER: 1, STATE: 2, CONFIG: 3, MEMORY: 4, END: 5, KIT: 6 } as const;
export const RECORD_OVERHEAD = 12;
/**
 * Largest payload a record may announce; a destination refuses anything larger before buffering it.
 */
export const MAX_RECORD_PAYLOAD = (1 << 20) + 64;

export interface StreamHeader {
  deviceId: string;
  deviceVersion: number;
  schema: string;
  /** The device's identity as JSON (see identity.ts). */
  identity: string;
  formatVersion: number;
}

const enc = new TextEncoder(),
  dec = new TextDecoder();

export function record(type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECORD_OVERHEAD + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, type, true);
  dv.setUint32(4, payload.length, true);
  out.set(payload, 8);
  dv.setUint32(8 + payload.length, crc32(out.subarray(0, 8 + payload.length)), true);
  return out;
}

export function headerPayload(
  h: Omit<StreamHeader, 'formatVersion' | 'identity'> & { identity?: DeviceIdentity },
): Uint8Array {
  const id = enc.encode(h.deviceId),
    schema = enc.encode(h.schema),
    identity = enc.encode(JSON.stringify(h.identity ?? {}));
  const out = new Uint8Array(8 + 2 + 4 + 2 + id.length + 4 + schema.length + 4 + identity.length);
  const dv = new DataView(out.buffer);
  out.set(enc.encode(MAGIC), 0);
  dv.setUint16(8, FORMAT_VERSION, true);
  dv.setUint32(10, h.deviceVersion, true);
  dv.setUint16(14, id.length, true);
  out.set(id, 16);
  dv.setUint32(16 + id.length, schema.length, true);
  out.set(schema, 20 + id.length);
  const at = 20 + id.length + schema.length;
  dv.setUint32(at, identity.length, true);
  out.set(identity, at + 4);
  return out;
}

export function parseHeader(p: Uint8Array): StreamHeader | string {
  if (p.length < 16 || dec.decode(p.subarray(0, 8)) !== MAGIC)
    return 'not a vfio-user-ts device stream (bad magic)';
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  const formatVersion = dv.getUint16(8, true),
    deviceVersion = dv.getUint32(10, true),
    idLen = dv.getUint16(14, true);
  if (16 + idLen + 4 > p.length) return 'stream header truncated';
  const schemaLen = dv.getUint32(16 + idLen, true);
  if (20 + idLen + schemaLen > p.length) return 'stream header truncated';
  const at = 20 + idLen + schemaLen;
  // A format-1 header ends here: its identity is empty (the version check refuses it anyway).
  const identityLen = at + 4 <= p.length ? dv.getUint32(at, true) : 0;
  if (at + 4 + identityLen > p.length && identityLen) return 'stream header truncated';
  return {
    formatVersion,
    deviceVersion,
    deviceId: dec.decode(p.subarray(16, 16 + idLen)),
    schema: dec.decode(p.subarray(20 + idLen, at)),
    identity: identityLen ? dec.decode(p.subarray(at + 4, at + 4 + identityLen)) : '{}',
  };
}

/** Bytes of a MEMORY record before its data: type to length, then index, reserved, offset. */
export const MEMORY_HEAD = 20;

/**
 * The check of a MEMORY record: the CRC-32 of its 20-byte head (type, length, memory index and
 * offset) combined with @vfu/native's hash of its data bytes. The hash runs at memory speed
 * and fused with the copy each side makes anyway (into the source's shadow, into the
 * destination's memory), so bulk memory costs no checksum pass of its own; a CRC-32 of 1 GiB
 * costs about three copies of it.
 */
export function memoryCheck(head: Uint8Array, dataHash: number): number {
  return (crc32(head.subarray(0, MEMORY_HEAD)) ^ dataHash) >>> 0;
}

/**
 * A MEMORY record around `data` (payload: memory index u16, reserved u16, offset u64 as two
 * u32, then the bytes): its 20-byte head and 4-byte check, so the data need not be copied
 * into the record. `dataHash` is hash(data) as the data is now (computed if not given: a
 * caller that has just copied the data passes what copyAndHash returned).
 */
export function memoryRecord(
  index: number,
  offset: number,
  data: Uint8Array,
  dataHash = hash(data),
): { head: Uint8Array; crc: Uint8Array; length: number } {
  const head = new Uint8Array(MEMORY_HEAD),
    dv = new DataView(head.buffer);
  dv.setUint16(0, Rec.MEMORY, true);
  dv.setUint32(4, 12 + data.length, true);
  dv.setUint16(8, index, true);
  dv.setUint32(12, offset % 2 ** 32, true);
  dv.setUint32(16, Math.floor(offset / 2 ** 32), true);
  const crc = new Uint8Array(4);
  new DataView(crc.buffer).setUint32(0, memoryCheck(head, dataHash), true);
  return { head, crc, length: RECORD_OVERHEAD + 12 + data.length };
}
