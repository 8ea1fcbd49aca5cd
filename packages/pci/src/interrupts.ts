// Interrupt state of a device: the client's eventfds per index and vector (DEVICE_SET_IRQS),
// masks and pending bits, and the gating of §5.3 (INTX_DISABLE, MSI/MSI-X enable and masks,
// nothing delivered while the device is stopped).
import {
  eventfdWrite,
  eventfdRead,
  FdWatcher,
  type OwnedFd,
  closeAll,
  isEventfd,
} from '@vfu/native';
import { Errno, Irq, IrqInfoFlag, IrqSetFlag, type SetIrqs } from '@vfu/protocol';
import { Cfg, Command, MsiControl, MsixControl, type ConfigSpace } from './config-space.js';
import type { CapabilityLayout } from './capabilities.js';
import { PciError } from './errors.js';

/** Offset of the vector-control word (bit 0: mask) in a 16-byte MSI-X table entry. */
const MSIX_VECTOR_CONTROL = 12;

class Vectors {
  fds: (OwnedFd | undefined)[];
  masked: boolean[];
  pending: boolean[];
  constructor(readonly count: number) {
    this.fds = new Array(count);
    this.masked = new Array(count).fill(false);
    this.pending = new Array(count).fill(false);
  }
  bound(): boolean {
    return this.fds.some(Boolean);
  }
  clear(): void {
    closeAll(this.fds.filter((f): f is OwnedFd => !!f));
    this.fds = new Array(this.count);
  }
}

export interface InterruptStats {
  delivered: number[];
  dropped: number;
}

export class Interrupts {
  readonly #v: Vectors[];
  #intxAsserted = false;
  #intxMasked = false; // AUTOMASKED: masked after each delivery until UNMASK
  #resample: { fd: OwnedFd; watch: FdWatcher } | null = null;
  #held = false; // device stopped: deliver later
  #sink: ((index: number, vector: number) => void) | null = null;
  readonly stats: InterruptStats = { delivered: [0, 0, 0, 0, 0], dropped: 0 };
  /** The MSI-X table (16 bytes a vector: address, data, vector control), guest-visible state. */
  readonly msixTable: Uint8Array;

