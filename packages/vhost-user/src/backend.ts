// The back-end side of one vhost-user connection: negotiates features, maps the memory table,
// sets up vrings from the front-end's messages and serves their requests with a virtio device
// model. Messages are handled one at a time, in order (GET_VRING_BASE waits for the ring's
// requests to finish before it answers). Every bad message gets the protocol's failure answer
// and the session goes on.
import { E, FdWatcher, closeAll, eventfdRead, eventfdWrite, type OwnedFd } from '@vfu/native';
import {
  ConfigFlag,
  MAX_CONFIG_SIZE,
  ProtocolFeature,
  Request,
  VRING_F_LOG,
  VhostFeature,
  requestName,
} from './constants.js';
import type { Incoming, VhostConnection } from './connection.js';
import { decodeMessage } from './decode.js';
import type { VhostUserDevice } from './device.js';
import { Feature as TransportFeature } from '@vfu/virtio';
import { reply } from './encode.js';
import { VhostUserError, einval } from './errors.js';
import { checkHeader, needsReply } from './header.js';
import { DirtyLog } from './log.js';
import { MemoryTable } from './memory.js';
import { hasReplyBody } from './replies.js';
import type { ConfigSpace, FrontendMessage, VringAddr, VringFile, VringState } from './types.js';
import { Vring } from './vring.js';
import { SplitQueue, type Chain, type GuestView } from '@vfu/virtio';

export interface BackendOptions {
  /** Memory slots offered to ADD_MEM_REG (GET_MAX_MEM_SLOTS). */
  maxMemSlots?: number;
  /** Largest total of one request's buffers. */
  maxChainBytes?: number;
  /** Diagnostics: refused messages, ring errors. */
  log?: (line: string) => void;
}

/** Protocol features this back-end speaks (vhost-user.rst "Protocol features"). */
export const BACKEND_PROTOCOL_FEATURES = [
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.CONFIG,
  ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
].reduce((a, b) => a | (1n << BigInt(b)), 0n);

const bit = (n: number) => 1n << BigInt(n);
const R = Request;

/** A reply to send: bytes and fds. */
interface Answer {
  bytes: Uint8Array;
  fds?: number[];
}

export class BackendSession {
  readonly #conn: VhostConnection;
  readonly #dev: VhostUserDevice;
  readonly #opt: Required<Omit<BackendOptions, 'log'>> & Pick<BackendOptions, 'log'>;
  readonly #mem: MemoryTable;
  readonly #rings: Vring[];
  readonly offeredFeatures: bigint;
  #features = 0n;
  #protocol = 0n;
  #featuresSet = false;
  #status = 0;
  #log: DirtyLog | null = null;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  /** Messages refused so far (for tests and diagnostics). */
  refused = 0;
  /** Resolves with the reason once the connection is gone and everything is released. */
  readonly closed: Promise<string>;
  #closedWith: (reason: string) => void = () => {};

