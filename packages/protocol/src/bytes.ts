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
  static alloc(n: number): Bytes {
    return new Bytes(new Uint8Array(n));
  }
}
