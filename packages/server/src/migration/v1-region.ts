// The v1 migration region (§7.1): registers on the first page, a data window after it, and the
// iteration protocol of §7.5 (pending_bytes / data_offset / data_size) over the same save and
// load sessions the v2 messages use.
import { Errno } from '@vfu/protocol';
import { S, toV1 } from '@vfu/fsm';
import { RegionAccessError, type RegionHandler } from '@vfu/pci';
import { MigrationError, type Migration } from './index.js';

export const V1Reg = { DEVICE_STATE: 0, RESERVED: 4, PENDING_BYTES: 8, DATA_OFFSET: 16, DATA_SIZE: 24 } as const;
export const DATA_OFFSET = 4096;
export const WINDOW = 1 << 20;

const bad = (msg: string, errno: number = Errno.EINVAL) => new RegionAccessError(errno, msg);

export class V1Region implements RegionHandler {
  readonly size = DATA_OFFSET + WINDOW;
  readonly #window = new Uint8Array(WINDOW);
  #chunk = 0; // bytes prepared in the window (saving)
  #prepared = false;
  #readMax = 0; // highest byte of the prepared chunk read so far (saving)
  #reoffer = false;

  constructor(private readonly m: Migration) {}

  resetIteration(): void { this.#prepared = false; this.#chunk = 0; this.#readMax = 0; this.#reoffer = false; }

  /** PRE_COPY -> STOP_COPY keeps the stream; a chunk not wholly read is offered again (§9). */
  onStopCopy(): void { if (this.#prepared && this.#readMax < this.#chunk) this.#reoffer = true; else this.#chunk = 0; this.#prepared = false; }

  get #saving(): boolean { return this.m.state === S.PRE_COPY || this.m.state === S.STOP_COPY; }

  read(offset: number, out: Uint8Array): void {
    if (offset >= DATA_OFFSET) {
      const o = offset - DATA_OFFSET;
      if (!this.#saving || !this.#prepared || o + out.length > this.#chunk) throw bad('v1 data window read outside the prepared chunk');
      out.set(this.#window.subarray(o, o + out.length));
      this.#readMax = Math.max(this.#readMax, o + out.length);
      return;
    }
    const v = this.#register(offset, out.length);
    const dv = new DataView(out.buffer, out.byteOffset, out.length);
    if (out.length === 4) dv.setUint32(0, v, true); else dv.setBigUint64(0, BigInt(v), true);
  }

  #register(offset: number, len: number): number {
    const m = this.m;
    switch (offset) {
      case V1Reg.DEVICE_STATE: this.#width(len, 4); return toV1(m.state) ?? 6;
      case V1Reg.RESERVED: this.#width(len, 4); return 0;
      case V1Reg.PENDING_BYTES: {
        this.#width(len, 8);
        if (!this.#saving || !m.save || !m.claim('v1')) return 0;
        if (this.#prepared) { this.#prepared = false; this.#chunk = 0; } // the chunk is consumed
        if (m.state === S.STOP_COPY) return m.save.finished && !this.#reoffer ? 0 : Math.max(1, m.save.stopCopyEstimate());
        const p = m.save.precopyInfo();
        return p.initialBytes + p.dirtyBytes;
      }
      case V1Reg.DATA_OFFSET: {
        this.#width(len, 8);
        if (m.state === S.RESUMING) return DATA_OFFSET;
        if (!this.#saving || !m.save || !m.claim('v1')) throw bad('data_offset read while neither saving nor resuming');
        if (!this.#prepared) {
          if (this.#reoffer) this.#reoffer = false;
          else { const c = m.save.read(WINDOW); this.#window.set(c); this.#chunk = c.length; }
          this.#prepared = true; this.#readMax = 0;
        }
        return DATA_OFFSET;
      }
      case V1Reg.DATA_SIZE:
        this.#width(len, 8);
        if (m.state === S.RESUMING) return 0;
        if (!this.#saving || !this.#prepared) throw bad('data_size read before data_offset');
        return this.#chunk;
      default: throw bad(`no v1 migration register at offset ${offset}`);
    }
  }

  #width(len: number, want: number): void { if (len !== want) throw bad(`v1 migration registers take ${want}-byte accesses, not ${len}`); }

  write(offset: number, data: Uint8Array): void {
    const m = this.m;
    if (offset >= DATA_OFFSET) {
      if (m.state !== S.RESUMING) throw bad('v1 data window written while not resuming');
      this.#window.set(data, offset - DATA_OFFSET);
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
        case V1Reg.RESERVED: this.#width(data.length, 4); return;
        case V1Reg.DATA_SIZE: {
          this.#width(data.length, 8);
          const n = Number(dv.getBigUint64(0, true));
          if (m.state !== S.RESUMING || !m.load || !m.claim('v1')) throw bad('data_size written while not resuming');
          if (n > WINDOW) throw bad(`data_size ${n} exceeds the ${WINDOW}-byte window`);
          m.loadWrite(this.#window.subarray(0, n));
          return;
        }
        case V1Reg.PENDING_BYTES: case V1Reg.DATA_OFFSET: throw bad('pending_bytes and data_offset are read-only');
        default: throw bad(`no v1 migration register at offset ${offset}`);
      }
    } catch (e) {
      if (e instanceof MigrationError) throw new RegionAccessError(e.errno, e.message);
      throw e;
    }
  }
}
