import type { Field } from './layout.js';

/** Little-endian field access over a Uint8Array slice, without copying. */
export class Bytes {
  readonly dv: DataView;
  constructor(readonly u8: Uint8Array) {
    this.dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  }
  get length(): number {
    return this.u8.length;
  }
  u16(o: number): number {
    return this.dv.getUint16(o, true);
  }
  u32(o: number): number {
    return this.dv.getUint32(o, true);
  }
  /** u64 as a number: exact below 2^53; larger values come back inexact but still > 2^53. */
  u64(o: number): number {
    return this.dv.getUint32(o + 4, true) * 0x1_0000_0000 + this.dv.getUint32(o, true);
  }
  u64big(o: number): bigint {
    return this.dv.getBigUint64(o, true);
  }
  setU16(o: number, v: number): void {
    this.dv.setUint16(o, v, true);
  }
  setU32(o: number, v: number): void {
    this.dv.setUint32(o, v >>> 0, true);
  }
  setU64(o: number, v: number | bigint): void {
    if (typeof v === 'bigint') {
      this.dv.setBigUint64(o, v, true);
      return;
    }
    this.dv.setUint32(o, v % 0x1_0000_0000, true);
    this.dv.setUint32(o + 4, Math.floor(v / 0x1_0000_0000), true);
  }
  /** A layout field (layout.ts), read at its offset and width. */
  get(f: Field): number {
    const dv = this.dv;
    if (f.width === 4) return dv.getUint32(f.at, true);
    if (f.width === 2) return dv.getUint16(f.at, true);
    return dv.getUint32(f.at + 4, true) * 0x1_0000_0000 + dv.getUint32(f.at, true);
  }
  /** A layout field at `base` + its offset (an entry of a repeated structure). */
  getAt(base: number, f: Field): number {
    if (f.width === 4) return this.u32(base + f.at);
    if (f.width === 8) return this.u64(base + f.at);
    return this.u16(base + f.at);
  }
  /** Writes a layout field at its offset and width. */
  set(f: Field, v: number): void {
    const dv = this.dv;
    if (f.width === 4) dv.setUint32(f.at, v >>> 0, true);
    else if (f.width === 2) dv.setUint16(f.at, v, true);
    else {
      dv.setUint32(f.at, v % 0x1_0000_0000, true);
      dv.setUint32(f.at + 4, Math.floor(v / 0x1_0000_0000), true);
    }
  }
  setAt(base: number, f: Field, v: number): void {
    if (f.width === 4) this.setU32(base + f.at, v);
    else if (f.width === 8) this.setU64(base + f.at, v);
    else this.setU16(base + f.at, v);
  }
  static alloc(n: number): Bytes {
    return new Bytes(new Uint8Array(n));
  }
}
