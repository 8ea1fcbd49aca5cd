// What a device author writes (a DeviceDefinition) and what the kit makes of it (a PciDevice):
// config space, BARs, capabilities, interrupts, guest memory, declared state and memories.
import { Region, Errno } from '@vfu/protocol';
import { createState, resetState, type Schema, type StateOf } from '@vfu/stream';
import { ConfigSpace, Cfg, Command, type PciIdentity } from './config-space.js';
import { layoutCapabilities, type Capability, type CapabilityLayout } from './capabilities.js';
import { bar, sharedMemory, type Bar, type RegionHandler, type SharedMemory } from './regions.js';
import { Interrupts } from './interrupts.js';
import { DmaError } from './errors.js';
import { GuestMemory } from './guest-memory.js';

const ignore = () => {};

export type BarIndex = 0 | 1 | 2 | 3 | 4 | 5;
export type Options = Record<string, string>;

export interface DeviceContext<S extends Schema> {
  readonly state: StateOf<S>;
  readonly config: ConfigSpace;
  readonly irq: { raise(vector?: number): void; lower(): void };
  /** The device's DMA into client memory; refused (EPERM) unless COMMAND.BUS_MASTER is set. */
  readonly dma: {
    read(address: number, len: number): Promise<Uint8Array>;
    write(address: number, data: Uint8Array): Promise<void>;
    /** A synchronous view of fd-backed guest memory (GuestMemory.view: never keep it). */
    view(address: number, len: number, write: boolean): Uint8Array;
    /** Marks guest memory written through a view as dirty (migration's dirty logging). */
    dirtied(address: number, len: number): void;
  };
  readonly running: boolean;
  memory(name: string): SharedMemory;
  /**
   * Runs device work now if the device is running, otherwise as soon as it runs again (§8.1: no
   * progress while stopped).
   */
  whenRunning(work: () => void | Promise<void>): void;
  /**
   * Work with effects outside the device (a file write): started only while the device runs
   * (else when it runs again; never if a reset or a loaded state replaces the device's state
   * first), and a stop is answered only once every piece already started has finished
   * (`include/uapi/linux/vfio.h`, STOP: the device does not change anything outside itself).
   */
  io<T>(start: () => Promise<T>): Promise<T>;
  log(message: string): void;
}

export interface DeviceDefinition<S extends Schema = Schema> {
  /**
   * Name used on the command line and in the migration stream: a destination refuses another
   * model's state.
   */
  id: string;
  /** Version of the device's state layout. */
  version: number;
  description: string;
  pci: PciIdentity;
  /** 4096 for a PCI Express device. */
  configSize?: 256 | 4096;
  options?: Record<string, { description: string; default: string }>;
  state: S;
  /** Named memories backed by memfds (size in bytes): migrated page by page with dirty tracking. */
  memories?: (o: Options) => Record<string, number>;
  capabilities?: (o: Options) => Capability[];
  bars(dev: DeviceContext<S>, o: Options): Partial<Record<BarIndex, Bar>>;
  /** An expansion ROM (region 6): its bytes, a power of two of at least 2 KiB. */
  rom?: (o: Options) => Uint8Array;
  /** Device reset beyond zeroing the declared state. */
  onReset?(dev: DeviceContext<S>): void;
  /** The device stops (quiesce): after this no DMA and no interrupts until onRun. */
  onStop?(dev: DeviceContext<S>): void;
  onRun?(dev: DeviceContext<S>): void;
  /** After migrated state was loaded (e.g. re-derive things not in the state). */
  afterLoad?(dev: DeviceContext<S>): void;
  /**
   * Facts a guest sees beyond the PCI layout (e.g. a virtio device's features and configuration),
   * named and printable: a migration stream from a device that differs in one is refused.
   */
  identity?(dev: DeviceContext<S>): Record<string, string>;
  /**
   * What the outside world can do to the device (e.g. change a card's inputs), for tests and demos.
   */
  controls?: Record<string, (dev: DeviceContext<S>, value: number) => void>;
}

export const defineDevice = <S extends Schema>(d: DeviceDefinition<S>): DeviceDefinition<S> => d;

export class DeviceSetupError extends Error {
  override readonly name = 'DeviceSetupError';
}

/** A device made from its definition: what the server serves. */
export class PciDevice<S extends Schema = Schema> {
  readonly config: ConfigSpace;
  readonly state: StateOf<S>;
  readonly bars: (Bar | undefined)[] = [];
  readonly memories = new Map<string, SharedMemory>();
  readonly irq: Interrupts;
  readonly guest: GuestMemory;
  readonly caps: CapabilityLayout;
  readonly context: DeviceContext<S>;
  readonly options: Options;
  #initialConfig: Uint8Array;
  #rom: RegionHandler | undefined;
  #running = true;
  #work: (() => void | Promise<void>)[] = [];
  #workRequested = 0; // whenRunning calls so far (afterLoad is checked by what it adds)
  /**
   * Pieces of work the source had queued (by whenRunning, while stopped) that the last load's
   * afterLoad did not re-create: lost in the migration (0 when none).
   */
  lostWork = 0;
  #inFlight = new Set<Promise<void>>(); // asynchronous device work not yet finished
  #gatedIo: (() => void)[] = []; // io() asked for while stopped: starts when the device runs
  log: (m: string) => void = () => {};

