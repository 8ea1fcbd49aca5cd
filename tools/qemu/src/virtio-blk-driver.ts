// A virtio-blk driver playing the guest's part over a vfio-user client: the initialization of
// virtio 1.2 §3.1.1 through the PCI capabilities (§4.1.4), MSI-X per queue, split queues in
// client RAM (DriverQueue), notifications as posted REGION_WRITEs, completions on the queues'
// eventfds. It can move to another server (the destination of a migration) with its RAM and
// queues, as a guest does.
import type { VfioUserClient, GuestRam } from '@vfu/client';
import { Irq, Region, DmaMapFlag } from '@vfu/protocol';
import { Common, CapType, DriverQueue, Feature, Status, areaSizes } from '@vfu/virtio';
import { BlkFeature, BlkType } from '@vfu/device-virtio-blk';

/** Deterministic pseudo-random bytes (xorshift), different per seed. */
export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export interface DriverOptions {
  queues?: number;
  queueSize?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Largest data buffer of one request. */
  maxData?: number;
  ramAddress?: number;
}

export interface BlkResult {
  status: number;
  /** Device-written bytes of an IN or GET_ID request. */
  data: Uint8Array;
  /** What the device put in the used ring. */
  usedLen: number;
}

interface Caps {
  common: number;
  notify: number;
  multiplier: number;
  isr: number;
  device: number;
  msix: number;
}

interface Slot {
  base: number;
  resolve?: (r: BlkResult) => void;
  readLen: number;
  completions: number;
}

const SLOT_HEADER = 4096;

export class VirtioBlkDriver {
  client!: VfioUserClient;
  caps!: Caps;
  features = [0, 0];
  readonly queues: DriverQueue[] = [];
  readonly #slots: Slot[][] = [];
  readonly #free: number[][] = [];
  readonly #waiting: (() => void)[][] = [];
  readonly #byHead: Map<number, number>[] = [];
  #generation = 0;
  /** Completions of heads with nothing pending (must stay 0: each request completes once). */
  unexpected = 0;
  /** The most requests that were in flight at once. */
  peakInFlight = 0;

  private constructor(
    readonly ram: GuestRam,
    readonly opts: Required<DriverOptions>,
  ) {}

  static async start(client: VfioUserClient, o: DriverOptions = {}): Promise<VirtioBlkDriver> {
    const opts: Required<DriverOptions> = {
      queues: o.queues ?? 1,
      queueSize: o.queueSize ?? 64,
      eventIdx: o.eventIdx ?? true,
      indirect: o.indirect ?? false,
      maxData: o.maxData ?? 64 * 1024,
      ramAddress: o.ramAddress ?? 0x100000,
    };
    const slotBytes = SLOT_HEADER + opts.maxData;
    const perQueue = 0x4000 + VirtioBlkDriver.slotsPerQueue(opts) * slotBytes;
    const ram = await client.addRam(opts.ramAddress, opts.queues * perQueue);
    const d = new VirtioBlkDriver(ram, opts);
    d.client = client;
    await d.#initialize();
    return d;
  }

  static slotsPerQueue(o: Required<DriverOptions>): number {
    return o.indirect ? o.queueSize : Math.floor(o.queueSize / 3);
  }

  // --- registers -----------------------------------------------------------------------------

  r8 = (o: number) => this.client.read8(Region.BAR0, this.caps.common + o);
  r16 = (o: number) => this.client.read16(Region.BAR0, this.caps.common + o);
  r32 = (o: number) => this.client.read32(Region.BAR0, this.caps.common + o);
  w8 = (o: number, v: number) => this.client.write8(Region.BAR0, this.caps.common + o, v);
  w16 = (o: number, v: number) => this.client.write16(Region.BAR0, this.caps.common + o, v);
  w32 = (o: number, v: number) => this.client.write32(Region.BAR0, this.caps.common + o, v);
  status = () => this.r8(Common.DEVICE_STATUS);
  /** A 32-bit read of the device configuration (§4.1.4.6). */
  config32 = (o: number) => this.client.read32(Region.BAR0, this.caps.device + o);

