import {
  MappedMemory,
  safeToMap,
  memfdCreate,
  eventfdCreate,
  eventfdRead,
  FdWatcher,
  closeAll,
  type OwnedFd,
} from '@vfu/native';
import {
  Command,
  Flag,
  Region,
  Irq,
  IrqSetFlag,
  DmaMapFlag,
  DmaUnmapFlag,
  Defaults,
  FeatureFlag,
  Feature,
  RegionCapId,
  capabilitiesJson,
  decodeVersion,
  encodeVersion,
  encode,
  decodeReply,
  dma,
  encodeErrorReply,
  Errno,
  ProtocolError,
  decodeFeatureData,
  featureData,
  type Capabilities,
  type RegionInfo,
  type IrqInfo,
  type DeviceInfo,
  type DmaLayout,
  type Header,
} from '@vfu/protocol';
import { Connection, dial, type Incoming } from '@vfu/transport';

/** Writes of at least this many bytes leave as head + data (two parts, no joining copy). */
const SEND_BESIDE = 4096;

export interface ClientOptions {
  maxMsgFds?: number;
  maxDataXferSize?: number;
  migration?: boolean;
  writeMultiple?: boolean;
  /** Layout the server uses for DMA_READ/DMA_WRITE to us. */
  dmaLayout?: DmaLayout;
  /** Reply timeout in ms (QEMU's default is 5000). 0 = none. */
  timeoutMs?: number;
  trace?: (line: string) => void;
}

/**
 * Client memory made available to the device: a memfd we map too, or plain bytes reached by
 * messages.
 */
export interface GuestRam {
  address: number;
  size: number;
  bytes: Uint8Array;
  fd?: OwnedFd;
  map?: MappedMemory;
}

const unwrap = <T>(v: T | ProtocolError): T => {
  if (v instanceof ProtocolError) throw v;
  return v;
};

/**
 * A vfio-user client (the VMM's side): negotiates, maps guest memory, queries and drives the
 * device, binds eventfds, answers the server's DMA_READ/DMA_WRITE, and sends the migration
 * messages.
 */
/** A region's first sparse mmap area, mapped; `offset` and `size` place it in the region. */
export interface MappedArea {
  map: MappedMemory;
  offset: number;
  size: number;
}

/**
 * Maps the first sparse mmap area of region `index` through the fd of its info (closed either
 * way); throws saying why it cannot. Only an area inside the region, of a file sealed against
 * shrinking that covers it (safeToMap): one the server could truncate would kill this process at
 * the next access.
 */
export function mapArea(index: number, info: RegionInfo & { fd?: OwnedFd }): MappedArea {
  const sparse = info.caps.find(c => c.id === RegionCapId.SPARSE_MMAP);
  try {
    const a = sparse?.id === RegionCapId.SPARSE_MMAP ? sparse.areas[0] : undefined;
    if (!info.fd || !a) throw new Error(`region ${index} is not mappable`);
    if (a.size <= 0 || a.offset + a.size > info.size)
      throw new Error(`region ${index}: its mmap area lies outside the region`);
    if (!safeToMap(info.fd.fd, info.offset + a.offset, a.size))
      throw new Error(`region ${index}: its fd is not sealed at a size that covers the area`);
    return { map: MappedMemory.map(info.fd.fd, info.offset + a.offset, a.size), ...a };
  } finally {
    info.fd?.close();
  }
}

export class VfioUserClient {
  serverCaps!: Capabilities;
  readonly #ram: GuestRam[] = [];
  readonly #watchers = new Set<FdWatcher>();
  readonly #owned: OwnedFd[] = [];
  #fdlessDma = false; // a DMA range was mapped without an fd: the server may send DMA_READ/WRITE

  private constructor(
    readonly conn: Connection,
    readonly options: ClientOptions,
  ) {
    conn.onMessage = m => this.#serve(m);
  }

