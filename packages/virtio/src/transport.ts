// The virtio PCI transport of one device (virtio 1.2 §4.1): the common configuration, ISR,
// device configuration and notification structures in BAR 0, interrupts through MSI-X (or
// INTx with the ISR), feature negotiation, device status and reset, and the split queues driven
// from notifications. Requests run concurrently; their completions are published only while
// the device runs, so a stopped device writes nothing to guest memory.
import {
  Cfg,
  Command,
  DmaError,
  type DeviceContext,
  type Options,
  type RegionHandler,
} from '@vfu/pci';
import { Common, Feature, NO_VECTOR, Status } from './constants.js';
import { SplitQueue, VirtqueueError, type Chain } from './virtqueue.js';
import { MAX_QUEUES, Q, QREC, type VirtioDeviceDefinition, type VirtioSchema } from './types.js';
import type { Schema } from '@vfu/stream';

/** Where each structure lives in BAR 0 (one page each). */
export const Layout = {
  COMMON: 0x0000,
  ISR: 0x1000,
  DEVICE: 0x2000,
  NOTIFY: 0x3000,
  /** notify_off_multiplier (§4.1.4.4): queue q is notified at NOTIFY + 4 * q. */
  NOTIFY_MULTIPLIER: 4,
  BAR_SIZE: 0x4000,
} as const;

/** Largest total of one chain's buffers (bounds the device's copies). */
const MAX_CHAIN_BYTES = 64 << 20;

type Dev = DeviceContext<VirtioSchema>;

interface CommonRegister {
  offset: number;
  width: 1 | 2 | 4;
  read(): number;
  write?(v: number): void;
}

export class VirtioPci<S extends Schema, B> {
  readonly region: RegionHandler;
  readonly #dev: Dev;
  readonly #queues: { count: number; size: number };
  readonly #config: Uint8Array;
  readonly #offered: [number, number];
  readonly #common: CommonRegister[];
  /** Bumped by every reset and load: completions of requests from before are dropped. */
  #epoch = 0;
  /** Completions that arrived while the device was stopped; published when it runs again. */
  #held: (() => void)[] = [];
  /** Used index at the last interrupt decision, per queue (RING_EVENT_IDX's "old"). */
  #since: number[] = [];
  #check = new Set<number>();
  #msixCap: number | undefined | null = null;

  constructor(
    dev: DeviceContext<S & VirtioSchema>,
    readonly def: VirtioDeviceDefinition<S, B>,
    o: Options,
    readonly backend: B,
  ) {
    this.#dev = dev as unknown as Dev;
    this.#queues = def.queues(o);
    this.#config = def.config(o, backend);
    const bits = [
      Feature.VERSION_1,
      Feature.RING_EVENT_IDX,
      Feature.RING_INDIRECT_DESC,
      ...def.features(o, backend),
    ];
    this.#offered = [0, 0];
    for (const b of bits) this.#offered[b >> 5] = (this.#offered[b >> 5] | (1 << (b & 31))) >>> 0;
    this.#common = this.#commonRegisters();
    this.region = {
      size: Layout.BAR_SIZE,
      read: (offset, out) => this.#read(offset, out),
      write: (offset, data) => this.#write(offset, data),
    };
    this.reset();
  }

