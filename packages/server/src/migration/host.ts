// What the migration handlers (DEVICE_FEATURE and MIG_DATA_*, the v1 region) need of the
// migration they serve: an interface of its own, so that they depend on it and not on the
// class that builds them (index.ts), and the imports run one way.
import type { State } from '@vfu/fsm';
import type { SaveSession, LoadSession } from '@vfu/stream';
import type { PciDevice } from '@vfu/pci';
import type { Logger } from '../logger.js';

export type Transport = 'v1' | 'v2';

export interface MigrationHost {
  readonly device: PciDevice;
  readonly opts: { log: Logger };
  /** The migration capabilities announced (VFIO_MIGRATION_* flags). */
  readonly flags: number;
  readonly state: State;
  readonly save: SaveSession | null;
  readonly load: LoadSession | null;
  /** A v2 SET of the device state (§8). */
  set(target: number): void;
  /** A v1 device_state write (§9). */
  setV1(bits: number): void;
  /** Claims the current session for a transport; false if the other one already uses it. */
  claim(t: Transport): boolean;
  /** Takes the next bytes of the stream being loaded. */
  loadWrite(data: Uint8Array): void;
  /** A MIG_DATA_READ reply: its head and views of the stream's bytes. */
  readReply(id: number, size: number): { msg: Uint8Array; more: Uint8Array[] };
  stopCopyEstimate(): number;
  status(): { state: string; migratedAway: boolean; used: boolean; lastRefusal: string | null };
}
