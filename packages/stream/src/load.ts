// Taking a device's stream in (the destination side): records are parsed as bytes arrive in any
// chunking, checked (checksum, device model, version, schema, bounds) and staged; nothing
// touches the device until commit(), which needs a complete stream.
import { copyAndHash, hash, isZero } from '@vfu/native';
import { parseHeader, Rec, FORMAT_VERSION, MEMORY_HEAD } from './format.js';
import { RecordFramer, RecordError } from './records.js';
import type { DeviceImage } from './image.js';
import { identityMismatch, parseIdentity } from './identity.js';

export class StreamError extends Error {
  override readonly name = 'StreamError';
}

/** Page size of the undo copy's bookkeeping (records cover whole pages; the last may end short). */
const UNDO_PAGE = 4096;

/**
 * Where memory records go. Staged (the default): kept aside and copied into the device's
 * memory at commit. In place (`undo` given: one buffer per memory, of its size, reusable
 * across sessions): written into the device's memory as soon as they are checked, the bytes
 * they replace saved first in `undo`, so that a stream that fails or is abandoned can still
 * leave the memory as it was (discard()), and commit has no memory to copy.
 */
export interface LoadOptions {
  undo?: Uint8Array[];
}

export class LoadSession {
  readonly #framer = new RecordFramer(
    r => this.#record(r),
    (r, dataHash) => this.#memory(r, dataHash),
  );
  #header = false;
  #state: Uint8Array | null = null;
  #config: Uint8Array | null = null;
  #kit: Uint8Array | null = null;
  #runs: { mem: number; off: number; bytes: Uint8Array }[] = [];
  #ended = false;
  #error: string | null = null;
  bytesIn = 0;
  readonly #undo: Uint8Array[] | null;
  #saved: Uint8Array[] = []; // per memory, per page: 1 once its old bytes are in #undo
  #touched = false;

  constructor(
    readonly image: DeviceImage,
    opts: LoadOptions = {},
  ) {
    this.#undo = opts.undo ?? null;
    if (this.#undo)
      this.#saved = image.memories.map(m => new Uint8Array(Math.ceil(m.size / UNDO_PAGE)));
  }

  get error(): string | null {
    return this.#error;
  }
  get complete(): boolean {
    return this.#ended;
  }

  /** Takes the next bytes of the stream. Throws StreamError (and stays failed) on bad data. */
  write(data: Uint8Array): void {
    if (this.#error) throw new StreamError(`stream already rejected: ${this.#error}`);
    this.bytesIn += data.length;
    try {
      this.#framer.write(data);
    } catch (e) {
      if (e instanceof RecordError) this.#fail(e.message);
      throw e;
    }
  }

  #fail(msg: string): never {
    this.#error = msg;
    this.#runs = [];
    this.discard();
    throw new StreamError(msg);
  }

  /** Puts back what in-place loading replaced (a stream that failed or was abandoned). */
  discard(): void {
    if (!this.#undo || !this.#touched) return;
    this.#touched = false;
    for (const [mem, saved] of this.#saved.entries()) {
      const m = this.image.memories[mem],
        undo = this.#undo[mem];
      for (let pg = 0; pg < saved.length; pg++) {
        if (!saved[pg]) continue;
        let end = pg + 1;
        while (end < saved.length && saved[end]) end++;
        const off = pg * UNDO_PAGE,
          len = Math.min(end * UNDO_PAGE, m.size) - off;
        m.bytes(off, len).set(undo.subarray(off, off + len));
        saved.fill(0, pg, end);
        pg = end; // page `end` was not saved (or is past the last): the loop may skip it
      }
    }
  }

  /**
   * Writes a memory run into the device, saving the bytes it replaces first (so that a run
   * whose check fails is put back by discard()); returns the hash of the bytes written.
   */
  #applyInPlace(mem: number, at: number, data: Uint8Array): number {
    const m = this.image.memories[mem],
      undo = this.#undo![mem],
      saved = this.#saved[mem];
    // Zeros onto memory never written are there already: writing them (and saving what they
    // replace) would give every page of it a page. A later record for the range goes as any.
    if (m.isHole?.(at, data.length) && isZero(data)) return hash(data);
    const first = Math.floor(at / UNDO_PAGE),
      last = Math.floor((at + data.length - 1) / UNDO_PAGE);
    for (let pg = first; pg <= last; pg++) {
      if (saved[pg]) continue;
      let end = pg + 1;
      while (end <= last && !saved[end]) end++;
      const off = pg * UNDO_PAGE,
        len = Math.min(end * UNDO_PAGE, m.size) - off;
      undo.set(m.bytes(off, len), off);
      saved.fill(1, pg, end);
      pg = end; // page `end` is saved already (or past the run): the loop may skip it
    }
    this.#touched = true;
    return copyAndHash(m.bytes(at, data.length), data);
  }

  #record(r: Uint8Array): void {
    const dv = new DataView(r.buffer, r.byteOffset, r.length);
    const type = dv.getUint16(0, true),
      len = dv.getUint32(4, true);
    const p = r.subarray(8, 8 + len);
    this.#checkPlace(type);
    // Whole memory records go to #memory: one here has no room for its head.
    if (type === Rec.MEMORY) this.#fail('memory record truncated');
    const img = this.image;
    switch (type) {
      case Rec.HEADER: {
        const h = parseHeader(p);
        if (typeof h === 'string') this.#fail(h);
        if (h.formatVersion !== FORMAT_VERSION)
          this.#fail(
            `stream format ${h.formatVersion} is not supported ` +
              `(this server reads ${FORMAT_VERSION})`,
          );
        if (h.deviceId !== img.deviceId)
          this.#fail(
            `state of device model "${h.deviceId}" cannot be loaded into "${img.deviceId}"`,
          );
        if (h.deviceVersion !== img.deviceVersion)
          this.#fail(
            `${h.deviceId} state version ${h.deviceVersion} is incompatible ` +
              `with version ${img.deviceVersion}`,
          );
        if (h.schema !== img.schema)
          this.#fail(`${h.deviceId} state layout differs (${h.schema} vs ${img.schema})`);
        this.#checkIdentity(h.deviceId, h.identity);
        if (this.#header) this.#fail('a second stream header');
        this.#header = true;
        return;
      }
      // State and kit records are copied before they are checked: the bytes given may be memory
      // the client can still write (a mapped v1 data window), or a body the connection reuses,
      // and what is kept must be what was checked. (new Uint8Array copies; a Buffer's slice()
      // would not.)
      case Rec.STATE: {
        const state = new Uint8Array(p);
        const e = img.checkState(state);
        if (e) this.#fail(`device state rejected: ${e}`);
        this.#state = state;
        return;
      }
      case Rec.CONFIG:
        if (p.length !== img.configSize)
          this.#fail(`config space of ${p.length} bytes, expected ${img.configSize}`);
        this.#config = new Uint8Array(p);
        return;
      case Rec.KIT: {
        if (!img.kit) this.#fail('a device kit record for a device that keeps none');
        const kit = new Uint8Array(p);
        const e = img.kit.check(kit);
        if (e) this.#fail(`device kit state rejected: ${e}`);
        this.#kit = kit;
        return;
      }
      case Rec.END:
        if (!this.#state || !this.#config) this.#fail('stream ended without device state');
        if (img.kit && !this.#kit) this.#fail('stream ended without the device kit record');
        this.#ended = true;
        return;
      default:
        this.#fail(`unknown record type ${type}`);
    }
  }

  /**
   * A MEMORY record from the framer, its data not verified yet: checked while it is copied
   * where it goes (into the device in place, else into a staging copy), and refused, with what
   * it replaced put back, if its bytes do not have the hash the record's check demands.
   */
  #memory(r: Uint8Array, dataHash: number): void {
    this.#checkPlace(Rec.MEMORY);
    const dv = new DataView(r.buffer, r.byteOffset, MEMORY_HEAD);
    const mem = dv.getUint16(8, true),
      at = dv.getUint32(12, true) + dv.getUint32(16, true) * 2 ** 32;
    const data = r.subarray(MEMORY_HEAD, r.length - 4);
    const m = this.image.memories[mem];
    // A head pointing outside the device is most likely a corrupted one: checked (a pass of
    // its own, on this path only) so that the error says which.
    const inside = m !== undefined && at + data.length <= m.size;
    if (!inside && hash(data) !== dataHash) this.#corrupted(`memory ${mem}`, at, data.length);
    if (!m) this.#fail(`memory ${mem} does not exist on this device`);
    if (!inside)
      this.#fail(`memory record [${at}, +${data.length}) beyond ${m.name} of ${m.size} bytes`);
    const got =
      this.#undo && data.length ? this.#applyInPlace(mem, at, data) : this.#stage(mem, at, data);
    if (got !== dataHash) this.#corrupted(m.name, at, data.length);
  }

  /** A record of `type` may come only after the header, and nothing after the end. */
  #checkPlace(type: number): void {
    if (!this.#header && type !== Rec.HEADER) this.#fail('stream does not start with a header');
    if (this.#ended) this.#fail('data after the end of the stream');
  }

  #corrupted(memory: string, at: number, n: number): never {
    this.#fail(
      `checksum mismatch in record ${this.#framer.records} (byte ${this.#framer.at} of the ` +
        `stream; ${memory} [${at}, +${n})): the stream was corrupted in transfer`,
    );
  }

  /** Keeps a copy of a memory run for commit(); returns the hash of the bytes kept. */
  #stage(mem: number, off: number, data: Uint8Array): number {
    const bytes = new Uint8Array(data.length);
    this.#runs.push({ mem, off, bytes });
    return copyAndHash(bytes, data);
  }

  /** Refuses a stream from a device a guest would see differently (another size of BAR...). */
  #checkIdentity(model: string, text: string): void {
    const theirs = parseIdentity(text);
    if (typeof theirs === 'string') this.#fail(theirs);
    const differs = identityMismatch(theirs, this.image.identity ?? {});
    if (differs) this.#fail(`not the same ${model} device: ${differs}`);
  }

  /**
   * Applies the staged stream to the device; refuses an incomplete or rejected one (and applies
   * nothing).
   */
  commit(): void {
    if (this.#error) throw new StreamError(`stream was rejected: ${this.#error}`);
    if (!this.#header) throw new StreamError('no migration data was received');
    if (!this.#ended || this.#framer.pending) {
      this.discard();
      throw new StreamError(`stream incomplete after ${this.bytesIn} bytes (no end record)`);
    }
    for (const r of this.#runs)
      this.image.memories[r.mem].bytes(r.off, r.bytes.length).set(r.bytes);
    // Config and the kit's state first: the device's afterLoad (in loadState) sees them.
    this.image.loadConfig(this.#config!);
    if (this.#kit) this.image.kit?.load(this.#kit);
    this.image.loadState(this.#state!);
    this.#runs = [];
    this.#touched = false; // committed: nothing to put back any more
  }
}