  constructor(
    private readonly cfg: ConfigSpace,
    private readonly caps: CapabilityLayout,
    msixVectors: number,
  ) {
    this.msixTable = new Uint8Array(msixVectors * 16);
    const intx = cfg.u8(Cfg.INT_PIN) ? 1 : 0;
    this.#v = [
      new Vectors(intx),
      new Vectors(caps.msiVectors),
      new Vectors(msixVectors),
      new Vectors(1),
      new Vectors(1),
    ];
    this.#resetMsixTable();
  }

  /**
   * Device reset: the guest-visible interrupt state back to power-on (INTx de-asserted and
   * unmasked, nothing pending, the MSI-X table zeroed with every vector's mask bit set, as PCI
   * Local Bus 3.0 §6.8.2.9 and QEMU's msix_reset do; the masks written before are forgotten).
   * The client's eventfds stay bound, as after VFIO_DEVICE_RESET: they belong to its connection.
   */
  reset(): void {
    for (const v of this.#v) v.pending.fill(false);
    this.#v[Irq.MSI].masked.fill(false); // MSI mask bits live in config space, reset with it
    this.#intxMasked = false;
    this.lower();
    this.#resetMsixTable();
  }

  /**
   * The table reads back as after reset, every vector masked, but delivery is gated only by
   * masks the client has written since: QEMU's vfio-pci emulates the MSI-X table itself and
   * never writes the device's, so a power-on mask honoured here would silence every vector.
   */
  #resetMsixTable(): void {
    this.msixTable.fill(0);
    for (let vec = 0; vec < this.#v[Irq.MSIX].count; vec++) {
      this.msixTable[vec * 16 + MSIX_VECTOR_CONTROL] = 1;
      this.#v[Irq.MSIX].masked[vec] = false;
    }
  }

  count(index: number): number {
    return this.#v[index]?.count ?? 0;
  }

  info(index: number): { flags: number; count: number } {
    const count = this.count(index);
    const flags =
      index === Irq.INTX
        ? IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED
        : index === Irq.REQ
          ? IrqInfoFlag.EVENTFD
          : IrqInfoFlag.EVENTFD | IrqInfoFlag.NORESIZE;
    return { flags, count };
  }

  /**
   * DEVICE_SET_IRQS after the codec's checks; takes ownership of `fds` (closed when refused). A
   * refused request throws a PciError.
   */
  set(req: SetIrqs, fds: OwnedFd[]): void {
    const refuse = (why: string, errno: number = Errno.EINVAL) => {
      closeAll(fds);
      return new PciError(errno, `SET_IRQS index ${req.index}: ${why}`);
    };
    const v = this.#v[req.index];
    const data = req.flags & IrqSetFlag.DATA_TYPE_MASK,
      action = req.flags & IrqSetFlag.ACTION_TYPE_MASK;
    if (req.count === 0) {
      // TRIGGER|NONE, start 0: disable the index
      if (req.start >= v.count && v.count === 0) throw refuse('the device has no such vectors');
      v.clear();
      if (req.index === Irq.INTX) this.#stopResample();
      return;
    }
    if (req.start >= v.count || req.start + req.count > v.count)
      throw refuse(`vectors ${req.start}+${req.count} beyond the device's ${v.count}`);
    // Interrupt fds are eventfds: anything else is refused here, before it is written or polled.
    if (data === IrqSetFlag.DATA_EVENTFD && !fds.every(f => isEventfd(f.fd)))
      throw refuse('an fd that is not an eventfd');
    const range = Array.from({ length: req.count }, (_, i) => req.start + i);
    const on = (i: number) =>
      data === IrqSetFlag.DATA_NONE ||
      (data === IrqSetFlag.DATA_BOOL && req.bools![i - req.start] !== 0);
    switch (action) {
      case IrqSetFlag.ACTION_TRIGGER:
        if (data === IrqSetFlag.DATA_EVENTFD) {
          if (fds.length > 0 && req.index <= Irq.MSIX) {
            // Only one of INTx, MSI and MSI-X at a time (the kernel's rule; QEMU disables first).
            const other = [Irq.INTX, Irq.MSI, Irq.MSIX].find(
              i => i !== req.index && this.#v[i].bound(),
            );
            if (other !== undefined)
              throw refuse(`index ${other} has eventfds bound: disable it first`);
          }
          range.forEach((vec, i) => {
            v.fds[vec]?.close();
            v.fds[vec] = fds[i];
          });
          // A line already asserted (e.g. loaded by a migration) is signalled on its new eventfd.
          if (req.index === Irq.INTX && fds.length) this.#unmaskIntx();
          return;
        }
        for (const vec of range) if (on(vec)) this.#signal(req.index, vec); // loop-back test
        return;
      case IrqSetFlag.ACTION_MASK:
      case IrqSetFlag.ACTION_UNMASK: {
        const mask = action === IrqSetFlag.ACTION_MASK;
        if (data === IrqSetFlag.DATA_EVENTFD) {
          if (req.index !== Irq.INTX || mask) {
            if (!mask) throw refuse('only INTx takes an unmask eventfd (resample)');
            closeAll(fds);
            return;
          }
          this.#stopResample();
          if (fds[0]) {
            const fd = fds[0];
            this.#resample = {
              fd,
              watch: new FdWatcher(fd.fd, () => {
                if (eventfdRead(fd.fd) !== null) this.#unmaskIntx();
              }),
            };
          }
          return;
        }
        for (const vec of range)
          if (on(vec)) {
            if (req.index === Irq.INTX) {
              if (mask) this.#intxMasked = true;
              else this.#unmaskIntx();
            } else {
              v.masked[vec] = mask;
              if (!mask) this.#flushPending(req.index, vec);
            }
          }
        return;
      }
    }
    throw refuse(`action 0x${action.toString(16)} is none of TRIGGER, MASK, UNMASK`);
  }

  /** The device raises an interrupt (vector of MSI/MSI-X; INTx ignores it). */
  raise(vector = 0): void {
    const cmd = this.cfg.command;
    if (this.msixEnabled) {
      this.#message(Irq.MSIX, vector, this.#msixFunctionMasked);
      return;
    }
    if (this.msiEnabled) {
      this.#message(Irq.MSI, vector, this.#msiMasked(vector));
      return;
    }
    this.#intxAsserted = true;
    this.cfg.setInterruptStatus(true);
    if (!(cmd & Command.INTX_DISABLE)) this.#deliverIntx();
  }

  /** De-asserts INTx (level-triggered: the device's condition went away). */
  lower(): void {
    this.#intxAsserted = false;
    this.cfg.setInterruptStatus(false);
  }

  get intxAsserted(): boolean {
    return this.#intxAsserted;
  }
  get msiEnabled(): boolean {
    return (
      this.caps.msi !== undefined && (this.cfg.u16(this.caps.msi + 2) & MsiControl.ENABLE) !== 0
    );
  }
  get msixEnabled(): boolean {
    return (
      this.caps.msix !== undefined && (this.cfg.u16(this.caps.msix + 2) & MsixControl.ENABLE) !== 0
    );
  }
  get #msixFunctionMasked(): boolean {
    return (
      this.caps.msix !== undefined &&
      (this.cfg.u16(this.caps.msix + 2) & MsixControl.FUNCTION_MASK) !== 0
    );
  }
  #msiMasked(vec: number): boolean {
    return this.caps.msiMasking && ((this.cfg.u32(this.caps.msi! + 0x10) >>> vec) & 1) === 1;
  }

  /** While held (device not running) nothing is delivered; what was raised goes out on release. */
  hold(on: boolean): void {
    this.#held = on;
    if (!on) this.#deliverWaiting();
  }

  /** Called after config writes that may unmask (COMMAND, MSI mask bits, MSI-X control). */
  configChanged(): void {
    if (!this.#held) this.#deliverWaiting();
  }

  /** Delivers what gating held back: an asserted INTx, pending MSI and MSI-X vectors. */
  #deliverWaiting(): void {
    if (this.#intxAsserted && !(this.cfg.command & Command.INTX_DISABLE)) this.#deliverIntx();
    for (const idx of [Irq.MSI, Irq.MSIX])
      this.#v[idx].pending.forEach((p, vec) => p && this.#flushPending(idx, vec));
  }

  /** Client went away: forget every eventfd (the MSI-X table keeps the masks the guest wrote). */
  releaseAll(): void {
    this.#v.forEach((v, index) => {
      v.clear();
      if (index !== Irq.MSIX) v.masked.fill(false);
      v.pending.fill(false);
    });
    this.#stopResample();
    this.#intxMasked = false;
    this.lower();
  }

  #message(index: number, vec: number, gated: boolean): void {
    const v = this.#v[index];
    if (vec >= v.count) return;
    if (gated || v.masked[vec] || this.#held) {
      v.pending[vec] = true;
      return;
    }
    this.#signal(index, vec);
  }

  #flushPending(index: number, vec: number): void {
    const v = this.#v[index];
    if (!v.pending[vec] || this.#held || v.masked[vec]) return;
    if (index === Irq.MSIX && this.#msixFunctionMasked) return;
    if (index === Irq.MSI && this.#msiMasked(vec)) return;
    v.pending[vec] = false;
    this.#signal(index, vec);
  }

  #deliverIntx(): void {
    if (this.#held || this.#intxMasked) return;
    this.#intxMasked = true;
    this.#signal(Irq.INTX, 0);
  }

  #unmaskIntx(): void {
    this.#intxMasked = false;
    if (this.#intxAsserted && !(this.cfg.command & Command.INTX_DISABLE)) this.#deliverIntx();
  }

  /**
   * Sends every delivery to `sink` instead of the client's eventfds (an in-process test bench
   * counts them); null restores eventfd delivery.
   */
  deliverTo(sink: ((index: number, vector: number) => void) | null): void {
    this.#sink = sink;
  }

  #signal(index: number, vec: number): void {
    if (this.#sink && vec < this.#v[index].count) {
      this.#sink(index, vec);
      this.stats.delivered[index]++;
      return;
    }
    const fd = this.#v[index].fds[vec];
    if (!fd) {
      this.stats.dropped++;
      return;
    }
    eventfdWrite(fd.fd);
    this.stats.delivered[index]++;
  }

  /**
   * The interrupt state a migration carries (the kit's record in the stream): the INTx line,
   * then for MSI and MSI-X the mask and pending bits of each vector, then the MSI-X table. The
   * client's eventfds and INTx auto-mask belong to its connection and are set up again there.
   */
  save(): Uint8Array {
    const msi = this.#v[Irq.MSI],
      msix = this.#v[Irq.MSIX];
    const out = new Uint8Array(this.#savedSize());
    const dv = new DataView(out.buffer);
    dv.setUint8(0, this.#intxAsserted ? 1 : 0);
    dv.setUint16(2, msi.count, true);
    dv.setUint16(4, msix.count, true);
    let at = 8;
    for (const bits of [msi.masked, msi.pending, msix.masked, msix.pending]) {
      packBits(bits, out.subarray(at));
      at += bitBytes(bits.length);
    }
    out.set(this.msixTable, at);
    return out;
  }

  /** Checks saved interrupt state against this device's vectors; an error message, or null. */
  check(b: Uint8Array): string | null {
    if (b.length < 8) return `interrupt state of ${b.length} bytes is truncated`;
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    const msi = dv.getUint16(2, true),
      msix = dv.getUint16(4, true);
    if (msi !== this.count(Irq.MSI) || msix !== this.count(Irq.MSIX))
      return (
        `interrupt state for ${msi} MSI and ${msix} MSI-X vectors, this device has ` +
        `${this.count(Irq.MSI)} and ${this.count(Irq.MSIX)}`
      );
    if (dv.getUint8(0) > 1) return `INTx line level ${dv.getUint8(0)} is not 0 or 1`;
    if (b.length !== this.#savedSize())
      return `interrupt state of ${b.length} bytes, expected ${this.#savedSize()}`;
    return null;
  }

  /** Applies checked interrupt state (the device is stopped: what is due goes out when it runs). */
  load(b: Uint8Array): void {
    const msi = this.#v[Irq.MSI],
      msix = this.#v[Irq.MSIX];
    this.#intxAsserted = b[0] === 1;
    this.cfg.setInterruptStatus(this.#intxAsserted);
    let at = 8;
    for (const bits of [msi.masked, msi.pending, msix.masked, msix.pending]) {
      unpackBits(b.subarray(at), bits);
      at += bitBytes(bits.length);
    }
    this.msixTable.set(b.subarray(at, at + this.msixTable.length));
    if (!this.#held) this.#deliverWaiting();
  }

  #savedSize(): number {
    const msi = this.count(Irq.MSI),
      msix = this.count(Irq.MSIX);
    return 8 + 2 * bitBytes(msi) + 2 * bitBytes(msix) + msix * 16;
  }

  /** MSI-X table vector-control mask bit, written by the client through the table BAR. */
  setMsixMask(vec: number, masked: boolean): void {
    const v = this.#v[Irq.MSIX];
    if (vec >= v.count) return;
    v.masked[vec] = masked;
    if (!masked) this.#flushPending(Irq.MSIX, vec);
  }
  msixPending(vec: number): boolean {
    return this.#v[Irq.MSIX].pending[vec] ?? false;
  }

  #stopResample(): void {
    if (this.#resample) {
      this.#resample.watch.close();
      this.#resample.fd.close();
      this.#resample = null;
    }
  }
}

const bitBytes = (n: number) => Math.ceil(n / 8);

function packBits(bits: boolean[], out: Uint8Array): void {
  bits.forEach((on, i) => {
    if (on) out[i >> 3] |= 1 << (i & 7);
  });
}

function unpackBits(b: Uint8Array, bits: boolean[]): void {
  for (let i = 0; i < bits.length; i++) bits[i] = ((b[i >> 3] >> (i & 7)) & 1) === 1;
}
