// PCI configuration space of a type-0 function: contents plus per-bit write behaviour (read-only,
// writable, write-1-to-clear), BAR registers that size themselves, and capability chains.
import type { Bar } from './regions.js';

export const Cfg = {
  VENDOR: 0x00,
  DEVICE: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION: 0x08,
  CLASS: 0x09,
  CACHE_LINE: 0x0c,
  LATENCY: 0x0d,
  HEADER_TYPE: 0x0e,
  BAR0: 0x10,
  SUBSYS_VENDOR: 0x2c,
  SUBSYS: 0x2e,
  ROM: 0x30,
  CAP_PTR: 0x34,
  INT_LINE: 0x3c,
  INT_PIN: 0x3d,
} as const;
export const Command = {
  IO: 1 << 0,
  MEMORY: 1 << 1,
  BUS_MASTER: 1 << 2,
  PARITY: 1 << 6,
  SERR: 1 << 8,
  INTX_DISABLE: 1 << 10,
} as const;
export const Status = { INTERRUPT: 1 << 3, CAP_LIST: 1 << 4 } as const;
/** MSI Message Control bits (PCI Local Bus 3.0, §6.8.1.3), at the capability's offset 2. */
export const MsiControl = {
  ENABLE: 1 << 0,
  MULTIPLE_MESSAGE_ENABLE: 0b111 << 4,
  ADDRESS_64: 1 << 7,
  PER_VECTOR_MASK: 1 << 8,
} as const;
/** MSI-X Message Control bits (PCI Local Bus 3.0, §6.8.2.3), at the capability's offset 2. */
export const MsixControl = { FUNCTION_MASK: 1 << 14, ENABLE: 1 << 15 } as const;

export interface PciIdentity {
  vendor: number;
  device: number;
  subsystemVendor?: number;
  subsystem?: number;
  revision?: number;
  classCode: number /** 1 = INTA# … 4 = INTD#, 0 = none. */;
  pin?: number;
}

/** Called after a guest/client write so the device can react (e.g. to MSI enable or COMMAND). */
export type ConfigWriteHook = (offset: number, size: number) => void;

export class ConfigSpace {
  readonly bytes: Uint8Array;
  readonly #wmask: Uint8Array;
  readonly #w1c: Uint8Array;
  readonly #dv: DataView;
  readonly #hooks: { start: number; end: number; fn: ConfigWriteHook }[] = [];
  #bars: (Bar | undefined)[] = [];

  constructor(readonly size: 256 | 4096) {
    this.bytes = new Uint8Array(size);
    this.#wmask = new Uint8Array(size);
    this.#w1c = new Uint8Array(size);
    this.#dv = new DataView(this.bytes.buffer);
  }

  u8(o: number) {
    return this.bytes[o];
  }
  u16(o: number) {
    return this.#dv.getUint16(o, true);
  }
  u32(o: number) {
    return this.#dv.getUint32(o, true);
  }
  /** Sets contents directly (device side): not subject to masks. */
  set8(o: number, v: number) {
    this.bytes[o] = v;
  }
  set16(o: number, v: number) {
    this.#dv.setUint16(o, v, true);
  }
  set32(o: number, v: number) {
    this.#dv.setUint32(o, v >>> 0, true);
  }
  /** Marks bits as writable by the client (`mask` over `width` bytes at `o`). */
  writable(o: number, width: number, mask = 2 ** (8 * width) - 1) {
    for (let i = 0; i < width; i++) this.#wmask[o + i] |= (mask >>> (8 * i)) & 0xff;
  }
  /** Marks bits as write-1-to-clear. */
  w1c(o: number, width: number, mask: number) {
    for (let i = 0; i < width; i++) this.#w1c[o + i] |= (mask >>> (8 * i)) & 0xff;
  }
  onWrite(start: number, end: number, fn: ConfigWriteHook) {
    this.#hooks.push({ start, end, fn });
  }

  get command(): number {
    return this.u16(Cfg.COMMAND);
  }