  constructor(
    readonly def: DeviceDefinition<S>,
    opts: Options = {},
    limits = { maxMaps: 65535, pageSize: 4096, maxMapSize: 8 * 2 ** 40 },
  ) {
    this.options = {
      ...Object.fromEntries(Object.entries(def.options ?? {}).map(([k, v]) => [k, v.default])),
      ...opts,
    };
    for (const k of Object.keys(opts))
      if (!def.options?.[k]) throw new DeviceSetupError(`device ${def.id} has no option --${k}`);
    this.config = new ConfigSpace(def.configSize ?? 256);
    this.config.setIdentity(def.pci);
    this.state = createState(def.state);
    this.guest = new GuestMemory(limits);
    for (const [name, size] of Object.entries(def.memories?.(this.options) ?? {}))
      this.memories.set(name, sharedMemory(`${def.id}-${name}`, size));
    const caps = def.capabilities?.(this.options) ?? [];
    this.caps = layoutCapabilities(this.config, caps);
    const msixCap = caps.find((c): c is Extract<Capability, { kind: 'msix' }> => c.kind === 'msix');
    this.irq = new Interrupts(this.config, this.caps, msixCap?.vectors ?? 0);
    const self = this;
    this.context = {
      state: this.state,
      config: this.config,
      irq: { raise: v => this.irq.raise(v), lower: () => this.irq.lower() },
      dma: {
        // Async: a refusal (not bus master, outside the mappings) rejects, never throws.
        read: async (a, n) => {
          this.#checkDma();
          return this.guest.read(a, n);
        },
        write: async (a, d) => {
          this.#checkDma();
          return this.guest.write(a, d);
        },
        view: (a, n, w) => {
          this.#checkDma();
          return this.guest.view(a, n, w);
        },
        dirtied: (a, n) => this.guest.dirtied(a, n),
      },
      get running() {
        return self.#running;
      },
      memory: name => {
        const m = this.memories.get(name);
        if (!m) throw new DeviceSetupError(`no memory named ${name}`);
        return m;
      },
      whenRunning: work => {
        this.#workRequested++;
        if (this.#running) this.#run(work);
        else this.#work.push(work);
      },
      io: start => this.#io(start),
      log: m => this.log(m),
    };
    const bars = def.bars(this.context, this.options);
    for (const [i, b] of Object.entries(bars)) this.bars[Number(i)] = b;
    if (msixCap) {
      if (this.bars[msixCap.bar])
        throw new DeviceSetupError(`MSI-X table BAR ${msixCap.bar} is also declared by the device`);
      this.bars[msixCap.bar] = bar(
        'mem32',
        this.#msixTable(msixCap.vectors, msixCap.tableOffset, msixCap.pbaOffset),
      );
    }
    this.bars.forEach((b, i) => {
      if (b?.kind === 'mem64' && (i === 5 || this.bars[i + 1]))
        throw new DeviceSetupError(`64-bit BAR ${i} needs BAR ${i + 1} free`);
    });
    this.config.setBars(this.bars);
    const rom = def.rom?.(this.options);
    if (rom) {
      if (rom.length < 2048 || rom.length & (rom.length - 1))
        throw new DeviceSetupError(`ROM of ${rom.length} bytes: a power of two of at least 2 KiB`);
      this.config.setRom(rom.length);
      this.#rom = {
        size: rom.length,
        read: (o, out) => out.set(rom.subarray(o, o + out.length)),
        write: () => {},
      }; // read-only
    }
    this.config.onWrite(Cfg.COMMAND, Cfg.COMMAND + 2, () => this.irq.configChanged());
    if (this.caps.msi !== undefined)
      this.config.onWrite(this.caps.msi, this.caps.msi + 0x18, () => this.irq.configChanged());
    if (this.caps.msix !== undefined)
      this.config.onWrite(this.caps.msix, this.caps.msix + 4, () => this.irq.configChanged());
    this.#initialConfig = this.config.snapshot();
  }

  get running(): boolean {
    return this.#running;
  }

  #checkDma(): void {
    if (!(this.config.command & Command.BUS_MASTER))
      throw new DmaError(Errno.EPERM, 'DMA while bus mastering is disabled (COMMAND bit 2)');
    if (!this.#running) throw new DmaError(Errno.EBUSY, 'DMA while the device is stopped');
  }

