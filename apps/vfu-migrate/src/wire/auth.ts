// The shared secret: each half proves it knows it without sending it, over both halves' fresh
// nonces (HMAC-SHA256, RFC 2104), so a recorded proof is worthless in another connection.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { WIRE_VERSION, type Role } from './codec.js';

export const nonce = (): string => randomBytes(32).toString('hex');

/** `role`'s proof: over its own nonce and its peer's, in that order. */
export function proof(secret: Uint8Array, role: Role, own: string, peer: string): string {
  return createHmac('sha256', secret)
    .update(`vfu-migrate/${WIRE_VERSION} ${role} ${own} ${peer}`)
    .digest('hex');
}

/** Whether `got` is `role`'s proof (compared in constant time). */
export function verify(
  secret: Uint8Array,
  role: Role,
  theirs: string,
  mine: string,
  got: string,
): boolean {
  const want = Buffer.from(proof(secret, role, theirs, mine), 'hex');
  const have = Buffer.from(got, 'hex');
  return have.length === want.length && timingSafeEqual(have, want);
}
