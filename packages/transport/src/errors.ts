import { errnoName } from '@vfu/protocol';

/** The peer answered a command with an error reply. */
export class RemoteError extends Error {
  override readonly name = 'RemoteError';
  constructor(
    readonly errno: number,
    readonly command: string,
  ) {
    super(`${command} failed at the peer: ${errnoName(errno)} (${errno})`);
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

/** The connection is gone (hang-up, reset, local close or timeout) before a reply came. */
export class ConnectionClosedError extends Error {
  override readonly name = 'ConnectionClosedError';
  constructor(readonly reason: string) {
    super(`connection closed: ${reason}`);
  }
}

export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  constructor(
    readonly command: string,
    ms: number,
  ) {
    super(`no reply to ${command} within ${ms} ms`);
  }
}
