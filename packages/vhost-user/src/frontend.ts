// The front-end's side of a connection: sends messages and takes replies in order (vhost-user
// has no message ids: the front-end waits for each answer before its next request). What tests
// and test drivers use to play QEMU.
import { closeAll, type OwnedFd } from '@vfu/native';
import { VhostConnection, type ConnectionOptions, type Incoming } from './connection.js';
import { encodeMessage } from './encode.js';
import { VhostUserError } from './errors.js';
import type { Header } from './header.js';
import type { FrontendMessage } from './types.js';

export interface Reply {
  header: Header;
  payload: Uint8Array;
  fds: OwnedFd[];
}

interface Waiter {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
}

export class Frontend {
  readonly conn: VhostConnection;
  readonly #waiters: Waiter[] = [];
  #closedReason: string | null = null;

  constructor(fd: OwnedFd, options: ConnectionOptions = {}) {
    this.conn = new VhostConnection(fd, options);
    this.conn.onMessage = (m: Incoming) => {
      const w = this.#waiters.shift();
      if (w) w.resolve({ header: m.header, payload: m.payload, fds: m.fds });
      else closeAll(m.fds);
    };
    this.conn.onClose = reason => {
      this.#closedReason = reason;
      for (const w of this.#waiters.splice(0)) w.reject(new Error(`connection closed: ${reason}`));
    };
  }

  /** Sends a message that gets no answer. */
  send(m: FrontendMessage, fds: readonly number[] = []): void {
    this.conn.send(encodeMessage(m), fds);
  }

  /** Sends a message and resolves with its answer (a reply body, or the REPLY_ACK u64). */
  request(m: FrontendMessage, fds: readonly number[] = [], needReply = false): Promise<Reply> {
    return this.raw(encodeMessage(m, needReply), fds);
  }

  /** Sends bytes as they are (bad messages, in tests) and resolves with the next answer. */
  raw(bytes: Uint8Array, fds: readonly number[] = []): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (this.#closedReason) {
        reject(new Error(`connection closed: ${this.#closedReason}`));
        return;
      }
      this.#waiters.push({ resolve, reject });
      this.conn.send(bytes, fds);
    });
  }

  /** Sends with NEED_REPLY; resolves with the acknowledgement's value (0 is success). */
  async ack(m: FrontendMessage, fds: readonly number[] = []): Promise<bigint> {
    const r = await this.request(m, fds, true);
    if (r.header.request !== m.request || r.payload.length !== 8)
      throw new VhostUserError(71, `unexpected answer to request ${m.request}`);
    return new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true);
  }

  close(): void {
    this.conn.close('front-end closed');
  }
}
