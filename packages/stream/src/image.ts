import type { DeviceIdentity } from './identity.js';

/**
 * What the stream needs to know of a device: its identity, its declared state and config as
 * bytes, and its memories. Built by the server from a device model; pure data access here.
 */
export interface DeviceImage {
  deviceId: string;
  deviceVersion: number;
  /** Signature of the declared state's schema (a changed layout must bump the version). */
  schema: string;
  /** What a guest sees of the device (BARs, ROM, memories, IDs, capabilities); none if absent. */
  identity?: DeviceIdentity;
  saveState(): Uint8Array;
  /** Checks state bytes; an error message, or null. Nothing is applied. */
  checkState(b: Uint8Array): string | null;
  /** Applies checked state bytes. */
  loadState(b: Uint8Array): void;
  saveConfig(): Uint8Array;
  configSize: number;
  loadConfig(b: Uint8Array): void;
  /**
   * The device kit's own state, outside the declared state and config space (interrupt lines,
   * MSI-X table and pending bits, ...): opaque bytes to the stream, a KIT record. A destination
   * whose image has it requires the record; it is loaded after config, before the state.
   */
  kit?: {
    save(): Uint8Array;
    /** An error message, or null. Nothing is applied. */
    check(b: Uint8Array): string | null;
    load(b: Uint8Array): void;
  };
  memories: {
    name: string;
    size: number;
    bytes(offset: number, len: number): Uint8Array;
    /**
     * What the device saw written, if it can tell: `flags()` has one byte per `blockSize`
     * bytes, set to 1 by a write (the save session clears them), or is null when writes can
     * bypass the device (a client maps the memory). The scan for changed pages skips blocks
     * whose flag is 0, instead of comparing every byte.
     */
    writes?: { blockSize: number; flags(): Uint8Array | null };
    /**
     * Whether [offset, offset + len) was never written, so that it reads as zeros without
     * being read (a memfd's hole: reading it through a mapping would give it pages). Optional.
     */
    isHole?(offset: number, len: number): boolean;
  }[];
}
