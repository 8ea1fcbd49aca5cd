// An in-process test bench for device models (`@vfu/pci/testing`): the device, a client end for
// config and BAR accesses, guest RAM the device can DMA into, counted interrupts (no eventfds),
// stop/run, and migration to a second instance through the stream code the server uses.
import { MappedMemory, dupFd, memfdCreate, type OwnedFd } from '@vfu/native';
import { DmaMapFlag, Irq, IrqSetFlag, Region } from '@vfu/protocol';
import { LoadSession, SaveSession, type Schema, type StateOf } from '@vfu/stream';
import { Cfg, Command, MsixControl } from './config-space.js';
import { DeviceSetupError, PciDevice, type DeviceDefinition, type Options } from './device.js';
import { deviceImage } from './image.js';
import type { Interrupts } from './interrupts.js';
import type { RegionHandler } from './regions.js';

export interface HarnessOptions {
  /** Device options, as on the server's command line (e.g. `{ memory: '64K' }`). */
  options?: Options;
  /** Guest RAM in bytes, a multiple of 4096 (default 1 MiB). */
  ramSize?: number;
  /** Guest address of the RAM's first byte (default 0). */
  ramBase?: number;
}

/** Deliveries the device made, by interrupt kind and vector. */
export interface InterruptCounts {
  intx: number;
  msi: number[];
  msix: number[];
  err: number;
  req: number;
}

export interface MigrateOptions {
  /** Size of the pieces the stream is carried in (default 64 KiB). */
  chunk?: number;
  /** Runs on the running source after the first pre-copy pass (default: a stop-copy only). */
  whileRunning?: () => void;
}

const PAGE = 4096;

/** One region as the client sees it: byte accesses and little-endian 8/16/32/64-bit ones. */
export class RegionPort {
  constructor(
    readonly name: string,
    readonly handler: RegionHandler,
  ) {}

  get size(): number {
    return this.handler.size;
  }

  read(offset: number, length: number): Uint8Array {
    this.#check(offset, length);
    const out = new Uint8Array(length);
    this.handler.read(offset, out);
    return out;
  }

  write(offset: number, data: Uint8Array): void {
    this.#check(offset, data.length);
    this.handler.write(offset, data);
  }

  read8(offset: number): number {
    return this.read(offset, 1)[0];
  }
  read16(offset: number): number {
    return view(this.read(offset, 2)).getUint16(0, true);
  }
  read32(offset: number): number {
    return view(this.read(offset, 4)).getUint32(0, true);
  }
  read64(offset: number): bigint {
    return view(this.read(offset, 8)).getBigUint64(0, true);
  }

  write8(offset: number, value: number): void {
    this.write(offset, Uint8Array.of(value));
  }
  write16(offset: number, value: number): void {
    const b = new Uint8Array(2);
    view(b).setUint16(0, value, true);
    this.write(offset, b);
  }
  write32(offset: number, value: number): void {
    const b = new Uint8Array(4);
    view(b).setUint32(0, value >>> 0, true);
    this.write(offset, b);
  }
  write64(offset: number, value: bigint | number): void {
    const b = new Uint8Array(8);
    view(b).setBigUint64(0, BigInt(value), true);
    this.write(offset, b);
  }

  // The server refuses accesses beyond a region; a test that makes one has a bug.
  #check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || offset < 0 || length < 1 || offset + length > this.size)
      throw new RangeError(
        `${this.name}: access [${offset}, +${length}) outside ${this.size} bytes`,
      );
  }
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** A device model under test, with the client's side of everything the server would carry. */
export class DeviceHarness<S extends Schema = Schema> {
  readonly device: PciDevice<S>;
  /** The guest RAM, as the guest sees it (index 0 is guest address `ramBase`). */
  readonly ram: Uint8Array;
  readonly ramBase: number;
  readonly irqs: InterruptCounts;
  readonly config: RegionPort;
  /** Messages the device logged (its `dev.log`, failed device work). */
  readonly logs: string[] = [];
  readonly #ramFd: OwnedFd;
  readonly #ramMap: MappedMemory;

