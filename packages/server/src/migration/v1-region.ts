// The v1 migration region (§7.1): registers on the first page and a data window after it,
// adapted to the stream package's v1 save iteration (§7.5) and to the same load session the v2
// messages use. The window is a memfd the client may map (a sparse mmap area, as v1 vfio.h
// allows for the data section): a client that maps it moves a chunk with one memcpy instead of
// REGION_READ/REGION_WRITE messages through two sockets.
import { MappedMemory, memfdCreate, type OwnedFd } from '@vfu/native';
import { Errno, V1MigrationReg, V1_DATA_WINDOW } from '@vfu/protocol';
import { S, V1, toV1 } from '@vfu/fsm';
import { V1SaveIteration } from '@vfu/stream';
import { RegionAccessError, type RegionHandler } from '@vfu/pci';
import { MigrationError } from './errors.js';
import type { MigrationHost } from './host.js';

const V1Reg = V1MigrationReg;
const DATA_OFFSET = V1_DATA_WINDOW;
/** Size of the data window: the largest chunk the save iteration offers at once. */
const WINDOW = 1 << 20;

const bad = (msg: string, errno: number = Errno.EINVAL) => new RegionAccessError(errno, msg);

/** The window: a memfd the client may map, and the server's own mapping of it. */
interface Window {
  fd: OwnedFd;
  map: MappedMemory;
  bytes: Uint8Array;
}

function openWindow(): Window {
  const fd = memfdCreate('vfu-v1-migration-window', DATA_OFFSET + WINDOW);
  const map = MappedMemory.map(fd.fd, DATA_OFFSET, WINDOW);
  return { fd, map, bytes: map.bytes(0, WINDOW) };
}

export class V1Region implements RegionHandler {
  readonly size = DATA_OFFSET + WINDOW;
  mappable: NonNullable<RegionHandler['mappable']>;
  // Saving: where chunks are prepared; resuming: what the client wrote. A client that maps it
  // can change it under us at any time: it gains nothing it could not send in a message.
  #window: Window;
  #iteration: V1SaveIteration | null = null; // saving: bound to the current save session
  #mapped = false; // the window's fd was given to a client: its reads are not seen

  constructor(private readonly m: MigrationHost) {
    this.#window = openWindow();
    this.mappable = this.#mappable();
  }

  #mappable(): V1Region['mappable'] {
    const handedOut = () => {
      this.#mapped = true;
    };
    return { fd: this.#window.fd, areas: [{ offset: DATA_OFFSET, size: WINDOW }], handedOut };
  }

  resetIteration(): void {
    this.#iteration = null;
  }

  /**
   * The client left. A mapping it made outlives its connection: the next client gets a window of
   * its own, which the last one cannot read or write.
   */
  clientLeft(): void {
    if (!this.#mapped) return;
    this.#mapped = false;
    const old = this.#window;
    this.#iteration = null; // it prepares chunks in the old window
    this.#window = openWindow();
    this.mappable = this.#mappable();
    old.map.release();
    old.fd.close();
  }

  /** PRE_COPY -> STOP_COPY keeps the stream; a chunk not wholly read is offered again (§9). */
  onStopCopy(): void {
    this.#iteration?.onStopCopy();
  }

  get #saving(): boolean {
    return this.m.state === S.PRE_COPY || this.m.state === S.STOP_COPY;
  }

  /** The iteration over the current save session, once this transport has claimed it. */
  #iter(): V1SaveIteration | null {
    const m = this.m;
    if (!this.#saving || !m.save || !m.claim('v1')) return null;
    this.#iteration ??= new V1SaveIteration(m.save, this.#window.bytes);
    return this.#iteration;
  }

  /** Reads of the prepared chunk are sent from it as they are. */
  view(offset: number, len: number): Uint8Array | null {
    if (offset < DATA_OFFSET || !this.#saving) return null;
    return this.#iteration?.read(offset - DATA_OFFSET, len) ?? null;
  }

  read(offset: number, out: Uint8Array): void {
    if (offset >= DATA_OFFSET) {
      const bytes = this.#saving ? this.#iteration?.read(offset - DATA_OFFSET, out.length) : null;
      if (!bytes) throw bad('v1 data window read outside the prepared chunk');
      out.set(bytes);
      return;
    }
    const v = this.#register(offset, out.length);
    const dv = new DataView(out.buffer, out.byteOffset, out.length);
    if (out.length === 4) dv.setUint32(0, v, true);
    else dv.setBigUint64(0, BigInt(v), true);
  }

  #register(offset: number, len: number): number {
    const m = this.m;
    switch (offset) {
      case V1Reg.DEVICE_STATE:
        this.#width(len, 4);
        return toV1(m.state) ?? V1.ERROR;
      case V1Reg.RESERVED:
        this.#width(len, 4);
        return 0;
      case V1Reg.PENDING_BYTES: {
        this.#width(len, 8);
        return this.#iter()?.pendingBytes() ?? 0;
      }
      case V1Reg.DATA_OFFSET: {
        this.#width(len, 8);
        if (m.state === S.RESUMING) return DATA_OFFSET;
        const it = this.#iter();
        if (!it) throw bad('data_offset read while neither saving nor resuming');
        it.prepare();
        return DATA_OFFSET;
      }
      case V1Reg.DATA_SIZE: {
        this.#width(len, 8);
        if (m.state === S.RESUMING) return 0;
        const size = this.#saving ? this.#iteration?.dataSize : null;
        if (size === null || size === undefined) throw bad('data_size read before data_offset');
        // Through a mapping, reads are not seen: the chunk counts as read once its size is.
        if (this.#mapped) this.#iteration?.markRead();
        return size;
      }
      default:
        throw bad(`no v1 migration register at offset ${offset}`);
    }
  }

  #width(len: number, want: number): void {
    if (len !== want) throw bad(`v1 migration registers take ${want}-byte accesses, not ${len}`);
  }

  write(offset: number, data: Uint8Array): void {
    const m = this.m;
    if (offset >= DATA_OFFSET) {
      if (m.state !== S.RESUMING) throw bad('v1 data window written while not resuming');
      this.#window.bytes.set(data, offset - DATA_OFFSET);
      return;
    }
    const dv = new DataView(data.buffer, data.byteOffset, data.length);
    try {
      switch (offset) {
        case V1Reg.DEVICE_STATE: {
          this.#width(data.length, 4);
          const wasPre = m.state === S.PRE_COPY;
          m.setV1(dv.getUint32(0, true));
          if (wasPre && (m.state as number) === S.STOP_COPY) this.onStopCopy();
          return;
        }
        case V1Reg.RESERVED:
          this.#width(data.length, 4);
          return;
        case V1Reg.DATA_SIZE: {
          this.#width(data.length, 8);
          const n = Number(dv.getBigUint64(0, true));
          if (m.state !== S.RESUMING || !m.load || !m.claim('v1'))
            throw bad('data_size written while not resuming');
          if (n > WINDOW) throw bad(`data_size ${n} exceeds the ${WINDOW}-byte window`);
          m.loadWrite(this.#window.bytes.subarray(0, n));
          return;
        }
        case V1Reg.PENDING_BYTES:
        case V1Reg.DATA_OFFSET:
          throw bad('pending_bytes and data_offset are read-only');
        default:
          throw bad(`no v1 migration register at offset ${offset}`);
      }
    } catch (e) {
      if (e instanceof MigrationError) throw new RegionAccessError(e.errno, e.message);
      throw e;
    }
  }
}