  static async connect(path: string, options: ClientOptions = {}): Promise<VfioUserClient> {
    const conn = new Connection(await dial(path, options.timeoutMs ?? 5000), {
      maxMessageSize: (options.maxDataXferSize ?? Defaults.maxDataXferSize) + 64 * 1024,
      maxFdsPerMessage: options.maxMsgFds ?? 16,
      trace: options.trace,
    });
    const c = new VfioUserClient(conn, options);
    const json = capabilitiesJson({
      maxMsgFds: options.maxMsgFds ?? 16,
      maxDataXferSize: options.maxDataXferSize ?? Defaults.maxDataXferSize,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      migration: options.migration === false ? undefined : { pgsize: 4096 },
      writeMultiple: options.writeMultiple ?? false,
    });
    const r = await conn.request(
      0,
      encodeVersion(0, false, 0, 0, json),
      [],
      options.timeoutMs ?? 5000,
    );
    closeAll(r.fds);
    c.serverCaps = unwrap(decodeVersion(r.payload, null)).caps;
    return c;
  }

  async #req(bytes: Uint8Array, fds: number[] = []): Promise<Incoming> {
    const id = new DataView(bytes.buffer, bytes.byteOffset).getUint16(0, true);
    return this.conn.request(id, bytes, fds, this.options.timeoutMs ?? 5000);
  }
  #id(): number {
    return this.conn.nextId();
  }
  async #simple(bytes: Uint8Array, fds: number[] = []): Promise<Uint8Array> {
    const r = await this.#req(bytes, fds);
    closeAll(r.fds);
    return r.payload;
  }

  // --- device, regions, interrupts ---------------------------------------------------------

  async deviceInfo(): Promise<DeviceInfo> {
    return unwrap(decodeReply.deviceInfo(await this.#simple(encode.getInfo(this.#id()))));
  }

  /**
   * Region info as QEMU asks for it: first with argsz 32, then again with the size the server
   * named.
   */
  async regionInfo(index: number): Promise<RegionInfo & { fd?: OwnedFd }> {
    let info = unwrap(
      decodeReply.regionInfo(await this.#simple(encode.getRegionInfo(this.#id(), index, 32))),
    );
    if (info.argsz <= 32) return info;
    const r = await this.#req(encode.getRegionInfo(this.#id(), index, info.argsz));
    info = unwrap(decodeReply.regionInfo(r.payload));
    if (r.fds.length > 1) {
      closeAll(r.fds);
      throw new ProtocolError(Errno.EINVAL, 'region info carried more than one fd');
    }
    return { ...info, fd: r.fds[0] };
  }

  /** Maps a mappable region (BAR) through the fd from its region info: writes skip the socket. */
  async mapRegion(index: number): Promise<MappedMemory> {
    return mapArea(index, await this.regionInfo(index)).map;
  }

  async irqInfo(index: number): Promise<IrqInfo> {
    return unwrap(decodeReply.irqInfo(await this.#simple(encode.getIrqInfo(this.#id(), index))));
  }

  /** The bytes read: a view of the reply, which belongs to this call alone. */
  async regionRead(region: number, offset: number, count: number): Promise<Uint8Array> {
    return unwrap(
      decodeReply.regionRead(
        await this.#simple(encode.regionRead(this.#id(), { region, offset, count })),
        count,
      ),
    );
  }

  /** A write; `posted` sends it NO_REPLY (as QEMU does for memory BARs), so errors go unseen. */
  async regionWrite(
    region: number,
    offset: number,
    data: Uint8Array,
    posted = false,
  ): Promise<void> {
    const id = this.#id();
    if (data.length >= SEND_BESIDE) {
      const head = encode.regionWriteHead(id, { region, offset, count: data.length }, posted);
      await this.#sendBeside(id, head, data, posted);
      return;
    }
    const bytes = encode.regionWrite(id, { region, offset, count: data.length, data }, posted);
    if (posted) {
      this.conn.send(bytes);
      return;
    }
    await this.#simple(bytes);
  }

  async writeMulti(
    writes: { region: number; offset: number; data: Uint8Array }[],
    posted = true,
  ): Promise<number | undefined> {
    const bytes = encode.writeMulti(
      this.#id(),
      writes.map(w => ({ ...w, count: w.data.length })),
      posted,
    );
    if (posted) {
      this.conn.send(bytes);
      return;
    }
    const r = await this.#simple(bytes);
    return new DataView(r.buffer, r.byteOffset, r.length).getUint32(0, true);
  }

  async read32(region: number, offset: number): Promise<number> {
    const b = await this.regionRead(region, offset, 4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }
  async read16(region: number, offset: number): Promise<number> {
    const b = await this.regionRead(region, offset, 2);
    return new DataView(b.buffer, b.byteOffset, 2).getUint16(0, true);
  }
  async read8(region: number, offset: number): Promise<number> {
    return (await this.regionRead(region, offset, 1))[0];
  }
  async write32(region: number, offset: number, v: number, posted = false): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    await this.regionWrite(region, offset, b, posted);
  }
  async write16(region: number, offset: number, v: number): Promise<void> {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, true);
    await this.regionWrite(region, offset, b);
  }
  async write8(region: number, offset: number, v: number): Promise<void> {
    await this.regionWrite(region, offset, Uint8Array.of(v));
  }
  config = {
    read32: (o: number) => this.read32(Region.CONFIG, o),
    read16: (o: number) => this.read16(Region.CONFIG, o),
    read8: (o: number) => this.read8(Region.CONFIG, o),
    write32: (o: number, v: number) => this.write32(Region.CONFIG, o, v),
    write16: (o: number, v: number) => this.write16(Region.CONFIG, o, v),
    write8: (o: number, v: number) => this.write8(Region.CONFIG, o, v),
  };

  async reset(): Promise<void> {
    await this.#simple(encode.reset(this.#id()));
  }

  /**
   * Binds new eventfds to vectors [start, start+count) of an IRQ index. Returns them with a
   * counter of signals received (read by a watcher on the event loop).
   */
  async bindIrqs(
    index: number,
    count = 1,
    start = 0,
  ): Promise<{
    fds: OwnedFd[];
    counts: number[];
    next(vector?: number, ms?: number): Promise<void>;
  }> {
    const fds = Array.from({ length: count }, () => eventfdCreate());
    await this.#simple(
      encode.setIrqs(this.#id(), {
        flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER,
        index,
        start,
        count,
      }),
      fds.map(f => f.fd),
    );
    const counts = new Array(count).fill(0),
      consumed = new Array(count).fill(0);
    const waiters: (() => void)[][] = fds.map(() => []);
    fds.forEach((f, i) => {
      const w = new FdWatcher(f.fd, () => {
        const v = eventfdRead(f.fd);
        if (v !== null) {
          counts[i] += Number(v);
          for (const r of waiters[i].splice(0)) r();
        }
      });
      this.#watchers.add(w);
    });
    this.#owned.push(...fds);
    return {
      fds,
      counts,
      /** Resolves on the next interrupt not yet waited for (one that already arrived counts). */
      next: (vector = 0, ms = 5000) =>
        new Promise((resolve, reject) => {
          const take = () => {
            consumed[vector]++;
            resolve();
          };
          if (counts[vector] > consumed[vector]) {
            take();
            return;
          }
          const t = setTimeout(
            () =>
              reject(new Error(`no interrupt on index ${index} vector ${vector} within ${ms} ms`)),
            ms,
          );
          waiters[vector].push(() => {
            clearTimeout(t);
            take();
          });
        }),
    };
  }

  async setIrqs(
    index: number,
    flags: number,
    start: number,
    count: number,
    opts: { bools?: Uint8Array; fds?: number[] } = {},
  ): Promise<void> {
    await this.#simple(
      encode.setIrqs(this.#id(), { flags, index, start, count, bools: opts.bools }),
      opts.fds ?? [],
    );
  }
  async unmaskIntx(): Promise<void> {
    await this.setIrqs(Irq.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1);
  }

  // --- guest memory ------------------------------------------------------------------------

  /**
   * Creates `size` bytes of guest RAM at `address` and maps it into the device (fd-backed, or
   * message-based with `viaMessages`).
   */
  async addRam(
    address: number,
    size: number,
    opts: { viaMessages?: boolean; readOnly?: boolean } = {},
  ): Promise<GuestRam> {
    const flags = DmaMapFlag.READ | (opts.readOnly ? 0 : DmaMapFlag.WRITE);
    let ram: GuestRam;
    if (opts.viaMessages) {
      ram = { address, size, bytes: new Uint8Array(size) };
      this.#fdlessDma = true;
      await this.#simple(encode.dmaMap(this.#id(), { flags, offset: 0, address, size }));
    } else {
      const fd = memfdCreate(`guest-ram-${address.toString(16)}`, size);
      const map = MappedMemory.map(fd.fd, 0, size);
      ram = { address, size, bytes: map.bytes(0, size), fd, map };
      try {
        await this.#simple(encode.dmaMap(this.#id(), { flags, offset: 0, address, size }), [fd.fd]);
      } catch (e) {
        map.release();
        fd.close();
        throw e;
      }
    }
    this.#ram.push(ram);
    return ram;
  }

  async dmaMap(
    req: { flags: number; offset: number; address: number; size: number; argsz?: number },
    fd?: number,
  ): Promise<void> {
    if (fd === undefined) this.#fdlessDma = true;
    await this.#simple(encode.dmaMap(this.#id(), req), fd === undefined ? [] : [fd]);
  }

  /**
   * Whether the server may send us DMA_READ/DMA_WRITE requests: some DMA range was mapped
   * without an fd (since connecting; unmapping does not clear it).
   */
  get dmaByMessage(): boolean {
    return this.#fdlessDma;
  }
  async dmaUnmap(
    address: number,
    size: number,
    opts: { all?: boolean; bitmapPage?: number } = {},
  ): Promise<Uint8Array | undefined> {
    const bitmap = opts.bitmapPage
      ? { pgsize: opts.bitmapPage, size: Math.ceil(Math.ceil(size / opts.bitmapPage) / 64) * 8 }
      : undefined;
    const r = unwrap(
      decodeReply.dmaUnmap(
        await this.#simple(
          encode.dmaUnmap(this.#id(), {
            flags: opts.all ? DmaUnmapFlag.ALL : bitmap ? DmaUnmapFlag.GET_DIRTY_BITMAP : 0,
            address,
            size,
            bitmap,
          }),
        ),
      ),
    );
    const i = this.#ram.findIndex(x => opts.all || (x.address === address && x.size === size));
    for (const x of opts.all ? this.#ram.splice(0) : i >= 0 ? this.#ram.splice(i, 1) : []) {
      x.map?.release();
      x.fd?.close();
    }
    return r.bitmapData ? Uint8Array.from(r.bitmapData) : undefined;
  }

  /** Answers the server's DMA_READ/DMA_WRITE from our RAM (fd-less ranges). */
  #serve(m: Incoming): void {
    closeAll(m.fds);
    const h: Header = m.header;
    if (
      (h.flags & Flag.TYPE_MASK) !== Flag.COMMAND ||
      (h.cmd !== Command.DMA_READ && h.cmd !== Command.DMA_WRITE)
    ) {
      if ((h.flags & Flag.TYPE_MASK) === Flag.COMMAND)
        this.conn.send(encodeErrorReply(h.id, h.cmd, Errno.EINVAL));
      return;
    }
    const layout = this.options.dmaLayout ?? 'spec';
    const max = this.options.maxDataXferSize ?? Defaults.maxDataXferSize;
    const t = dma.decodeRequest(h.cmd, layout, m.payload, max);
    if (t instanceof ProtocolError) {
      this.conn.send(encodeErrorReply(h.id, h.cmd, t.errno));
      return;
    }
    const ram = this.#ram.find(
      r => t.address >= r.address && t.address + t.count <= r.address + r.size,
    );
    if (!ram) {
      this.conn.send(encodeErrorReply(h.id, h.cmd, Errno.EFAULT));
      return;
    }
    const off = t.address - ram.address;
    if (h.cmd === Command.DMA_READ)
      this.conn.send(dma.readReplyEncode(h.id, layout, t, ram.bytes.subarray(off, off + t.count)));
    else {
      ram.bytes.set(t.data!, off);
      this.conn.send(dma.writeReplyEncode(h.id, layout, t));
    }
  }

  // --- migration messages -----------------------------------------------------------------

  async feature(
    flags: number,
    data: Uint8Array = new Uint8Array(0),
    argsz?: number,
  ): Promise<{ flags: number; data: Uint8Array }> {
    const r = unwrap(
      decodeReply.feature(await this.#simple(encode.feature(this.#id(), flags, data, argsz))),
    );
    return { flags: r.flags, data: Uint8Array.from(r.data) };
  }
  async migrationFlags(): Promise<number> {
    return unwrap(
      decodeFeatureData.u64(
        (await this.feature(FeatureFlag.GET | Feature.MIGRATION, new Uint8Array(0), 16)).data,
        'MIGRATION',
      ),
    );
  }
  async getState(): Promise<number> {
    return unwrap(
      decodeFeatureData.migDeviceState(
        (await this.feature(FeatureFlag.GET | Feature.MIG_DEVICE_STATE, new Uint8Array(0), 16))
          .data,
      ),
    ).state;
  }
  async setState(state: number): Promise<void> {
    await this.feature(
      FeatureFlag.SET | Feature.MIG_DEVICE_STATE,
      featureData.migDeviceState(state),
    );
  }
  async dataSize(): Promise<number> {
    return unwrap(
      decodeFeatureData.u64(
        (await this.feature(FeatureFlag.GET | Feature.MIG_DATA_SIZE, new Uint8Array(0), 16)).data,
        'MIG_DATA_SIZE',
      ),
    );
  }
  async precopyInfo(): Promise<{ initialBytes: number; dirtyBytes: number }> {
    return unwrap(
      decodeFeatureData.precopyInfo(
        (await this.feature(FeatureFlag.GET | Feature.VFU_PRECOPY_INFO, new Uint8Array(0), 24))
          .data,
      ),
    );
  }
  /** MIG_DATA_READ: the bytes the server has, at most `size` (trusts the reply's size field). */
  /** The returned bytes are a view of the reply (each message owns its buffer): no copy. */
  async migDataRead(size: number): Promise<Uint8Array> {
    return unwrap(
      decodeReply.migDataRead(await this.#simple(encode.migDataRead(this.#id(), size))),
    );
  }
  /** Sends `data` as it is (header and data in one two-part sendmsg, no copy joining them). */
  async migDataWrite(data: Uint8Array): Promise<void> {
    const id = this.#id();
    await this.#sendBeside(id, encode.migDataWriteHead(id, data.length), data);
  }

  /**
   * Sends `head` then `data` in one two-part sendmsg (no copy joining them) and, unless
   * `posted`, waits for the reply.
   */
  async #sendBeside(id: number, head: Uint8Array, data: Uint8Array, posted = false) {
    if (posted) {
      this.conn.send(head, [], data);
      return;
    }
    const r = await this.conn.request(id, head, [], this.options.timeoutMs ?? 5000, data);
    closeAll(r.fds);
  }

  /**
   * Gives back bytes that migDataRead or regionRead returned, once used: the next large reply
   * is received into their memory instead of fresh memory.
   */
  recycle(bytes: Uint8Array): void {
    this.conn.recycle(bytes);
  }

  /** Sends raw bytes as a request and returns the reply payload (for tests of malformed input). */
  async raw(bytes: Uint8Array, fds: number[] = []): Promise<Incoming> {
    return this.#req(bytes, fds);
  }
  nextId(): number {
    return this.#id();
  }

  close(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers.clear();
    closeAll(this.#owned.splice(0));
    for (const r of this.#ram.splice(0)) {
      r.map?.release();
      r.fd?.close();
    }
    this.conn.close();
  }
}