  setIdentity(id: PciIdentity): void {
    this.set16(Cfg.VENDOR, id.vendor);
    this.set16(Cfg.DEVICE, id.device);
    this.set8(Cfg.REVISION, id.revision ?? 0);
    this.set8(Cfg.CLASS, id.classCode & 0xff);
    this.set16(Cfg.CLASS + 1, id.classCode >>> 8);
    this.set16(Cfg.SUBSYS_VENDOR, id.subsystemVendor ?? id.vendor);
    this.set16(Cfg.SUBSYS, id.subsystem ?? 0);
    this.set8(Cfg.INT_PIN, id.pin ?? 0);
    this.writable(
      Cfg.COMMAND,
      2,
      Command.IO |
        Command.MEMORY |
        Command.BUS_MASTER |
        Command.PARITY |
        Command.SERR |
        Command.INTX_DISABLE,
    );
    this.w1c(Cfg.STATUS, 2, 0xf900);
    this.writable(Cfg.CACHE_LINE, 1);
    this.writable(Cfg.LATENCY, 1);
    this.writable(Cfg.INT_LINE, 1);
  }

  /** BAR registers: the type bits are read-only; the address bits below the size are zero. */
  setBars(bars: (Bar | undefined)[]): void {
    this.#bars = bars;
    bars.forEach((b, i) => {
      if (!b) return;
      const o = Cfg.BAR0 + 4 * i;
      this.set32(o, b.typeBits);
      this.writable(o, 4, b.kind === 'io' ? ~(b.size - 1) & ~0x3 : ~(b.size - 1) & ~0xf);
      if (b.kind === 'mem64')
        this.writable(o + 4, 4, b.size > 2 ** 32 ? ~(b.size / 2 ** 32 - 1) : 0xffffffff);
    });
  }

  /** Expansion ROM BAR (0x30): address bits above the size writable, bit 0 (enable) writable. */
  setRom(size: number): void {
    this.writable(Cfg.ROM, 4, (~(size - 1) & 0xfffff800) | 1);
  }

  /** A client's read of `len` bytes at `o` (any alignment). */
  read(o: number, out: Uint8Array): void {
    out.set(this.bytes.subarray(o, o + out.length));
  }

  /**
   * A client's write: writable bits take the new value, W1C bits clear where 1 is written, the rest
   * stay.
   */
  write(o: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const a = o + i,
        v = data[i],
        wm = this.#wmask[a],
        cm = this.#w1c[a];
      this.bytes[a] = ((this.bytes[a] & ~wm) | (v & wm)) & ~(v & cm);
    }
    const end = o + data.length;
    for (const h of this.#hooks) if (o < h.end && end > h.start) h.fn(o, data.length);
  }

  /** Device-side status bit for a pending INTx (STATUS.INTERRUPT). */
  setInterruptStatus(on: boolean) {
    this.set16(
      Cfg.STATUS,
      on ? this.u16(Cfg.STATUS) | Status.INTERRUPT : this.u16(Cfg.STATUS) & ~Status.INTERRUPT,
    );
  }

  /** Saves what a client can change, for migration. */
  snapshot(): Uint8Array {
    return this.bytes.slice();
  }
  restore(b: Uint8Array): void {
    if (b.length !== this.size)
      throw new RangeError(`config snapshot of ${b.length} bytes for a ${this.size}-byte space`);
    // Only client-writable bits are restored; identity and read-only fields stay ours.
    for (let i = 0; i < this.size; i++)
      this.bytes[i] = (this.bytes[i] & ~this.#wmask[i]) | (b[i] & this.#wmask[i]);
    for (const h of this.#hooks) h.fn(h.start, h.end - h.start);
  }
  /** Base address programmed into BAR i (0 if none). */
  barAddress(i: number): number {
    const b = this.#bars[i];
    if (!b) return 0;
    const lo = this.u32(Cfg.BAR0 + 4 * i) & (b.kind === 'io' ? ~0x3 : ~0xf);
    return b.kind === 'mem64' ? (lo >>> 0) + this.u32(Cfg.BAR0 + 4 * i + 4) * 2 ** 32 : lo >>> 0;
  }
}
