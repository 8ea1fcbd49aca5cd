// Migration of a device: one state machine (v2 states, §8) driven through DEVICE_FEATURE or the
// v1 migration region (§7, §9); each arc is executed against the device, and the data flows
// through one save or load session of the stream package.
import {
  Errno,
  encode,
  MIGRATION_REGION_TYPE,
  MIGRATION_REGION_SUBTYPE,
  RegionCapId,
  type RegionCap,
} from '@vfu/protocol';
import { MigrationStateMachine, MigFlag, S, stateName, type State } from '@vfu/fsm';
import {
  SaveSession,
  LoadSession,
  StreamError,
  encodeState,
  newShadow,
  type Shadow,
} from '@vfu/stream';
import { deviceImage, type PciDevice, type RegionHandler } from '@vfu/pci';
import type { HandlerTable } from '../handlers.js';
import { featureHandlers } from './features.js';
import { V1Region } from './v1-region.js';
import { MigrationError } from './errors.js';
import type { Logger } from '../logger.js';
import type { MigrationHost, Transport } from './host.js';

export class Migration implements MigrationHost {
  readonly flags = MigFlag.STOP_COPY | MigFlag.PRE_COPY;
  readonly fsm = new MigrationStateMachine(this.flags);
  readonly handlers: HandlerTable;
  readonly extraRegions: RegionHandler[] = [];
  readonly regionCaps = new Map<number, RegionCap[]>();
  readonly v1: V1Region | null;
  save: SaveSession | null = null;
  load: LoadSession | null = null;
  /**
   * Which transport the current session's data uses: set by the first read/write, mixing is
   * refused.
   */
  via: Transport | null = null;

  constructor(
    readonly device: PciDevice,
    readonly opts: { v1Region: boolean; log: Logger },
  ) {
    this.handlers = featureHandlers(this);
    this.#fresh = { state: this.#stateBytes(), config: device.config.snapshot() };
    if (opts.v1Region) {
      this.v1 = new V1Region(this);
      this.extraRegions.push(this.v1);
      this.regionCaps.set(9, [
        { id: RegionCapId.TYPE, type: MIGRATION_REGION_TYPE, subtype: MIGRATION_REGION_SUBTYPE },
      ]);
    } else this.v1 = null;
  }

  get state(): State {
    return this.fsm.state;
  }

  /**
   * A v2 SET: walks the path arc by arc; stops at the first failure, leaving the device in the
   * last state reached (v2 does not roll back, §8.4), or ERROR when the failure left it unusable.
   */
  set(target: number): void {
    const arcs = this.fsm.plan(target);
    if (!arcs)
      throw new MigrationError(
        Errno.EINVAL,
        `no transition from ${stateName(this.state)} to ${stateName(target)} for this device`,
      );
    for (const next of arcs) this.#arc(next);
  }

  /**
   * A v1 device_state write: the same walk, but atomic: back to the start on failure, else ERROR
   * (§9).
   */
  setV1(bits: number): void {
    const arcs = this.fsm.planV1(bits);
    if (!arcs)
      throw new MigrationError(
        Errno.EINVAL,
        `device_state ${bits.toString(2).padStart(3, '0')}b is not reachable from ` +
          stateName(this.state),
      );
    const start = this.state;
    try {
      for (const next of arcs) this.#arc(next);
    } catch (e) {
      if (this.state !== S.ERROR && this.state !== start) {
        const back = this.fsm.plan(start);
        try {
          for (const n of back ?? []) this.#arc(n);
        } catch {
          this.fsm.fail();
        }
        if (!back) this.fsm.fail();
      }
      throw e;
    }
  }

