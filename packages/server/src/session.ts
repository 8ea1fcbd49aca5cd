// One client's session: negotiation, the in-order dispatch of its commands, and the cleanup
// when it goes (§1.7).
import { closeAll } from '@vfu/native';
import {
  Command,
  Errno,
  Flag,
  Region,
  capabilitiesJson,
  commandName,
  decodeRequest,
  decodeVersion,
  encodeVersion,
  dma as dmaCodec,
  type Capabilities,
  type DmaLayout,
  type RegionCap,
  ProtocolError,
} from '@vfu/protocol';
import type { Connection, Incoming } from '@vfu/transport';
import type { PciDevice, RegionHandler } from '@vfu/pci';
import type { Handler, HandlerContext, HandlerTable, Reply } from './handlers.js';
import { regionReadInPlace, regionWriteInPlace, writeMultiInPlace } from './in-place.js';
import type { ServerLimits } from './limits.js';
import type { Logger } from './logger.js';

export interface SessionHooks {
  handlers: HandlerTable;
  /** Regions from index 9 on (e.g. the v1 migration region) and their extra capabilities. */
  extraRegions: RegionHandler[];
  regionCaps: Map<number, RegionCap[]>;
  onReset(reason: string): void;
  /** Whether the server offers migration (VERSION reply's `migration` key). */
  migration: boolean;
}

export class Session {
  caps: Capabilities | null = null;
  /** What handlers see: set once VERSION is negotiated. */
  #ctx: HandlerContext | null = null;
  #queue: Incoming[] = [];
  #busy = false;
  readonly extraRegions: RegionHandler[];
  readonly regionCaps: Map<number, RegionCap[]>;
  #dmaLayout: DmaLayout;

  constructor(
    readonly conn: Connection,
    readonly device: PciDevice,
    readonly limits: ServerLimits,
    private readonly hooks: SessionHooks,
    readonly log: Logger,
    dmaLayout: DmaLayout,
  ) {
    this.extraRegions = hooks.extraRegions;
    this.regionCaps = hooks.regionCaps;
    this.#dmaLayout = dmaLayout;
    conn.onMessage = m => {
      this.#queue.push(m);
      void this.#drain();
    };
    conn.onCommandInPlace = (b, off, limit, dv) => this.#inPlace(b, off, limit, dv);
  }

  /**
   * Region accesses straight from the receive buffer, once negotiated and only when nothing
   * queued before them waits (commands run in order).
   */
  #inPlace(b: Buffer, off: number, limit: number, dv: DataView): number {
    const ctx = this.#ctx;
    if (!ctx || this.#busy || this.#queue.length > 0) return 0;
    const cmd = dv.getUint16(off + 2, true);
    const conn = this.conn;
    if (cmd === Command.REGION_WRITE) return regionWriteInPlace(ctx, conn, b, dv, off, limit);
    if (cmd === Command.REGION_READ) return regionReadInPlace(ctx, conn, b, dv, off);
    if (cmd === Command.REGION_WRITE_MULTI) return writeMultiInPlace(ctx, conn, b, dv, off);
    return 0;
  }

  get numRegions(): number {
    return Region.NUM_PCI + this.extraRegions.length;
  }

