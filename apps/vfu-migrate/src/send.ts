// `vfu-migrate send`: the source half on the source's host. The driver (driver.ts) runs as it
// does on one host; its destination is the wire to a `vfu-migrate receive` (wire/remote.ts).
import type { VfioUserClient } from '@vfu/client';
import { stateName } from '@vfu/fsm';
import { migrate, type MigrateOptions } from './driver.js';
import { deviceIdentity } from './identity.js';
import type { Report } from './report.js';
import { blankReport } from './outcome.js';
import { handshake } from './wire/handshake.js';
import { Link } from './wire/link.js';
import { RemoteDestination } from './wire/remote.js';
import { connectTcp, type Address, type TlsFiles } from './wire/socket.js';

export interface SendOptions extends MigrateOptions {
  to: Address;
  tls?: TlsFiles | null;
  secret?: Uint8Array;
  /** Bound on connecting, and on any wait for the other half (ms). */
  timeoutMs?: number;
  software?: string;
}

/** Migrates the device behind `src` to the receiving half at `o.to`. Never throws. */
export async function send(src: VfioUserClient, o: SendOptions): Promise<Report> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  let link: Link;
  try {
    link = new Link(await connectTcp(o.to, o.tls ?? null, timeoutMs), timeoutMs);
    await handshake(link, { role: 'source', secret: o.secret, software: o.software ?? '' });
  } catch (e) {
    return notStarted(src, o.protocol ?? 'v2', (e as Error).message);
  }
  const remote = new RemoteDestination(link, await deviceIdentity(src));
  const rep = await migrate(src, remote, {
    ...o,
    onProgress: p => {
      remote.progress(p);
      o.onProgress?.(p);
    },
  });
  await remote.report(rep).catch(() => {});
  return rep;
}

/** The report of a migration that never reached the other half: the source was not touched. */
async function notStarted(src: VfioUserClient, protocol: 'v1' | 'v2', error: string) {
  const rep = blankReport(protocol, await src.getState().then(stateName, () => '?'));
  rep.error = error;
  return rep;
}
