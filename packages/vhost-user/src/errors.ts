import { E, errnoName } from '@vfu/native';

/**
 * A message that breaks the protocol or that the back-end cannot carry out. `errno` is what a
 * REPLY_ACK answer carries; `message` says what was wrong in words a front-end author can act on.
 */
export class VhostUserError extends Error {
  override readonly name = 'VhostUserError';
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

export const einval = (msg: string) => new VhostUserError(E.EINVAL, msg);