  #region(index: number): RegionHandler | undefined {
    if (index < Region.NUM_PCI) return this.device.region(index);
    return this.extraRegions[index - Region.NUM_PCI];
  }

  #context(caps: Capabilities): HandlerContext {
    return {
      device: this.device,
      limits: this.limits,
      caps,
      regionCaps: this.regionCaps,
      numRegions: this.numRegions,
      region: i => this.#region(i),
      resetDevice: reason => this.resetDevice(reason),
      payloadDone: payload => this.conn.recycle(payload),
      log: m => this.log.warn(m), // what handlers log is a failure or a refusal
    };
  }

  resetDevice(reason: string): void {
    this.device.reset();
    this.hooks.onReset(reason);
  }

  /**
   * Runs queued commands in order. Synchronous handlers (nearly all) run without a promise or a
   * microtask hop; an asynchronous one (e.g. a DMA through the client) holds the queue until done.
   */
  async #drain(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      while (this.#queue.length && !this.conn.closed) {
        // A client that does not read its replies: execute nothing more until they drain, so
        // queued replies stay bounded by the high-water mark plus one reply.
        if (this.conn.backlogged) {
          await this.conn.drained();
          continue;
        }
        const m = this.#queue.shift()!;
        let pending: Promise<void> | undefined;
        try {
          pending = this.#handle(m);
          if (pending) await pending;
        } finally {
          closeAll(m.fds);
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  #reply(m: Incoming, r: Reply): void {
    if (this.conn.closed) return; // the client went while an answer waited (quiesce, DMA)
    if (typeof r === 'number') {
      this.conn.replyError(m.header, r);
      return;
    }
    if (m.header.flags & Flag.NO_REPLY) return;
    this.conn.send(r.msg, r.fds ?? [], r.more);
  }

  /** Handles one message; returns a promise only when the handler is asynchronous. */
  #handle(m: Incoming): Promise<void> | undefined {
    const h = m.header;
    if (m.error) {
      this.#note(h.cmd, m.error.message);
      this.conn.replyError(h, m.error.errno);
      return;
    }
    if ((h.flags & Flag.TYPE_MASK) === Flag.REPLY) {
      this.#note(h.cmd, `unsolicited reply #${h.id}`);
      this.conn.replyError({ ...h, flags: 0 }, Errno.EINVAL);
      return;
    }
    if (!this.caps) {
      if (h.cmd !== Command.VERSION || m.fds.length) {
        this.#note(
          h.cmd,
          h.cmd === Command.VERSION ? 'VERSION with fds' : 'first message must be VERSION',
        );
        this.conn.replyError(h, Errno.EINVAL);
        return;
      }
      const v = decodeVersion(m.payload, this.limits.pageSize);
      if (v instanceof ProtocolError) {
        this.#note(h.cmd, v.message);
        this.conn.replyError(h, v.errno);
        this.conn.close('negotiation failed');
        return;
      }
      const offered = v.caps;
      this.caps = { ...offered, maxDataXferSize: Math.min(offered.maxDataXferSize, 64 << 20) };
      this.#ctx = this.#context(this.caps);
      this.device.guest.messages = this.#messageDma();
      const reply: Partial<Capabilities> = {
        maxMsgFds: this.limits.maxMsgFds,
        maxDataXferSize: this.limits.maxDataXferSize,
        pgsizes: this.limits.pageSize,
        maxDmaMaps: this.limits.maxDmaMaps,
        migration:
          offered.migration && this.hooks.migration ? { pgsize: this.limits.pageSize } : undefined,
        writeMultiple: offered.writeMultiple,
      };
      this.conn.send(encodeVersion(h.id, true, 0, Math.min(v.minor, 2), capabilitiesJson(reply)));
      this.log.debug(`client negotiated: ${v.json || '(no capabilities)'}`);
      return;
    }
    return this.#dispatch(m);
  }

  #dispatch(m: Incoming): Promise<void> | undefined {
    const h = m.header;
    const caps = this.caps!;
    const req = decodeRequest(h.cmd, m.payload, m.fds.length, {
      maxRegionXfer: this.limits.maxDataXferSize,
      maxMigXfer: caps.maxDataXferSize,
    });
    if (req instanceof ProtocolError) {
      this.#note(h.cmd, req.message);
      this.conn.replyError(h, req.errno);
      return;
    }
    // The table is typed by command; TypeScript cannot correlate a union's key and value.
    const handler = this.hooks.handlers[req.cmd] as Handler<typeof req.cmd> | undefined;
    if (!handler) {
      this.#note(h.cmd, 'not supported by this server');
      this.conn.replyError(h, Errno.EINVAL);
      return;
    }
    const failed = (e: unknown) => {
      this.log.error(`${commandName(h.cmd)} failed: ${(e as Error).stack ?? e}`);
      this.conn.replyError(h, (e as { errno?: number }).errno ?? Errno.EIO);
    };
    try {
      const r = handler(this.#ctx!, h.id, req.body as never, m.fds);
      if (r instanceof Promise) return r.then(x => this.#replyWhenQuiet(m, x), failed);
      return this.#replyWhenQuiet(m, r);
    } catch (e) {
      failed(e);
    }
    return undefined;
  }

  /**
   * A request that stopped the device is answered once the device's work under way (file I/O,
   * DMA) has finished: until then the queue holds, so nothing overtakes the answer.
   */
  #replyWhenQuiet(m: Incoming, r: Reply): Promise<void> | undefined {
    const quiet = this.device.quiescing();
    if (quiet) return quiet.then(() => this.#reply(m, r));
    this.#reply(m, r);
    return undefined;
  }

  #note(cmd: number, why: string): void {
    this.log.warn(`refused ${commandName(cmd)}: ${why}`);
  }

  /** DMA_READ/DMA_WRITE to the client for fd-less mappings, in chunks of its max_data_xfer_size. */
  #messageDma() {
    const conn = this.conn,
      chunk = () => this.caps?.maxDataXferSize ?? 1 << 20,
      layout = () => this.#dmaLayout;
    return {
      async read(address: number, len: number): Promise<Uint8Array> {
        const out = new Uint8Array(len);
        for (let done = 0; done < len; ) {
          const n = Math.min(chunk(), len - done),
            id = conn.nextId();
          const r = await conn.request(
            id,
            dmaCodec.readRequest(id, layout(), address + done, n),
            [],
            5000,
          );
          closeAll(r.fds);
          const data = dmaCodec.readReply(layout(), r.payload, address + done, n);
          if (data instanceof ProtocolError) throw data;
          out.set(data, done);
          done += n;
        }
        return out;
      },
      async write(address: number, data: Uint8Array): Promise<void> {
        for (let done = 0; done < data.length; ) {
          const n = Math.min(chunk(), data.length - done),
            id = conn.nextId();
          const r = await conn.request(
            id,
            dmaCodec.writeRequest(id, layout(), address + done, data.subarray(done, done + n)),
            [],
            5000,
          );
          closeAll(r.fds);
          done += n;
        }
      },
    };
  }

  /** The client went away: every fd and mapping released (§1.7). */
  end(): void {
    for (const m of this.#queue) closeAll(m.fds);
    this.#queue = [];
    this.device.guest.unmapAll();
    this.device.guest.stopLogging();
    this.device.guest.messages = null;
    this.device.irq.releaseAll();
  }
}