  constructor(conn: VhostConnection, device: VhostUserDevice, options: BackendOptions = {}) {
    this.#conn = conn;
    this.#dev = device;
    this.#opt = {
      maxMemSlots: options.maxMemSlots ?? 32,
      maxChainBytes: options.maxChainBytes ?? 16 << 20,
      log: options.log,
    };
    this.#mem = new MemoryTable(this.#opt.maxMemSlots);
    this.#rings = Array.from({ length: device.queues.count }, (_, i) => new Vring(i));
    this.offeredFeatures =
      device.features.reduce((a, b) => a | bit(b), 0n) |
      bit(TransportFeature.VERSION_1) |
      bit(TransportFeature.RING_EVENT_IDX) |
      bit(TransportFeature.RING_INDIRECT_DESC) |
      bit(VhostFeature.PROTOCOL_FEATURES) |
      bit(VhostFeature.LOG_ALL);
    conn.onMessage = m => {
      this.#chain = this.#chain.then(() => this.#handle(m));
    };
    this.closed = new Promise(resolve => {
      this.#closedWith = resolve;
    });
    const previous = conn.onClose;
    conn.onClose = reason => {
      this.#teardown();
      this.#closedWith(reason);
      previous(reason);
    };
  }

  /** Features acked by SET_FEATURES. */
  get features(): bigint {
    return this.#features;
  }
  get protocolFeatures(): bigint {
    return this.#protocol;
  }
  get status(): number {
    return this.#status;
  }
  get memory(): MemoryTable {
    return this.#mem;
  }
  /** Each ring's indices, for tests and diagnostics. */
  ring(i: number): { started: boolean; enabled: boolean; base: number; inflight: number } {
    const r = this.#rings[i];
    return {
      started: r.started,
      enabled: r.enabled,
      base: r.queue?.lastAvail ?? r.base,
      inflight: r.inflight,
    };
  }

  #say(line: string): void {
    this.#opt.log?.(line);
  }

  async #handle(m: Incoming): Promise<void> {
    if (this.#closed) {
      closeAll(m.fds);
      return;
    }
    const h = m.header;
    const early = m.oversized
      ? new VhostUserError(E.EMSGSIZE, `${requestName(h.request)}: payload too large`)
      : m.truncated
        ? new VhostUserError(E.EBADF, `${requestName(h.request)}: file descriptors were lost`)
        : checkHeader(h);
    const msg = early ?? decodeMessage(h, m.payload, m.fds.length);
    if (msg instanceof VhostUserError) {
      closeAll(m.fds);
      this.#fail(h.request, needsReply(h), msg);
      return;
    }
    let answer: Answer | undefined;
    try {
      answer = await this.#dispatch(msg, m.fds);
    } catch (e) {
      closeAll(m.fds);
      if (!(e instanceof VhostUserError)) this.#say(`internal error: ${(e as Error).stack}`);
      const err = e instanceof VhostUserError ? e : new VhostUserError(E.EIO, String(e));
      this.#fail(h.request, needsReply(h), err);
      return;
    }
    if (answer) this.#conn.send(answer.bytes, answer.fds);
    else if (needsReply(h)) this.#conn.send(reply.ack(h.request, 0)); // REPLY_ACK
  }

  /** The protocol's failure answer ("REPLY_ACK"; GET_CONFIG: an empty payload). */
  #fail(request: number, needReply: boolean, e: VhostUserError): void {
    this.refused++;
    this.#say(`refused ${requestName(request)}: ${e.message}`);
    if (request === R.SET_LOG_BASE) this.#conn.send(reply.ack(request, e.errno));
    else if (hasReplyBody(request)) this.#conn.send(reply.empty(request));
    else if (needReply) this.#conn.send(reply.ack(request, e.errno));
  }

  #requireProtocol(f: number, what: string): void {
    if (!(this.#protocol & bit(f)))
      throw new VhostUserError(E.ENOTSUP, `${what} without its protocol feature negotiated`);
  }

  async #dispatch(m: FrontendMessage, fds: OwnedFd[]): Promise<Answer | undefined> {
    switch (m.request) {
      case R.GET_FEATURES:
        return { bytes: reply.u64(m.request, this.offeredFeatures) };
      case R.SET_FEATURES:
        return this.#setFeatures(m.features);
      case R.GET_PROTOCOL_FEATURES:
        return { bytes: reply.u64(m.request, BACKEND_PROTOCOL_FEATURES) };
      case R.SET_PROTOCOL_FEATURES:
        if (m.features & ~BACKEND_PROTOCOL_FEATURES)
          throw einval(`protocol features 0x${m.features.toString(16)} were not offered`);
        this.#protocol = m.features;
        return;
      case R.SET_OWNER:
        return;
      case R.RESET_OWNER:
        // Deprecated; "Front-end message types" recommends disabling the rings.
        for (const r of this.#rings) r.enabled = false;
        return;
      case R.RESET_DEVICE:
        this.#requireProtocol(ProtocolFeature.RESET_DEVICE, 'RESET_DEVICE');
        this.#resetDevice();
        return;
      case R.GET_QUEUE_NUM:
        return { bytes: reply.u64(m.request, this.#rings.length) };
      case R.GET_MAX_MEM_SLOTS:
        return { bytes: reply.u64(m.request, this.#opt.maxMemSlots) };
      case R.SET_MEM_TABLE:
        this.#mem.replace(m.regions, fds);
        this.#remapRings();
        return;
      case R.ADD_MEM_REG:
        this.#requireProtocol(ProtocolFeature.CONFIGURE_MEM_SLOTS, 'ADD_MEM_REG');
        this.#mem.add(m.region, fds[0]);
        this.#remapRings();
        return;
      case R.REM_MEM_REG:
        this.#requireProtocol(ProtocolFeature.CONFIGURE_MEM_SLOTS, 'REM_MEM_REG');
        closeAll(fds); // "the back-end MUST close it without using it"
        this.#mem.remove(m.region);
        this.#remapRings();
        return;
      case R.SET_LOG_BASE:
        return this.#setLogBase(m.log.size, m.log.offset, fds[0]);
      case R.SET_LOG_FD:
        closeAll(fds); // the log is only ever read by the front-end: nothing to signal
        return;
      case R.SET_VRING_NUM:
        this.#setNum(m.state);
        return;
      case R.SET_VRING_ADDR:
        this.#setAddr(m.addr);
        return;
      case R.SET_VRING_BASE:
        this.#setBase(m.state);
        return;
      case R.GET_VRING_BASE:
        return { bytes: reply.state(m.request, await this.#stop(m.state.index)) };
      case R.SET_VRING_KICK:
        this.#setKick(m.file, fds[0]);
        return;
      case R.SET_VRING_CALL:
        this.#setCall(m.file, fds[0]);
        return;
      case R.SET_VRING_ERR:
        this.#ringAt(m.file.index).err?.close();
        this.#ringAt(m.file.index).err = fds[0] ?? null;
        return;
      case R.SET_VRING_ENABLE:
        this.#setEnable(m.state);
        return;
      case R.GET_CONFIG:
        return { bytes: reply.config(m.config, this.#configBytes(m.config)) };
      case R.SET_CONFIG:
        this.#setConfig(m.config);
        return;
      case R.SET_STATUS:
        this.#requireProtocol(ProtocolFeature.STATUS, 'SET_STATUS');
        this.#status = m.status;
        return;
      case R.GET_STATUS:
        this.#requireProtocol(ProtocolFeature.STATUS, 'GET_STATUS');
        return { bytes: reply.u64(m.request, this.#status) };
      default:
        closeAll(fds);
        throw new VhostUserError(
          E.ENOTSUP,
          `${requestName(m.request)} needs a protocol feature this back-end does not offer`,
        );
    }
  }

  #setFeatures(f: bigint): undefined {
    if (f & ~this.offeredFeatures)
      throw einval(`features 0x${(f & ~this.offeredFeatures).toString(16)} were not offered`);
    this.#features = f;
    this.#featuresSet = true;
    // Rings start enabled unless PROTOCOL_FEATURES was negotiated ("Ring states").
    if (!(f & bit(VhostFeature.PROTOCOL_FEATURES))) for (const r of this.#rings) r.enabled = true;
    // EVENT_IDX or INDIRECT_DESC may have changed: queues are rebuilt with the new features.
    this.#remapRings();
    return undefined;
  }

  #setLogBase(size: number, offset: number, fd: OwnedFd): Answer {
    this.#requireProtocol(ProtocolFeature.LOG_SHMFD, 'SET_LOG_BASE with an fd');
    let log: DirtyLog;
    try {
      log = new DirtyLog(fd, size, offset);
    } catch (e) {
      throw new VhostUserError(E.EFAULT, `cannot map the dirty log: ${(e as Error).message}`);
    }
    this.#log?.release();
    this.#log = log;
    return { bytes: reply.ack(R.SET_LOG_BASE, 0) };
  }

  #ringAt(index: number): Vring {
    const r = this.#rings[index];
    if (!r)
      throw einval(`vring ${index} does not exist: the device has ${this.#rings.length} queues`);
    return r;
  }

  #stopped(index: number, what: string): Vring {
    const r = this.#ringAt(index);
    if (r.started) throw new VhostUserError(E.EBUSY, `${what} on vring ${index} while started`);
    return r;
  }

  #setNum(s: VringState): void {
    const r = this.#stopped(s.index, 'SET_VRING_NUM');
    const max = this.#dev.queues.size;
    if (s.num < 1 || s.num > max || s.num & (s.num - 1))
      throw einval(`vring ${s.index} size ${s.num}: a power of two up to ${max}`);
    r.num = s.num;
    r.queue = null;
  }

  #setBase(s: VringState): void {
    const r = this.#stopped(s.index, 'SET_VRING_BASE');
    if (s.num > 0xffff) throw einval(`vring ${s.index} base ${s.num} above 16 bits (split ring)`);
    r.base = s.num;
    r.usedIdx = null;
    r.queue = null;
  }

  #setAddr(a: VringAddr): void {
    const r = this.#ringAt(a.index);
    if (a.flags & ~VRING_F_LOG) throw einval(`vring ${a.index} flags 0x${a.flags.toString(16)}`);
    const moved =
      !r.addr || r.addr.desc !== a.desc || r.addr.used !== a.used || r.addr.avail !== a.avail;
    if (moved && r.started)
      throw new VhostUserError(E.EBUSY, `vring ${a.index} moved while started`);
    r.addr = a; // the log flag and address may change while the ring runs (migration)
    if (moved) r.queue = null;
  }

  #setKick(f: VringFile, fd: OwnedFd | undefined): void {
    const r = this.#ringAt(f.index);
    if (!fd) {
      throw new VhostUserError(E.ENOTSUP, `vring ${f.index}: polling (no kick fd) unsupported`);
    }
    r.closeKick();
    r.kick = fd;
    r.kickWatch = new FdWatcher(fd.fd, () => {
      try {
        if (r.kick) eventfdRead(r.kick.fd);
      } catch {
        // a kick fd that is not an eventfd still wakes us; reading it is best effort
      }
      this.#process(r);
    });
    r.started = true; // "Ring states": a ring starts with its kick
    r.broken = false;
    this.#process(r);
  }

  #setCall(f: VringFile, fd: OwnedFd | undefined): void {
    const r = this.#ringAt(f.index);
    r.call?.close();
    r.call = fd ?? null;
    if (r.call && r.callPending) this.#signal(r);
  }

  #setEnable(s: VringState): void {
    const r = this.#ringAt(s.index);
    if (s.num > 1) throw einval(`SET_VRING_ENABLE ${s.num}: 0 or 1`);
    r.enabled = s.num === 1;
    this.#process(r);
  }

  #configBytes(c: Omit<ConfigSpace, 'data'>): Uint8Array {
    const all = new Uint8Array(MAX_CONFIG_SIZE);
    const cfg = this.#dev.config();
    all.set(cfg.subarray(0, MAX_CONFIG_SIZE));
    return all.subarray(c.offset, c.offset + c.size);
  }

  #setConfig(c: ConfigSpace): void {
    if (c.flags !== ConfigFlag.WRITABLE && c.flags !== ConfigFlag.MIGRATION)
      throw einval(`SET_CONFIG flags ${c.flags}: 0 (writable fields) or 1 (migration)`);
    const same = this.#configBytes(c).every((b, i) => b === c.data[i]);
    if (same) return;
    if (!this.#dev.writeConfig?.(c.offset, c.data))
      throw new VhostUserError(
        E.EPERM,
        `SET_CONFIG [${c.offset}, +${c.size}): read-only configuration field`,
      );
  }

  /** GET_VRING_BASE: stop taking requests, wait for those in flight, answer last_avail_idx. */
  async #stop(index: number): Promise<VringState> {
    const r = this.#ringAt(index);
    r.closeKick();
    r.started = false;
    if (r.inflight > 0) await new Promise<void>(resolve => r.drained.push(resolve));
    if (r.queue) {
      r.base = r.queue.lastAvail;
      r.usedIdx = r.queue.usedIdx;
    }
    r.queue = null;
    return { index, num: r.base };
  }

  #resetDevice(): void {
    for (const r of this.#rings) r.reset();
    this.#features = 0n;
    this.#featuresSet = false;
    this.#status = 0;
  }

  /** The memory table or features changed: queues are rebuilt (their indices carried over). */
  #remapRings(): void {
    for (const r of this.#rings) {
      if (r.queue) {
        r.base = r.queue.lastAvail;
        r.usedIdx = r.queue.usedIdx;
      }
      r.queue = null;
    }
  }

  /** Guest memory as a queue sees it: writes are logged while LOG_ALL is acked ("Migration"). */
  #view(r: Vring, used: number, usedSize: number): GuestView {
    return {
      view: (address, len) => this.#mem.view(address, len),
      dirtied: (address, len) => this.#logged(r, address, len, used, usedSize),
    };
  }

  #logged(r: Vring, address: number, len: number, used: number, usedSize: number): void {
    if (!this.#log || !(this.#features & bit(VhostFeature.LOG_ALL))) return;
    const addr = r.addr;
    if (addr && address >= used && address + len <= used + usedSize) {
      // Used ring writes are logged at log_guest_addr, and only with VRING_F_LOG.
      if (addr.flags & VRING_F_LOG) this.#log.mark(addr.log + (address - used), len);
      return;
    }
    this.#log.mark(address, len);
  }

  #queue(r: Vring): SplitQueue {
    if (r.queue) return r.queue;
    if (!r.addr || r.num === 0) throw new Error(`vring ${r.index} is not set up (size, addresses)`);
    const desc = this.#mem.guestAddressOf(r.addr.desc);
    const driver = this.#mem.guestAddressOf(r.addr.avail);
    const device = this.#mem.guestAddressOf(r.addr.used);
    const usedSize = 6 + 8 * r.num;
    const eventIdx = (this.#features & bit(TransportFeature.RING_EVENT_IDX)) !== 0n;
    const indirect = (this.#features & bit(TransportFeature.RING_INDIRECT_DESC)) !== 0n;
    // used->idx as the guest sees it (after a migration, what the source wrote).
    const usedIdx =
      r.usedIdx ?? new DataView(this.#mem.view(device + 2, 2).slice().buffer).getUint16(0, true);
    r.queue = new SplitQueue(
      this.#view(r, device, usedSize),
      { size: r.num, desc, driver, device },
      { eventIdx, indirect, maxChainBytes: this.#opt.maxChainBytes },
      r.base,
      usedIdx,
    );
    return r.queue;
  }

  /** Takes every available request of a started, enabled ring (virtio 1.2 §2.7.13.4). */
  #process(r: Vring): void {
    if (this.#closed || !r.started || !r.enabled || r.broken || !this.#featuresSet) return;
    try {
      const sq = this.#queue(r);
      for (;;) {
        for (let chain = sq.pop(); chain; chain = sq.pop()) this.#start(r, sq, chain);
        // With EVENT_IDX, look again after publishing avail_event (§2.7.10).
        sq.publishAvailEvent();
        if (!sq.features.eventIdx || sq.pending() === 0) break;
      }
    } catch (e) {
      this.#ringError(r, e);
    }
  }

  #start(r: Vring, sq: SplitQueue, chain: Chain): void {
    const data = sq.gather(chain);
    const epoch = r.epoch;
    r.inflight++;
    let p: Promise<Uint8Array>;
    try {
      p = this.#dev.handle({ queue: r.index, data, writable: chain.writeBytes });
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      answer => this.#complete(r, epoch, chain, answer),
      e => {
        this.#say(`vring ${r.index} head ${chain.head}: ${(e as Error).message}`);
        this.#complete(r, epoch, chain, new Uint8Array(0));
      },
    );
  }

  /** The answer into the chain's buffers, then a used entry and maybe an interrupt (§2.7.8). */
  #complete(r: Vring, epoch: number, chain: Chain, answer: Uint8Array): void {
    if (epoch !== r.epoch) return; // the ring was reset since: its memory may be gone
    r.inflight--;
    try {
      const sq = this.#queue(r);
      const since = sq.usedIdx;
      sq.push(chain.head, sq.scatter(chain, answer));
      if (sq.wantsInterrupt(since)) this.#signal(r);
    } catch (e) {
      this.#ringError(r, e);
    }
    if (r.inflight === 0) for (const d of r.drained.splice(0)) d();
  }

  #signal(r: Vring): void {
    if (!r.call) {
      r.callPending = true;
      return;
    }
    r.callPending = false;
    try {
      eventfdWrite(r.call.fd);
    } catch (e) {
      this.#say(`vring ${r.index}: call fd: ${(e as Error).message}`);
    }
  }

  /** A driver error: the ring stops and the front-end hears of it on the error fd. */
  #ringError(r: Vring, e: unknown): void {
    r.broken = true;
    this.#say(`vring ${r.index} stopped: ${(e as Error).message}`);
    if (r.err) {
      try {
        eventfdWrite(r.err.fd);
      } catch {
        // the front-end closed its end: it will not hear of it either way
      }
    }
  }

  #teardown(): void {
    this.#closed = true;
    for (const r of this.#rings) r.reset();
    this.#mem.clear();
    this.#log?.release();
    this.#log = null;
  }
}
