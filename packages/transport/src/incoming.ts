import type { OwnedFd } from '@vfu/native';
import type { ProtocolError, Header } from '@vfu/protocol';

/** A whole message as it arrived, with the fds that came with it (now owned by the receiver). */
export interface Incoming {
  header: Header;
  payload: Uint8Array;
  fds: OwnedFd[];
  /**
   * Set when the message cannot be handled as sent (too many fds, fds lost to MSG_CTRUNC, too
   * large).
   */
  error?: ProtocolError | { errno: number; message: string };
}