  #arc(next: State): void {
    const from = this.state,
      dev = this.device;
    try {
      switch (`${stateName(from)}>${stateName(next)}`) {
        case 'RUNNING>STOP':
          dev.setRunning(false);
          break;
        case 'STOP>RUNNING':
          this.#refuseIfMigratedAway();
          dev.setRunning(true);
          break;
        case 'RUNNING>PRE_COPY':
          this.lastRefusal = null;
          this.#startSave();
          break;
        case 'PRE_COPY>RUNNING':
          this.#endSessions();
          break;
        case 'PRE_COPY>STOP_COPY':
          dev.setRunning(false);
          this.save!.stop();
          break;
        case 'STOP>STOP_COPY':
          this.#refuseIfMigratedAway(); // a stale copy of the state must not be handed out again
          this.#startSave();
          this.save!.stop();
          break;
        case 'STOP_COPY>STOP':
          this.#handedOver = this.save?.finished ?? false;
          this.#endSessions();
          break;
        case 'STOP>RESUMING':
          this.#endSessions();
          this.lastRefusal = null;
          // Memory records land in device memory as they arrive (no copy of every byte at the
          // commit, inside the downtime); what they replace is kept in undo buffers reused
          // across sessions (allocated lazily, never cleared), for a stream that fails.
          this.#undo ??= [...dev.memories.values()].map(m => new Uint8Array(m.size));
          this.load = new LoadSession(deviceImage(dev), { undo: this.#undo });
          break;
        case 'RESUMING>STOP': {
          const load = this.load;
          this.load = null; // taken for the commit: not discarded with the session
          this.#endSessions();
          if (!load || load.bytesIn === 0) {
            this.opts.log.info('migration: resume ended with no data; device unchanged');
            break;
          }
          try {
            load.commit();
            this.#clearMigratedAway('a new state was loaded');
          } catch (e) {
            load.discard();
            // The device's own state was never touched, but the resume session cannot complete:
            // only a reset leaves this (§8.2).
            this.fsm.fail();
            throw this.#refuse(Errno.EINVAL, `migration data rejected: ${(e as Error).message}`);
          }
          break;
        }
        default:
          throw new MigrationError(
            Errno.EINVAL,
            `unsupported arc ${stateName(from)} -> ${stateName(next)}`,
          );
      }
    } catch (e) {
      if (e instanceof MigrationError) throw e;
      this.fsm.fail();
      throw new MigrationError(
        Errno.EIO,
        `arc ${stateName(from)} -> ${stateName(next)} failed: ${(e as Error).message}`,
      );
    }
    this.fsm.enter(next);
    if (next === S.RUNNING) this.#handedOver = false;
    this.opts.log.info(`migration: ${stateName(from)} -> ${stateName(next)}`);
  }

  /**
   * Set when STOP_COPY was read to the end and the device then stopped: its state now lives in the
   * destination. Cleared when the (still connected) client runs it again, as QEMU does when a
   * migration fails after the switchover.
   */
  #handedOver = false;
  #migratedAway = false;

  /**
   * The device's state was handed over and the client that took it went away: the device stays
   * stopped so that there is never a second running copy. Only DEVICE_RESET, loading a new state
   * or an explicit resume() runs it again.
   */
  get migratedAway(): boolean {
    return this.#migratedAway;
  }

  /** Why the last migration request was refused (a stream, a commit, a run): for the driver. */
  lastRefusal: string | null = null;

  /** Records and logs (warn) a refusal; returns the error to throw. */
  #refuse(errno: number, why: string): MigrationError {
    this.lastRefusal = why.length > 1024 ? `${why.slice(0, 1021)}...` : why;
    this.opts.log.warn(`migration: refused: ${why}`);
    return new MigrationError(errno, why);
  }