  constructor(
    readonly def: DeviceDefinition<S>,
    opts: HarnessOptions = {},
  ) {
    this.device = new PciDevice(def, opts.options ?? {});
    this.device.log = m => this.logs.push(m);
    this.config = new RegionPort('config space', this.device.region(Region.CONFIG)!);
    this.irqs = countInterrupts(this.device.irq);
    this.ramBase = opts.ramBase ?? 0;
    const size = opts.ramSize ?? 1 << 20;
    if (size <= 0 || size % PAGE) throw new RangeError(`RAM of ${size} bytes: a multiple of 4096`);
    this.#ramFd = memfdCreate(`${def.id}-guest-ram`, size);
    this.#ramMap = MappedMemory.map(this.#ramFd.fd, 0, size);
    this.ram = this.#ramMap.bytes(0, size);
    this.#mapRam(size);
  }

  // The client's DMA_MAP of its RAM: the device reaches it through a mapping of the same memfd.
  #mapRam(size: number): void {
    const flags = DmaMapFlag.READ | DmaMapFlag.WRITE;
    const req = { argsz: 32, flags, offset: 0, address: this.ramBase, size };
    this.device.guest.map(req, dupFd(this.#ramFd.fd)); // a PciError says why if it cannot
  }

  get state(): StateOf<S> {
    return this.device.state;
  }

  get running(): boolean {
    return this.device.running;
  }

  /** BAR `index` (0-5) as the client accesses it. */
  bar(index: number): RegionPort {
    const handler = this.device.bars[index]?.handler;
    if (!handler) throw new RangeError(`device ${this.def.id} has no BAR ${index}`);
    return new RegionPort(`BAR ${index}`, handler);
  }

  /** The expansion ROM (region 6). */
  rom(): RegionPort {
    const handler = this.device.region(Region.ROM);
    if (!handler) throw new RangeError(`device ${this.def.id} has no expansion ROM`);
    return new RegionPort('ROM', handler);
  }

  /** Sets COMMAND.BUS_MASTER (the guest driver's pci_set_master): DMA is refused without it. */
  enableBusMaster(): void {
    this.config.write16(Cfg.COMMAND, this.config.read16(Cfg.COMMAND) | Command.BUS_MASTER);
  }

  /** Sets the MSI enable bit, as a driver does; interrupts then go out as MSI. */
  enableMsi(): void {
    const cap = this.#capability('msi');
    this.config.write16(cap + 2, this.config.read16(cap + 2) | 1);
  }

  /** Sets the MSI-X enable bit and unmasks every vector of the table. */
  enableMsix(): void {
    const cap = this.#capability('msix');
    this.config.write16(cap + 2, this.config.read16(cap + 2) | MsixControl.ENABLE);
    const table = this.config.read32(cap + 4);
    const port = this.bar(table & 7);
    for (let v = 0; v < this.device.irq.count(Irq.MSIX); v++)
      port.write32((table & ~7) + v * 16 + 12, 0);
  }

  #capability(kind: 'msi' | 'msix'): number {
    const at = this.device.caps[kind];
    if (at === undefined) throw new RangeError(`device ${this.def.id} has no ${kind} capability`);
    return at;
  }

  /** INTx is masked after each delivery until the client unmasks it (VFIO's AUTOMASKED). */
  unmaskIntx(): void {
    const flags = IrqSetFlag.ACTION_UNMASK | IrqSetFlag.DATA_NONE;
    this.device.irq.set({ argsz: 20, flags, index: Irq.INTX, start: 0, count: 1 }, []);
  }

  /** Stops (quiesces) the device, as a migration's STOP state does. */
  stop(): void {
    this.device.setRunning(false);
  }

  /** Runs the device again: work held while stopped happens now. */
  run(): void {
    this.device.setRunning(true);
  }

  /** Waits for the device's asynchronous work (DMA and what follows it) to finish. */
  settled(): Promise<void> {
    return this.device.settled();
  }

  /** Uses one of the device's controls (what the outside world can do to it). */
  control(name: string, value: number): void {
    const fn = this.def.controls?.[name];
    if (!fn) throw new RangeError(`device ${this.def.id} has no control ${name}`);
    fn(this.device.context, value);
  }

