// Snapshots: a device's whole state in a file, the same self-describing, checksummed stream a
// migration moves. `save` is a migration into a file (FileDestination); `restore` plays a file
// into a device as a destination half; `inspect` reads a file with the stream's own parser.
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import type { VfioUserClient } from '@vfu/client';
import { S, stateName } from '@vfu/fsm';
import type { Destination, Protocol } from './destination.js';
import { migrate, type MigrateOptions } from './driver.js';
import { localDestination, v1, v2 } from './endpoints.js';
import { inspectFile } from './inspect.js';
import type { Report } from './report.js';
import { blankReport } from './outcome.js';

/**
 * A destination half that is a file. The stream goes to PATH.partial and becomes PATH only once
 * complete and on disk: a snapshot file is whole or absent.
 */
export class FileDestination implements Destination {
  #fh: FileHandle | null = null;
  #bytes = 0;
  #state = 'no file yet';
  readonly partial: string;

  constructor(readonly path: string) {
    this.partial = `${path}.partial`;
  }

  async open(): Promise<void> {
    if (await stat(this.path).catch(() => null))
      throw new Error(`${this.path} exists: remove it or choose another file`);
  }

  async start(): Promise<void> {
    this.#fh = await open(this.partial, 'w', 0o600);
    this.#state = `writing ${this.partial}`;
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.#fh) throw new Error('the file was not started');
    for (let off = 0; off < data.length; ) {
      const { bytesWritten } = await this.#fh.write(data, off, data.length - off);
      off += bytesWritten;
    }
    this.#bytes += data.length;
  }

  async finish(): Promise<void> {
    if (!this.#fh) throw new Error('the file was not started');
    await this.#fh.sync();
    await this.#fh.close();
    this.#fh = null;
    await rename(this.partial, this.path);
    this.#state = `file ${this.path} (${this.#bytes} bytes)`;
  }

  async abort(): Promise<void> {
    await this.#fh?.close().catch(() => {});
    this.#fh = null;
    await rm(this.partial, { force: true });
    this.#state = 'no file (the partial one was removed)';
  }

  async describe(): Promise<string> {
    return this.#state;
  }
}

export interface SaveOptions extends Pick<MigrateOptions, 'protocol' | 'onProgress'> {
  /** The device runs again once its state is in the file (else it stays stopped). */
  resume?: boolean;
}

/** Stops the device and writes its whole state to `path`. Never throws: the report says. */
export async function save(src: VfioUserClient, path: string, o: SaveOptions = {}) {
  const rep = await migrate(src, new FileDestination(path), { ...o, preCopy: false });
  if (rep.outcome === 'completed' && o.resume) {
    // Allowed while this client is connected (the state is in a file, not in another device).
    const ep = (o.protocol ?? 'v2') === 'v2' ? v2(src) : await v1(src);
    await ep.set(S.RUNNING).catch(e => {
      rep.error = `the state is saved, but the device did not resume: ${e.message}`;
    });
    rep.source.state = await ep.state().then(stateName, e => `unknown (${e.message})`);
  }
  return rep;
}

/** Loads the state in `path` into the device behind `dst`, which then runs. Never throws. */
export async function restore(
  dst: VfioUserClient,
  path: string,
  protocol: Protocol = 'v2',
): Promise<Report> {
  const t0 = performance.now();
  const rep = blankReport(protocol, `file ${path}`);
  const dest = localDestination(dst);
  let touched = false;
  try {
    const summary = await inspectFile(path);
    if (summary.problem) throw new Error(`${path} is not a usable snapshot: ${summary.problem}`);
    await dest.open(protocol);
    touched = true;
    await dest.start();
    const fh = await open(path, 'r');
    const chunk = new Uint8Array(Math.min(1 << 20, dst.serverCaps.maxDataXferSize));
    const t = performance.now();
    try {
      for (;;) {
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
        if (!bytesRead) break;
        await dest.write(chunk.subarray(0, bytesRead));
        rep.bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
    const resume = performance.now();
    await dest.finish();
    rep.resumeMs = performance.now() - resume;
    rep.throughputGiBps = rep.bytes / 2 ** 30 / ((resume - t) / 1000);
    rep.outcome = 'completed';
  } catch (e) {
    rep.error = (e as Error).message;
    if (touched) await dest.abort();
  }
  rep.destination.state = await dest.describe();
  rep.totalMs = performance.now() - t0;
  return rep;
}