  /** The declared state and config space of the device as built (and as a reset leaves them). */
  readonly #fresh: { state: Uint8Array; config: Uint8Array };
  #stateBytes(): Uint8Array {
    return encodeState(this.device.def.state, this.device.state);
  }

  /**
   * Whether the device holds something of its own: its declared state or its config space
   * differs from a freshly reset device's (a guest that used it enabled it in the Command
   * register and programmed its BARs; a client that used it changed its registers). Loading a
   * state into a used, running device would overwrite that: vfu-migrate refuses unless --force.
   */
  get used(): boolean {
    return (
      Buffer.compare(this.#stateBytes(), this.#fresh.state) !== 0 ||
      Buffer.compare(this.device.config.bytes, this.#fresh.config) !== 0
    );
  }

  /** What the control socket and the VFU_STATUS feature report. */
  status(): { state: string; migratedAway: boolean; used: boolean; lastRefusal: string | null } {
    return {
      state: stateName(this.state),
      migratedAway: this.#migratedAway,
      used: this.used,
      lastRefusal: this.lastRefusal,
    };
  }

  #refuseIfMigratedAway(): void {
    if (!this.#migratedAway) return;
    throw this.#refuse(
      Errno.EPERM,
      'the device was migrated away (its state was handed over); ' +
        'it runs again only after DEVICE_RESET or a resume through the control socket',
    );
  }

  #clearMigratedAway(why: string): void {
    if (!this.#migratedAway) return;
    this.#migratedAway = false;
    this.opts.log.warn(`migration: no longer migrated away (${why})`);
  }

  /** An operator's explicit resume of a migrated-away device (the control socket's `resume`). */
  resume(): void {
    if (!this.#migratedAway)
      throw new MigrationError(Errno.EINVAL, 'the device was not migrated away; nothing to resume');
    this.#clearMigratedAway('resumed by the operator: this copy of the device runs again');
    this.set(S.RUNNING);
  }

  #shadows: Shadow[] | null = null;
  #undo: Uint8Array[] | null = null;
  #startSave(): void {
    this.#endSessions();
    // Shadows of what was sent are kept across sessions: allocating and faulting in a copy of
    // every memory per migration would cost more than the migration's own copying.
    this.#shadows ??= [...this.device.memories.values()].map(m => newShadow(m.size));
    this.save = new SaveSession(deviceImage(this.device), 1 << 20, this.#shadows);
  }

  /**
   * A MIG_DATA_READ reply: its 24-byte head, and the stream's bytes as views to send beside it
   * (one sendmsg, no copy of the data into a reply buffer).
   */
  readReply(id: number, size: number): { msg: Uint8Array; more: Uint8Array[] } {
    const { parts, bytes } = this.save!.readParts(size);
    return { msg: encode.migDataReadReplyHead(id, bytes), more: parts };
  }
  #endSessions(): void {
    this.save = null;
    this.load?.discard(); // a resume that ends uncommitted leaves the device's memory as it was
    this.load = null;
    this.via = null;
    this.v1?.resetIteration();
  }

  /** Claims the current session for a transport; false if the other one already uses it. */
  claim(t: Transport): boolean {
    if (this.via && this.via !== t) return false;
    this.via = t;
    return true;
  }

  /** Bytes a full stop-copy would move now (MIG_DATA_SIZE). */
  stopCopyEstimate(): number {
    if (this.save) return this.save.stopCopyEstimate();
    let n = 0;
    for (const m of this.device.memories.values()) n += m.size;
    return n + this.device.config.size + 4096;
  }

  /** Device reset: back to RUNNING from any state, sessions dropped (kernel semantics, §8.7). */
  onDeviceReset(reason: string): void {
    const was = this.state;
    this.#endSessions();
    this.fsm.reset();
    this.#handedOver = false;
    this.#clearMigratedAway(`device reset: ${reason}`);
    this.device.setRunning(true);
    if (was !== S.RUNNING)
      this.opts.log.info(`migration: ${stateName(was)} -> RUNNING (${reason})`);
  }

  /**
   * The client went away and the device is kept. A device whose state was handed over (STOP_COPY
   * read to the end, then STOP) is migrated away: it stays stopped. Otherwise the migration is
   * abandoned the way a cancel does (§10.3), back to RUNNING with the device's own state
   * untouched; a resume in progress is discarded, not committed.
   */
  clientGone(): void {
    if (this.state === S.STOP && this.#handedOver) {
      this.#handedOver = false;
      this.#migratedAway = true;
      this.opts.log.warn(
        'migration: migrated away: the state was handed over and the client went away; ' +
          'the device stays stopped until DEVICE_RESET or a resume through the control socket',
      );
      return;
    }
    this.#handedOver = false;
    if (this.state === S.RUNNING || this.state === S.ERROR) return;
    const was = this.state;
    if (this.state === S.RESUMING) {
      this.#endSessions();
      this.fsm.enter(S.STOP);
    }
    try {
      this.set(S.RUNNING);
    } catch {
      this.onDeviceReset('cancel failed');
    }
    this.opts.log.warn(`migration: cancelled from ${stateName(was)} when the client went away`);
  }

  loadWrite(data: Uint8Array): void {
    try {
      this.load!.write(data);
    } catch (e) {
      if (e instanceof StreamError) throw this.#refuse(Errno.EINVAL, e.message);
      throw e;
    }
  }
}