  /**
   * Saves this device's state through the server's stream code and loads it into a second
   * instance, which is returned stopped, as a destination is after RESUMING, with a copy of the
   * guest RAM; `run()` it to go on. Without `whileRunning` this is a stop-copy: the device is
   * stopped first. With it, the running device's first pre-copy pass goes out, `whileRunning`
   * changes the device (what it changes follows as dirty pages), then the device stops and the
   * rest goes out. The source stays stopped. `chunk` is the size of the pieces carried.
   */
  migrate(opts: MigrateOptions = {}): DeviceHarness<S> {
    const chunk = opts.chunk ?? 64 * 1024;
    if (!opts.whileRunning) this.stop();
    const save = new SaveSession(deviceImage(this.device));
    const target = new DeviceHarness(this.def, {
      options: this.device.options,
      ramBase: this.ramBase,
      ramSize: this.ram.length,
    });
    target.stop();
    const load = new LoadSession(deviceImage(target.device));
    if (opts.whileRunning) {
      carry(save, load, chunk);
      opts.whileRunning();
      this.stop();
    }
    save.stop();
    carry(save, load, chunk);
    if (!save.finished) throw new Error('the save session did not finish after stop-copy');
    target.ram.set(this.ram); // the VMM moves the guest's RAM itself
    load.commit();
    if (target.device.lostWork) {
      const lost = target.device.lostWork;
      target.release();
      throw new DeviceSetupError(
        `${this.def.id}: ${lost} piece(s) of work queued by whenRunning while the device was ` +
          'stopped would be lost in a migration: its afterLoad does not queue them again ' +
          '(keep pending work in the declared state and re-derive it in afterLoad)',
      );
    }
    return target;
  }

  /**
   * What differs between this device and `other`: state fields, config bytes, interrupt state
   * (INTx line, masks, pending bits, MSI-X table), memory pages.
   */
  differences(other: DeviceHarness<S>): string[] {
    return [
      ...stateDifferences(this.def.state, this.state, other.state),
      ...bytesDifferences('config', this.device.config.snapshot(), other.device.config.snapshot()),
      ...bytesDifferences('interrupt state', this.device.irq.save(), other.device.irq.save()),
      ...[...this.device.memories].flatMap(([name, m]) => {
        const theirs = other.device.memories.get(name);
        if (!theirs) return [`memory ${name} missing`];
        return bytesDifferences(`memory ${name}`, m.bytes(0, m.size), theirs.bytes(0, m.size));
      }),
    ];
  }

  /** Frees the device's memories and the guest RAM. */
  release(): void {
    this.device.release();
    this.#ramMap.release();
    this.#ramFd.close();
  }
}

/** Moves what the save session has now into the load session, `chunk` bytes at a time. */
function carry(save: SaveSession, load: LoadSession, chunk: number): void {
  for (let data = save.read(chunk); data.length; data = save.read(chunk)) load.write(data);
}

function countInterrupts(irq: Interrupts): InterruptCounts {
  const counts: InterruptCounts = {
    intx: 0,
    msi: new Array(irq.count(Irq.MSI)).fill(0),
    msix: new Array(irq.count(Irq.MSIX)).fill(0),
    err: 0,
    req: 0,
  };
  irq.deliverTo((index, vector) => {
    if (index === Irq.INTX) counts.intx++;
    else if (index === Irq.MSI) counts.msi[vector]++;
    else if (index === Irq.MSIX) counts.msix[vector]++;
    else if (index === Irq.ERR) counts.err++;
    else counts.req++;
  });
  return counts;
}

function stateDifferences<S extends Schema>(schema: S, a: StateOf<S>, b: StateOf<S>): string[] {
  return Object.keys(schema).flatMap(k => {
    const x = a[k],
      y = b[k];
    if (x instanceof Uint8Array && y instanceof Uint8Array)
      return bytesDifferences(`state.${k}`, x, y);
    return x === y ? [] : [`state.${k}: ${String(x)} != ${String(y)}`];
  });
}

/** Differences of two byte arrays, one line per differing 4 KiB page (or the length). */
function bytesDifferences(what: string, a: Uint8Array, b: Uint8Array): string[] {
  if (a.length !== b.length) return [`${what}: ${a.length} bytes != ${b.length} bytes`];
  const out: string[] = [];
  for (let page = 0; page < a.length; page += PAGE) {
    const end = Math.min(page + PAGE, a.length);
    if (Buffer.compare(a.subarray(page, end), b.subarray(page, end)) === 0) continue;
    let at = page;
    while (a[at] === b[at]) at++;
    out.push(`${what} differs at 0x${at.toString(16)}: ${a[at]} != ${b[at]}`);
  }
  return out;
}