  async #findCaps(): Promise<Caps> {
    const cfg = Buffer.from(await this.client.regionRead(Region.CONFIG, 0, 256));
    const caps: Partial<Caps> = {};
    for (let p = cfg[0x34], n = 0; p && n < 48; p = cfg[p + 1], n++) {
      if (cfg[p] === 0x11) caps.msix = p;
      if (cfg[p] !== 0x09) continue;
      const [type, bar] = [cfg[p + 3], cfg[p + 4]];
      if (bar !== 0) throw new Error(`virtio capability in BAR ${bar}: this driver expects BAR 0`);
      const offset = cfg.readUInt32LE(p + 8);
      if (type === CapType.COMMON) caps.common = offset;
      if (type === CapType.ISR) caps.isr = offset;
      if (type === CapType.DEVICE) caps.device = offset;
      if (type === CapType.NOTIFY) {
        caps.notify = offset;
        caps.multiplier = cfg.readUInt32LE(p + 16);
      }
    }
    for (const k of ['common', 'notify', 'isr', 'device', 'msix'] as const)
      if (caps[k] === undefined) throw new Error(`no ${k} capability`);
    return caps as Caps;
  }

  /** §3.1.1, in order: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
  async #initialize(): Promise<void> {
    const c = this.client;
    await c.config.write16(0x04, 0x6); // memory space + bus master
    this.caps = await this.#findCaps();
    await this.w8(Common.DEVICE_STATUS, 0);
    if ((await this.status()) !== 0) throw new Error('device did not reset');
    await this.w8(Common.DEVICE_STATUS, Status.ACKNOWLEDGE);
    await this.w8(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER);
    const have = [0, 0];
    for (const sel of [0, 1]) {
      await this.w32(Common.DEVICE_FEATURE_SELECT, sel);
      have[sel] = await this.r32(Common.DEVICE_FEATURE);
    }
    const want = [
      Feature.VERSION_1,
      ...(this.opts.eventIdx ? [Feature.RING_EVENT_IDX] : []),
      ...(this.opts.indirect ? [Feature.RING_INDIRECT_DESC] : []),
      BlkFeature.SEG_MAX,
      BlkFeature.BLK_SIZE,
      BlkFeature.FLUSH,
      BlkFeature.MQ,
      BlkFeature.DISCARD,
      BlkFeature.WRITE_ZEROES,
      BlkFeature.RO,
    ];
    for (const b of want)
      if ((have[b >> 5] >>> (b & 31)) & 1) this.features[b >> 5] |= 1 << (b & 31);
    for (const sel of [0, 1]) {
      await this.w32(Common.DRIVER_FEATURE_SELECT, sel);
      await this.w32(Common.DRIVER_FEATURE, this.features[sel] >>> 0);
    }
    await this.w8(Common.DEVICE_STATUS, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    if (!((await this.status()) & Status.FEATURES_OK)) throw new Error('FEATURES_OK refused');
    const nq = await this.r16(Common.NUM_QUEUES);
    if (nq < this.opts.queues) throw new Error(`device has ${nq} queues`);
    await this.#msix();
    await this.w16(Common.CONFIG_MSIX_VECTOR, 0);
    if ((await this.r16(Common.CONFIG_MSIX_VECTOR)) !== 0) throw new Error('config vector refused');
    for (let q = 0; q < this.opts.queues; q++) await this.#setupQueue(q);
    await this.w8(
      Common.DEVICE_STATUS,
      Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK,
    );
  }

  has(bit: number): boolean {
    return ((this.features[bit >> 5] >>> (bit & 31)) & 1) === 1;
  }

  /** MSI-X on, every vector unmasked, an eventfd per vector; a completion loop per queue. */
  async #msix(): Promise<void> {
    const c = this.client;
    const cap = this.caps.msix;
    const ctrl = await c.config.read16(cap + 2);
    await c.config.write16(cap + 2, ctrl | 0x8000);
    const vectors = this.opts.queues + 1;
    for (let v = 0; v < vectors; v++) await c.write32(Region.BAR0 + 1, 16 * v + 12, 0);
    const irqs = await c.bindIrqs(Irq.MSIX, vectors);
    const gen = ++this.#generation;
    for (let q = 0; q < this.opts.queues; q++)
      void (async () => {
        while (gen === this.#generation) {
          await irqs.next(q + 1, 2000).catch(() => {});
          if (gen === this.#generation && this.queues[q]) this.#drain(q);
        }
      })();
  }

  #queueBase(q: number): number {
    const slotBytes = SLOT_HEADER + this.opts.maxData;
    return this.ram.address + q * (0x4000 + VirtioBlkDriver.slotsPerQueue(this.opts) * slotBytes);
  }

  async #setupQueue(q: number): Promise<void> {
    await this.w16(Common.QUEUE_SELECT, q);
    const max = await this.r16(Common.QUEUE_SIZE);
    const size = Math.min(max, this.opts.queueSize);
    await this.w16(Common.QUEUE_SIZE, size);
    const base = this.#queueBase(q);
    const a = areaSizes(size);
    const layout = { size, desc: base, driver: base + a.desc, device: base + 0x2000 };
    if (a.desc + a.driver > 0x2000 || a.device > 0x2000) throw new Error('queue too large');
    for (const [o, v] of [
      [Common.QUEUE_DESC, layout.desc],
      [Common.QUEUE_DRIVER, layout.driver],
      [Common.QUEUE_DEVICE, layout.device],
    ]) {
      await this.w32(o, v % 2 ** 32);
      await this.w32(o + 4, Math.floor(v / 2 ** 32));
    }
    await this.w16(Common.QUEUE_MSIX_VECTOR, q + 1);
    if ((await this.r16(Common.QUEUE_MSIX_VECTOR)) !== q + 1) throw new Error('vector refused');
    await this.w16(Common.QUEUE_ENABLE, 1);
    const ram = { address: this.ram.address, bytes: this.ram.bytes };
    const dq = new DriverQueue(ram, layout, this.has(Feature.RING_EVENT_IDX));
    this.queues[q] = dq;
    const slotBytes = SLOT_HEADER + this.opts.maxData;
    const n = VirtioBlkDriver.slotsPerQueue(this.opts);
    this.#slots[q] = Array.from({ length: n }, (_, i) => ({
      base: base + 0x4000 + i * slotBytes,
      readLen: 0,
      completions: 0,
    }));
    this.#free[q] = Array.from({ length: n }, (_, i) => i);
    this.#waiting[q] = [];
    this.#byHead[q] = new Map();
  }

  // --- requests -------------------------------------------------------------------------------

  #bytes(address: number, len: number): Uint8Array {
    const o = address - this.ram.address;
    return this.ram.bytes.subarray(o, o + len);
  }

  async #slot(q: number): Promise<number> {
    while (this.#free[q].length === 0) await new Promise<void>(r => this.#waiting[q].push(r));
    return this.#free[q].shift()!;
  }

  /**
   * One request (§5.2.6): OUT/DISCARD/WRITE_ZEROES carry `data`; IN and GET_ID read `readLen`
   * bytes. Resolves when the device returns the chain.
   */
  async request(
    q: number,
    type: number,
    sector: number,
    io: { data?: Uint8Array; readLen?: number } = {},
  ): Promise<BlkResult> {
    const len = io.data?.length ?? io.readLen ?? 0;
    if (len > this.opts.maxData) throw new RangeError(`request of ${len} bytes`);
    const i = await this.#slot(q);
    const slot = this.#slots[q][i];
    const hdr = new DataView(
      this.ram.bytes.buffer,
      this.ram.bytes.byteOffset,
      this.ram.bytes.length,
    );
    const h = slot.base - this.ram.address;
    hdr.setUint32(h, type, true);
    hdr.setUint32(h + 4, 0, true);
    hdr.setBigUint64(h + 8, BigInt(sector), true);
    hdr.setUint8(h + 16, 0xff); // status: the device must overwrite it
    const data = slot.base + SLOT_HEADER;
    if (io.data) this.#bytes(data, io.data.length).set(io.data);
    slot.readLen = io.readLen ?? 0;
    const bufs = [
      { address: slot.base, len: 16 },
      ...(len ? [{ address: data, len, write: io.data === undefined }] : []),
      { address: slot.base + 16, len: 1, write: true },
    ];
    const result = new Promise<BlkResult>(r => {
      slot.resolve = r;
    });
    const dq = this.queues[q];
    const before = dq.availIdx;
    const head = dq.add(bufs, this.opts.indirect ? slot.base + 64 : undefined);
    this.#byHead[q].set(head, i);
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    if (dq.needsKick(before)) this.kick(q);
    return result;
  }

  /** A notification: a posted write of the queue's index to its notify address (§4.1.5.2). */
  kick(q: number): void {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, q, true);
    void this.client.regionWrite(Region.BAR0, this.caps.notify + q * this.caps.multiplier, b, true);
  }

  #drain(q: number): void {
    const dq = this.queues[q];
    for (;;) {
      for (const u of dq.takeUsed()) this.#completed(q, u.id, u.len);
      if (!dq.eventIdx) return;
      // Interrupt at the next completion; one published before the device saw this gets none:
      // look again (§2.7.10).
      dq.setUsedEvent(dq.lastUsed);
      if (dq.usedIdx === dq.lastUsed) return;
    }
  }

  #completed(q: number, head: number, usedLen: number): void {
    const i = this.#byHead[q].get(head);
    if (i === undefined) {
      this.unexpected++;
      return;
    }
    this.#byHead[q].delete(head);
    const slot = this.#slots[q][i];
    slot.completions++;
    const status = this.#bytes(slot.base + 16, 1)[0];
    const data = Uint8Array.from(this.#bytes(slot.base + SLOT_HEADER, slot.readLen));
    const resolve = slot.resolve!;
    slot.resolve = undefined;
    this.#free[q].push(i);
    this.#waiting[q].shift()?.();
    resolve({ status, data, usedLen });
  }

  /** Requests submitted and not yet completed. */
  get inFlight(): number {
    return this.#byHead.reduce((n, m) => n + m.size, 0);
  }

  /** Looks at every queue now (after a migration, before any interrupt). */
  poll(): void {
    for (let q = 0; q < this.queues.length; q++) this.#drain(q);
  }

  /** Maps the driver's RAM into another server (a migration's destination, before it loads). */
  async mapInto(client: VfioUserClient): Promise<void> {
    const flags = DmaMapFlag.READ | DmaMapFlag.WRITE;
    await client.dmaMap(
      { flags, offset: 0, address: this.ram.address, size: this.ram.size },
      this.ram.fd!.fd,
    );
  }

  /**
   * The guest now runs against `client` (the destination, RUNNING with the migrated state, its
   * RAM mapped by mapInto): interrupts are bound again; the queues go on as they were.
   */
  async moveTo(client: VfioUserClient): Promise<void> {
    this.client = client;
    await this.#msix();
    this.poll();
  }

  /** Stops the completion loops. */
  close(): void {
    this.#generation++;
  }

  static readonly Type = BlkType;
}
