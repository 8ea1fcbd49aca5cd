import { constants } from 'node:os';

// The first name of a number wins: EAGAIN, not its alias EWOULDBLOCK.
const names = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno))
  if (!names.has(value)) names.set(value, name);

/** An errno's name (EINVAL, ...), or `errno N` for a number Linux does not name. */
export const errnoName = (e: number): string => names.get(e) ?? `errno ${e}`;

/** A failed system call: `errno` is the Linux value, `code` its name (EAGAIN, EBADF, ...). */
export class NativeError extends Error {
  override readonly name = 'NativeError';
  readonly code: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
    detail = '',
  ) {
    const code = names.get(errno) ?? `E${errno}`;
    super(`${syscall} failed: ${code} (${errno})${detail ? `: ${detail}` : ''}`);
    this.code = code;
  }
}

/** Linux errno values by name (E.EINVAL, E.EAGAIN, ...), from node:os. */
export const E = constants.errno;
