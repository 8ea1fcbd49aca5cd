import { Errno } from './constants.js';

// The first name of a number wins: EAGAIN, not its alias EWOULDBLOCK.
const names = new Map<number, string>();
for (const [name, value] of Object.entries(Errno)) if (!names.has(value)) names.set(value, name);
/** An errno's name (EINVAL, ...), or `errno N` for a number Linux does not name. */
export const errnoName = (e: number): string => names.get(e) ?? `errno ${e}`;

/**
 * A message that breaks the protocol. `errno` goes into the error reply; `message` says what was
 * wrong in words a client author can act on.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(`${message} (${errnoName(errno)})`);
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

export const einval = (msg: string) => new ProtocolError(Errno.EINVAL, msg);