  #run(work: () => void | Promise<void>): void {
    try {
      const r = work();
      if (r instanceof Promise) this.#track(r);
    } catch (e) {
      this.log(`device work failed: ${(e as Error).message}`);
    }
  }

  #track(work: Promise<void>): void {
    const done = work
      .catch(e => this.log(`device work failed: ${(e as Error).message}`))
      .finally(() => this.#inFlight.delete(done));
    this.#inFlight.add(done);
  }

  #io<T>(start: () => Promise<T>): Promise<T> {
    if (!this.#running)
      return new Promise((ok, fail) => this.#gatedIo.push(() => this.#io(start).then(ok, fail)));
    const p = start();
    // Tracked only to be waited for (quiescing): its failure is the caller's to handle.
    this.#track(p.then(ignore, ignore));
    return p;
  }

  /**
   * While stopped: settles once the work started before the stop (io, asynchronous device work)
   * has finished; null when there is none or the device runs. A stop is answered after it.
   */
  quiescing(): Promise<void> | null {
    return this.#running || this.#inFlight.size === 0 ? null : this.settled();
  }

  /** Resolves when the device work started so far (e.g. a DMA transfer) has finished. */
  async settled(): Promise<void> {
    while (this.#inFlight.size) await Promise.all(this.#inFlight);
  }

  /** Region handler for a vfio-user region index, or undefined when not implemented. */
  region(index: number): RegionHandler | undefined {
    if (index <= Region.BAR5) return this.bars[index]?.handler;
    if (index === Region.ROM) return this.#rom;
    if (index === Region.CONFIG)
      return {
        size: this.config.size,
        read: (o, out) => this.config.read(o, out),
        write: (o, d) => this.config.write(o, d),
      };
    return undefined;
  }

  /** Stop (quiesce) or run the device: no DMA and no interrupts while stopped. */
  setRunning(on: boolean): void {
    if (on === this.#running) return;
    this.#running = on;
    this.irq.hold(!on);
    if (on) {
      this.def.onRun?.(this.context);
      for (const w of this.#work.splice(0)) this.#run(w);
      for (const start of this.#gatedIo.splice(0)) start();
    } else this.def.onStop?.(this.context);
  }

  /** Device work waiting for the device to run again (closures: a migration cannot carry them). */
  get queuedWork(): number {
    return this.#work.length;
  }

  /**
   * A migrated state was loaded (config, interrupts and declared state): work queued here before
   * belongs to the state it replaced and is dropped; the model's afterLoad re-derives its pending
   * work from the state. If the source had work queued and afterLoad queued none, that work is
   * lost: said loudly, as the model breaks the contract (pending work lives in declared state).
   */
  loaded(queuedAtSource: number): void {
    this.#work = [];
    this.#gatedIo = [];
    const before = this.#workRequested;
    this.def.afterLoad?.(this.context);
    const recreated = this.#workRequested - before;
    this.lostWork = queuedAtSource > 0 && recreated === 0 ? queuedAtSource : 0;
    if (this.lostWork)
      this.log(
        `warning: ${this.def.id}: ${this.lostWork} piece(s) of device work queued by whenRunning ` +
          'at the migration source were not re-created by afterLoad and are lost (keep pending ' +
          'work in the declared state and queue it again in afterLoad)',
      );
  }

  /** Device reset: declared state zeroed, config back to power-on, interrupts to power-on. */
  reset(): void {
    resetState(this.def.state, this.state);
    this.#work = [];
    this.#gatedIo = [];
    this.config.bytes.set(this.#initialConfig);
    this.irq.reset();
    this.def.onReset?.(this.context);
  }

  release(): void {
    this.guest.unmapAll();
    this.irq.releaseAll();
    for (const m of this.memories.values()) m.release();
  }

  #msixTable(vectors: number, tableOffset: number, pbaOffset: number): RegionHandler {
    const table = this.irq.msixTable;
    const size = 2 ** Math.ceil(Math.log2(Math.max(4096, pbaOffset + Math.ceil(vectors / 64) * 8)));
    const irq = () => this.irq;
    return {
      size,
      read(off, out) {
        for (let i = 0; i < out.length; i++) {
          const a = off + i;
          if (a >= tableOffset && a < tableOffset + table.length) out[i] = table[a - tableOffset];
          else if (a >= pbaOffset && a < pbaOffset + Math.ceil(vectors / 8)) {
            let byte = 0;
            for (let b = 0; b < 8; b++)
              if (irq().msixPending((a - pbaOffset) * 8 + b)) byte |= 1 << b;
            out[i] = byte;
          } else out[i] = 0;
        }
      },
      write(off, data) {
        for (let i = 0; i < data.length; i++) {
          const a = off + i - tableOffset;
          if (a < 0 || a >= table.length) continue; // PBA is read-only
          table[a] = data[i];
          if (a % 16 === 12) irq().setMsixMask(Math.floor(a / 16), (data[i] & 1) === 1);
        }
      },
    };
  }
}
