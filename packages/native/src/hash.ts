// A fast integrity check for bulk bytes (device memory in a migration stream): a 64-bit lane
// hash folded to 32 bits, in C (c/fastpath.c), alone or fused with the copy that moves the bytes
// anyway. Not cryptographic: it detects corruption (a change slips through with a probability
// of about 2^-32), not tampering.
import { fast } from './libc.js';

/** The 32-bit lane hash of `src`'s bytes. */
export function hash(src: Uint8Array): number {
  return fast.hash(src, src.length) as number;
}

/**
 * Copies `src` into `dst` (of the same length, not overlapping) in one pass and returns
 * hash() of the bytes copied, as they were when each was read.
 */
export function copyAndHash(dst: Uint8Array, src: Uint8Array): number {
  if (dst.length !== src.length)
    throw new RangeError(`copyAndHash: ${src.length} bytes into ${dst.length}`);
  if (overlap(dst, src)) throw new RangeError('copyAndHash: source and destination overlap');
  return fast.copyHash(dst, src, src.length) as number;
}

function overlap(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

/** Whether every byte of `src` is zero. */
export function isZero(src: Uint8Array): boolean {
  return fast.isZero(src, src.length) === 1;
}
