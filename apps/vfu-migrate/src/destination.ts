// The destination half of a migration, as the source half (driver.ts) sees it: the few steps
// QEMU's incoming side takes (ready the device, take a state, load it and run, or give up).
// In one process it is a client of the destination server (LocalDestination); across hosts it
// is the wire to a `vfu-migrate receive` (wire/remote.ts); for a snapshot it is a file.
import type { VfioUserClient } from '@vfu/client';
import { S, stateName } from '@vfu/fsm';
import type { Progress, Report } from './report.js';

export type Protocol = 'v1' | 'v2';

export interface Destination {
  /** Readies the device for `protocol` (hello, identity); throws if it cannot take a state. */
  open(protocol: Protocol): Promise<void>;
  /** The device starts taking a new state (RESUMING). */
  start(): Promise<void>;
  /** The next bytes of the device-state stream, in order. */
  write(data: Uint8Array): Promise<void>;
  /** The stream is complete: the device loads it and runs (switchover); throws if refused. */
  finish(): Promise<void>;
  /** The migration failed or was cancelled: a device holding half a state is reset. */
  abort(reason: string): Promise<void>;
  /** Where the device is, in words, for the report. */
  describe(): Promise<string>;
  /** How far the migration is (a remote half shows it too). */
  progress?(p: Progress): void;
  /** The source's final report (a remote half prints it too). */
  report?(r: Report): Promise<void>;
}

/**
 * The switchover was asked for and its answer never came (the wire was cut): the destination may
 * run the device. The source must not run it again (two running copies): it stays stopped.
 */
export class SwitchoverInDoubt extends Error {}

/** What LocalDestination needs of the driver's migration endpoint (endpoints.ts). */
export interface StateEndpoint {
  set(state: number): Promise<void>;
  state(): Promise<number>;
  write(data: Uint8Array): Promise<void>;
  close?(): void;
}

/** The destination server's device, through a client in this process. */
export class LocalDestination implements Destination {
  #ep: StateEndpoint | null = null;
  #touched = false;

  constructor(
    readonly client: VfioUserClient,
    readonly endpoint: (c: VfioUserClient, protocol: Protocol) => Promise<StateEndpoint>,
  ) {}

  async open(protocol: Protocol): Promise<void> {
    this.#ep = await this.endpoint(this.client, protocol);
    if (protocol === 'v2') await this.client.migrationFlags();
  }

  async start(): Promise<void> {
    this.#touched = true;
    await this.#endpoint().set(S.RESUMING);
  }

  async write(data: Uint8Array): Promise<void> {
    const max = this.client.serverCaps.maxDataXferSize;
    const ep = this.#endpoint();
    if (data.length <= max) return ep.write(data);
    for (let off = 0; off < data.length; off += max) await ep.write(data.subarray(off, off + max));
  }

  /** Throws the device's refusal as it came (the driver and `receive` say what it means). */
  async finish(): Promise<void> {
    await this.#endpoint().set(S.RUNNING);
  }

  /** A device that took part of a state and does not run it is reset (usable again). */
  async abort(): Promise<void> {
    if (!this.#touched || !this.#ep) return;
    const st = await this.#ep.state().catch(() => -1);
    if (st !== S.RUNNING) await this.client.reset().catch(() => {});
  }

  async describe(): Promise<string> {
    if (!this.#ep) return '?';
    return this.#ep.state().then(stateName, e => `unknown (${(e as Error).message})`);
  }

  /** Releases what the endpoint holds (a v1 window's mapping). */
  close(): void {
    this.#ep?.close?.();
  }

  /** The device's state now (v2 numbering). */
  state(): Promise<number> {
    return this.#endpoint().state();
  }

  #endpoint(): StateEndpoint {
    if (!this.#ep) throw new Error('the destination was not opened');
    return this.#ep;
  }
}
