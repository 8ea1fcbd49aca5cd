// The first two messages each way: HELLO (wire version, role, a fresh nonce) and AUTH (proof
// of the shared secret, or empty without one). A peer of another wire version, of the wrong
// role, or without the secret is told why (ABORT) and the connection ends.
import { nonce, proof, verify } from './auth.js';
import { Msg, WIRE_VERSION, type Role } from './codec.js';
import type { Link } from './link.js';

/** Longest a handshake may take: a silent peer must not hold a listener for long. */
const HANDSHAKE_MS = 10_000;

/** The handshake failed: the peer is not one to migrate with. */
class Refused extends Error {}

export interface HandshakeOptions {
  role: Role;
  /** Both halves must hold the same secret; none: no proof asked or given. */
  secret?: Uint8Array;
  software: string;
}

/** Runs the handshake; throws Refused (after telling the peer) or the link's error. */
export async function handshake(link: Link, o: HandshakeOptions): Promise<void> {
  const mine = nonce();
  const peerRole: Role = o.role === 'source' ? 'destination' : 'source';
  await link.send(Msg.HELLO, {
    wire: WIRE_VERSION,
    role: o.role,
    nonce: mine,
    software: o.software,
  });
  const bound = Math.min(HANDSHAKE_MS, link.timeoutMs);
  const hello = await link.expect(Msg.HELLO, bound);
  if (hello.type === Msg.ABORT) throw new Refused(`the peer refused: ${hello.body.reason}`);
  const theirs = hello.body;
  if (theirs.wire !== WIRE_VERSION)
    return refuse(link, `wire version ${theirs.wire} is not ${WIRE_VERSION} (${theirs.software})`);
  if (theirs.role !== peerRole)
    return refuse(link, `the peer is a ${theirs.role} too; one side must be the ${peerRole}`);
  const own = o.secret ? proof(o.secret, o.role, mine, theirs.nonce) : '';
  await link.send(Msg.AUTH, { proof: own });
  const auth = await link.expect(Msg.AUTH, bound);
  if (auth.type === Msg.ABORT) throw new Refused(`the peer refused: ${auth.body.reason}`);
  if (o.secret && !verify(o.secret, peerRole, theirs.nonce, mine, auth.body.proof))
    return refuse(link, `the ${peerRole} does not prove the shared secret`);
  link.trust();
}

async function refuse(link: Link, reason: string): Promise<never> {
  await link.send(Msg.ABORT, { reason }).catch(() => {});
  await link.close();
  throw new Refused(reason);
}