  get #s() {
    return this.#dev.state;
  }

  // --- queue records in the state ----------------------------------------------------------

  #q(q: number): DataView {
    const b = this.#s.virtioQueues;
    return new DataView(b.buffer, b.byteOffset + q * QREC, QREC);
  }
  #u64(q: number, at: number): number {
    const r = this.#q(q);
    return r.getUint32(at + 4, true) * 2 ** 32 + r.getUint32(at, true);
  }
  #enabled(q: number): boolean {
    return q < this.#queues.count && this.#q(q).getUint8(Q.ENABLED) === 1;
  }
  #setInflight(q: number, head: number, on: boolean): void {
    const r = this.#q(q);
    const at = Q.INFLIGHT + (head >> 3);
    const bit = 1 << (head & 7);
    r.setUint8(at, on ? r.getUint8(at) | bit : r.getUint8(at) & ~bit);
  }
  #inflightHeads(q: number): number[] {
    const r = this.#q(q);
    const out: number[] = [];
    for (let h = 0; h < r.getUint16(Q.SIZE, true); h++)
      if (r.getUint8(Q.INFLIGHT + (h >> 3)) & (1 << (h & 7))) out.push(h);
    return out;
  }

  #negotiated(bit: number): boolean {
    const w = bit < 32 ? this.#s.virtioDriverFeaturesLo : this.#s.virtioDriverFeaturesHi;
    return ((w >>> (bit & 31)) & 1) === 1;
  }

  /** The queue as the split-queue code sees it; throws VirtqueueError for a bad layout. */
  #split(q: number): SplitQueue {
    const r = this.#q(q);
    return new SplitQueue(
      this.#dev.dma,
      {
        size: r.getUint16(Q.SIZE, true),
        desc: this.#u64(q, Q.DESC),
        driver: this.#u64(q, Q.DRIVER),
        device: this.#u64(q, Q.DEVICE),
      },
      {
        eventIdx: this.#negotiated(Feature.RING_EVENT_IDX),
        indirect: this.#negotiated(Feature.RING_INDIRECT_DESC),
        maxChainBytes: MAX_CHAIN_BYTES,
      },
      r.getUint16(Q.LAST_AVAIL, true),
      r.getUint16(Q.USED, true),
    );
  }

  /** What a driver sees of the device before it runs: offered features, queues, configuration. */
  identity(): Record<string, string> {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    return {
      'virtio features': `${hex(this.#offered[1])}${hex(this.#offered[0])}`,
      'virtio queues': `${this.#queues.count} of ${this.#queues.size}`,
      'virtio config': Buffer.from(this.#config).toString('hex'),
    };
  }

  // --- status, reset, features (§2.1, §2.2, §3.1) ------------------------------------------

  /** Device reset (§2.4): registers to their initial values, requests in flight forgotten. */
  reset(): void {
    const s = this.#s;
    this.#epoch++;
    this.#held = [];
    this.#kicked.clear();
    s.virtioStatus = 0;
    s.virtioIsr = 0;
    this.#dev.irq.lower();
    s.virtioDeviceFeatureSelect = 0;
    s.virtioDriverFeatureSelect = 0;
    s.virtioDriverFeaturesLo = 0;
    s.virtioDriverFeaturesHi = 0;
    s.virtioConfigVector = NO_VECTOR;
    s.virtioQueueSelect = 0;
    s.virtioQueues.fill(0);
    for (let q = 0; q < MAX_QUEUES; q++) {
      const r = this.#q(q);
      r.setUint16(Q.SIZE, q < this.#queues.count ? this.#queues.size : 0, true);
      r.setUint16(Q.VECTOR, NO_VECTOR, true);
    }
    this.#since = [];
  }

  #setStatus(v: number): void {
    const s = this.#s;
    if (v === 0) {
      this.reset();
      return;
    }
    const was = s.virtioStatus;
    let next = (v & ~Status.DEVICE_NEEDS_RESET) | (was & Status.DEVICE_NEEDS_RESET);
    // §2.2.2: the device leaves FEATURES_OK clear when it does not accept the driver's subset.
    if (next & Status.FEATURES_OK && !(was & Status.FEATURES_OK) && !this.#acceptable())
      next &= ~Status.FEATURES_OK;
    s.virtioStatus = next & 0xff;
    if (next & Status.DRIVER_OK && !(was & Status.DRIVER_OK))
      for (let q = 0; q < this.#queues.count; q++) if (this.#enabled(q)) this.#kick(q);
  }

  /** Only offered bits, and VERSION_1 (§6.1: a modern device refuses a legacy driver). */
  #acceptable(): boolean {
    const s = this.#s;
    const extra =
      (s.virtioDriverFeaturesLo & ~this.#offered[0]) |
      (s.virtioDriverFeaturesHi & ~this.#offered[1]);
    if (extra) {
      this.#dev.log(
        `virtio: driver accepted features the device did not offer; FEATURES_OK refused`,
      );
      return false;
    }
    if (!this.#negotiated(Feature.VERSION_1)) {
      this.#dev.log('virtio: driver did not accept VERSION_1; FEATURES_OK refused');
      return false;
    }
    return true;
  }

  /**
   * A driver error found in a queue: DEVICE_NEEDS_RESET, and a configuration change
   * notification when the driver is running (§2.1.2). The device keeps serving its registers.
   */
  #fail(q: number, e: unknown): void {
    const s = this.#s;
    const known = e instanceof VirtqueueError || e instanceof DmaError;
    const why = known ? (e as Error).message : `internal error: ${(e as Error).stack ?? e}`;
    if (s.virtioStatus & Status.DEVICE_NEEDS_RESET) return;
    s.virtioStatus |= Status.DEVICE_NEEDS_RESET;
    this.#dev.log(`virtio: queue ${q}: ${why}; DEVICE_NEEDS_RESET set`);
    if (s.virtioStatus & Status.DRIVER_OK) this.#interrupt(s.virtioConfigVector, 2);
  }

  // --- interrupts (§4.1.4.5, §4.1.5.1.2) ----------------------------------------------------

  #msixEnabled(): boolean {
    const cfg = this.#dev.config;
    if (this.#msixCap === null) {
      this.#msixCap = undefined;
      for (let p = cfg.u8(Cfg.CAP_PTR), n = 0; p && n < 48; p = cfg.u8(p + 1), n++)
        if (cfg.u8(p) === 0x11) this.#msixCap = p;
    }
    return this.#msixCap !== undefined && (cfg.u16(this.#msixCap + 2) & 0x8000) !== 0;
  }

  /** MSI-X: the vector, if any. INTx: the ISR bit (1 queue, 2 config), then the line. */
  #interrupt(vector: number, isrBit: number): void {
    if (this.#msixEnabled()) {
      if (vector !== NO_VECTOR) this.#dev.irq.raise(vector);
      return;
    }
    this.#s.virtioIsr |= isrBit;
    this.#dev.irq.raise();
  }

  /** Decides interrupts once per batch of completions (after the current job). */
  #wantInterruptCheck(q: number): void {
    if (this.#check.size === 0) queueMicrotask(() => this.#interruptChecks());
    this.#check.add(q);
  }

  #interruptChecks(): void {
    for (const q of this.#check) {
      try {
        const sq = this.#split(q);
        const since = this.#since[q] ?? (sq.usedIdx - 1) & 0xffff;
        if (sq.usedIdx !== since && sq.wantsInterrupt(since))
          this.#interrupt(this.#q(q).getUint16(Q.VECTOR, true), 1);
        this.#since[q] = sq.usedIdx;
      } catch (e) {
        this.#fail(q, e);
      }
    }
    this.#check.clear();
  }

  // --- queues --------------------------------------------------------------------------------

  /** Queues with a notification not yet acted on (at most one job each while stopped). */
  #kicked = new Set<number>();
  #busMasterOffLogged = false;

  #kick(q: number): void {
    if (this.#kicked.has(q)) return;
    this.#kicked.add(q);
    this.#dev.whenRunning(() => {
      this.#kicked.delete(q);
      this.#process(q);
    });
  }

  #serving(q: number): boolean {
    const st = this.#s.virtioStatus;
    if (!(st & Status.DRIVER_OK) || st & Status.DEVICE_NEEDS_RESET || !this.#enabled(q))
      return false;
    if (!(this.#dev.config.command & Command.BUS_MASTER)) {
      if (!this.#busMasterOffLogged)
        this.#dev.log(`virtio: queue ${q} notified while bus mastering is off; ignored`);
      this.#busMasterOffLogged = true;
      return false;
    }
    this.#busMasterOffLogged = false;
    return true;
  }

  /** Takes every available chain and starts it (§2.7.13.4 seen from the device). */
  #process(q: number): void {
    if (!this.#serving(q)) return;
    try {
      const sq = this.#split(q);
      for (;;) {
        for (let chain = sq.pop(); chain; chain = sq.pop()) {
          const data = sq.gather(chain);
          this.#q(q).setUint16(Q.LAST_AVAIL, sq.lastAvail, true);
          this.#start(q, chain, data);
        }
        // With EVENT_IDX, a chain made available before the driver saw avail_event gets no
        // notification: look again after publishing it (§2.7.10).
        sq.publishAvailEvent();
        if (!sq.features.eventIdx || sq.pending() === 0) break;
      }
    } catch (e) {
      this.#fail(q, e);
    }
  }

  #start(q: number, chain: Chain, data: Uint8Array): void {
    const epoch = this.#epoch;
    this.#setInflight(q, chain.head, true);
    const req = { queue: q, data, writable: chain.writeBytes };
    let p: Promise<Uint8Array>;
    try {
      p = this.def.handle(req, this.backend, this.#dev as never);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      reply => this.#complete(q, chain, reply, epoch),
      e => {
        // A model rejects a malformed request with VirtqueueError: a driver error (§2.1.2).
        if (e instanceof VirtqueueError) {
          if (epoch === this.#epoch) this.#fail(q, e);
          return;
        }
        this.#dev.log(`virtio: queue ${q} head ${chain.head}: ${(e as Error).message}`);
        this.#complete(q, chain, new Uint8Array(0), epoch);
      },
    );
  }

  /** Publishes a completion: the answer into the chain's buffers, then the used ring (§2.7.8). */
  #complete(q: number, chain: Chain, reply: Uint8Array, epoch: number): void {
    if (epoch !== this.#epoch) return; // reset or replaced by a loaded state since
    if (!this.#dev.running) {
      this.#held.push(() => this.#complete(q, chain, reply, epoch));
      return;
    }
    if (!this.#serving(q)) return;
    try {
      const sq = this.#split(q);
      const written = sq.scatter(chain, reply);
      sq.push(chain.head, written);
      this.#q(q).setUint16(Q.USED, sq.usedIdx, true);
      this.#setInflight(q, chain.head, false);
      this.#wantInterruptCheck(q);
    } catch (e) {
      this.#fail(q, e);
    }
  }

  /** The device runs again: completions that waited go out. */
  run(): void {
    for (const c of this.#held.splice(0)) c();
  }

  /**
   * A migrated state was loaded: the requests it lists as in flight were never completed for the
   * driver, so they run again here (their chains are still the driver's, §2.7.13: not used yet);
   * each queue is looked at for chains whose notification the source never acted on.
   */
  loaded(): void {
    this.#epoch++;
    this.#held = [];
    this.#kicked.clear();
    this.#since = [];
    for (let q = 0; q < this.#queues.count; q++) {
      if (!this.#enabled(q)) continue;
      this.#since[q] = this.#q(q).getUint16(Q.USED, true);
      for (const head of this.#inflightHeads(q))
        this.#dev.whenRunning(() => this.#resubmit(q, head));
      this.#kick(q);
    }
  }

  #resubmit(q: number, head: number): void {
    if (!this.#serving(q)) return;
    try {
      const sq = this.#split(q);
      const chain = sq.walk(head);
      this.#start(q, chain, sq.gather(chain));
    } catch (e) {
      this.#fail(q, e);
    }
  }

  // --- BAR 0 ---------------------------------------------------------------------------------

  #read(offset: number, out: Uint8Array): void {
    out.fill(0);
    if (offset < Layout.ISR) this.#readCommon(offset, out);
    else if (offset < Layout.DEVICE) {
      // §4.1.4.5: reading the ISR status clears it and de-asserts the line.
      if (offset === Layout.ISR) {
        out[0] = this.#s.virtioIsr;
        this.#s.virtioIsr = 0;
        this.#dev.irq.lower();
      }
    } else if (offset < Layout.NOTIFY) {
      const at = offset - Layout.DEVICE;
      if (at < this.#config.length) out.set(this.#config.subarray(at, at + out.length));
    }
  }

  #write(offset: number, data: Uint8Array): void {
    if (offset < Layout.ISR) this.#writeCommon(offset, data);
    else if (offset >= Layout.NOTIFY) {
      // §4.1.5.2: the queue is the one whose notification address was written.
      const q = Math.floor((offset - Layout.NOTIFY) / Layout.NOTIFY_MULTIPLIER);
      if (q < this.#queues.count) this.#kick(q);
    }
  }

  #commonImage(): Uint8Array {
    const img = new Uint8Array(Common.SIZE + 4);
    const dv = new DataView(img.buffer);
    for (const r of this.#common) {
      const v = r.read();
      if (r.width === 1) dv.setUint8(r.offset, v);
      else if (r.width === 2) dv.setUint16(r.offset, v, true);
      else dv.setUint32(r.offset, v >>> 0, true);
    }
    return img;
  }

  #readCommon(offset: number, out: Uint8Array): void {
    if (offset >= Common.SIZE) return;
    out.set(this.#commonImage().subarray(offset, offset + out.length));
  }

  /** A write lands on every register it overlaps, merged with the register's other bytes. */
  #writeCommon(offset: number, data: Uint8Array): void {
    if (offset >= Common.SIZE) return;
    const img = this.#commonImage();
    img.set(data.subarray(0, Math.max(0, img.length - offset)), offset);
    const dv = new DataView(img.buffer);
    const end = offset + data.length;
    for (const r of this.#common) {
      if (!r.write || r.offset >= end || r.offset + r.width <= offset) continue;
      const v =
        r.width === 1
          ? dv.getUint8(r.offset)
          : r.width === 2
            ? dv.getUint16(r.offset, true)
            : dv.getUint32(r.offset, true);
      r.write(v);
    }
  }

  #commonRegisters(): CommonRegister[] {
    const s = () => this.#s;
    const sel = () => s().virtioQueueSelect;
    const valid = () => sel() < this.#queues.count;
    const rec = () => this.#q(sel());
    const vectors = this.#queues.count + 1;
    const vector = (v: number) => (v < vectors ? v : NO_VECTOR);
    /** Queue registers are read-only while the queue is enabled (§4.1.4.3.2). */
    const whileDisabled = (fn: (v: number) => void) => (v: number) => {
      if (valid() && !this.#enabled(sel())) fn(v);
    };
    const half = (field: number, hi: boolean): CommonRegister => ({
      offset: Common.QUEUE_DESC + (field - Q.DESC) + (hi ? 4 : 0),
      width: 4,
      read: () => (valid() ? rec().getUint32(field + (hi ? 4 : 0), true) : 0),
      write: whileDisabled(v => rec().setUint32(field + (hi ? 4 : 0), v, true)),
    });
    return [
      {
        offset: Common.DEVICE_FEATURE_SELECT,
        width: 4,
        read: () => s().virtioDeviceFeatureSelect,
        write: v => {
          s().virtioDeviceFeatureSelect = v;
        },
      },
      {
        offset: Common.DEVICE_FEATURE,
        width: 4,
        read: () => this.#offered[s().virtioDeviceFeatureSelect] ?? 0,
      },
      {
        offset: Common.DRIVER_FEATURE_SELECT,
        width: 4,
        read: () => s().virtioDriverFeatureSelect,
        write: v => {
          s().virtioDriverFeatureSelect = v;
        },
      },
      {
        offset: Common.DRIVER_FEATURE,
        width: 4,
        read: () => {
          const w = s().virtioDriverFeatureSelect;
          return w === 0 ? s().virtioDriverFeaturesLo : w === 1 ? s().virtioDriverFeaturesHi : 0;
        },
        write: v => {
          if (s().virtioStatus & Status.FEATURES_OK) return; // §2.2.2: fixed once accepted
          const w = s().virtioDriverFeatureSelect;
          if (w === 0) s().virtioDriverFeaturesLo = v >>> 0;
          else if (w === 1) s().virtioDriverFeaturesHi = v >>> 0;
        },
      },
      {
        offset: Common.CONFIG_MSIX_VECTOR,
        width: 2,
        read: () => s().virtioConfigVector,
        write: v => {
          s().virtioConfigVector = vector(v);
        },
      },
      { offset: Common.NUM_QUEUES, width: 2, read: () => this.#queues.count },
      {
        offset: Common.DEVICE_STATUS,
        width: 1,
        read: () => s().virtioStatus,
        write: v => this.#setStatus(v),
      },
      { offset: Common.CONFIG_GENERATION, width: 1, read: () => 0 },
      {
        offset: Common.QUEUE_SELECT,
        width: 2,
        read: () => s().virtioQueueSelect,
        write: v => {
          s().virtioQueueSelect = v;
        },
      },
      {
        offset: Common.QUEUE_SIZE,
        width: 2,
        read: () => (valid() ? rec().getUint16(Q.SIZE, true) : 0),
        write: whileDisabled(v => rec().setUint16(Q.SIZE, v, true)),
      },
      {
        offset: Common.QUEUE_MSIX_VECTOR,
        width: 2,
        read: () => (valid() ? rec().getUint16(Q.VECTOR, true) : NO_VECTOR),
        write: v => {
          if (valid()) rec().setUint16(Q.VECTOR, vector(v), true);
        },
      },
      {
        offset: Common.QUEUE_ENABLE,
        width: 2,
        read: () => (valid() ? rec().getUint8(Q.ENABLED) : 0),
        write: v => {
          if (v === 1 && valid()) this.#enable(sel());
        },
      },
      { offset: Common.QUEUE_NOTIFY_OFF, width: 2, read: () => (valid() ? sel() : 0) },
      half(Q.DESC, false),
      half(Q.DESC, true),
      half(Q.DRIVER, false),
      half(Q.DRIVER, true),
      half(Q.DEVICE, false),
      half(Q.DEVICE, true),
      { offset: Common.QUEUE_NOTIFY_DATA, width: 2, read: () => (valid() ? sel() : 0) },
      { offset: Common.QUEUE_RESET, width: 2, read: () => 0 },
    ];
  }

  /** queue_enable = 1: the layout must be usable (§2.7: sizes, alignment), else NEEDS_RESET. */
  #enable(q: number): void {
    const r = this.#q(q);
    if (r.getUint8(Q.ENABLED)) return;
    const size = r.getUint16(Q.SIZE, true);
    try {
      if (size > this.#queues.size)
        throw new VirtqueueError(
          `queue size ${size} is larger than the ${this.#queues.size} offered`,
        );
      this.#split(q); // checks the layout
      r.setUint8(Q.ENABLED, 1);
      this.#since[q] = r.getUint16(Q.USED, true);
    } catch (e) {
      this.#fail(q, e);
    }
  }
}
