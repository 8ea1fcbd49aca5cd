// One vhost-user connection over a non-blocking UNIX socket (either side): cuts the byte stream
// into messages and attaches the fds that came with a message's bytes to it. Each recv asks for
// no more than the rest of the current message, so fds never land on the wrong one.
import {
  FdWatcher,
  MessageSocket,
  SendQueue,
  closeAll,
  type OwnedFd,
  type Received,
} from '@vfu/native';
import { Flag, HEADER_SIZE, MAX_PAYLOAD_SIZE, requestName } from './constants.js';
import { decodeHeader, type Header } from './header.js';

/** A whole message as it arrived, with the fds that came with it (now owned by the receiver). */
export interface Incoming {
  header: Header;
  payload: Uint8Array;
  fds: OwnedFd[];
  /** The body was larger than the connection reads; it was discarded unread (`payload` empty). */
  oversized?: boolean;
  /** The kernel dropped fds of this message (MSG_CTRUNC). */
  truncated?: boolean;
}

export interface ConnectionOptions {
  /** Largest payload read; a larger body is discarded and the message marked `oversized`. */
  maxPayload?: number;
  /** Most fds one message may carry (more are cut off by the kernel: `truncated`). */
  maxFds?: number;
  /** One line per message in and out. */
  trace?: (line: string) => void;
}

export class VhostConnection {
  readonly #sock: OwnedFd;
  readonly #ms: MessageSocket;
  readonly #watch: FdWatcher;
  readonly #maxPayload: number;
  #hdr = new Uint8Array(HEADER_SIZE);
  #have = 0;
  #header: Header | null = null;
  #body: Uint8Array = new Uint8Array(0);
  #skip = 0;
  #fds: OwnedFd[] = [];
  #truncated = false;
  readonly #queue: SendQueue;
  #closed = false;

  onMessage: (m: Incoming) => void = m => closeAll(m.fds);
  onClose: (reason: string) => void = () => {};

  constructor(
    fd: OwnedFd,
    readonly options: ConnectionOptions = {},
  ) {
    this.#sock = fd;
    this.#maxPayload = options.maxPayload ?? MAX_PAYLOAD_SIZE;
    this.#ms = new MessageSocket(fd.fd, options.maxFds ?? 16);
    this.#watch = new FdWatcher(fd.fd, ev => {
      // Nothing may escape a poll callback: it would take the whole process down.
      try {
        if (ev.writable) this.#flush();
        if (ev.readable || ev.hangup) this.#read();
        if (ev.hangup) this.close('peer hung up');
      } catch (e) {
        this.close(`internal error: ${(e as Error).stack ?? e}`);
      }
    });
    this.#queue = new SendQueue(this.#ms, this.#watch);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a whole message with borrowed fds; what the socket does not take now is queued. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) return;
    this.options.trace?.(`-> ${describe(decodeHeader(bytes), fds.length)}`);
    try {
      this.#queue.send(bytes, fds);
    } catch (e) {
      this.close(`send failed: ${(e as Error).message}`);
    }
  }

  #flush(): void {
    try {
      this.#queue.flush();
    } catch (e) {
      this.close(`send failed: ${(e as Error).message}`);
    }
  }

  /** The buffer the next recv fills: the rest of the header, the body, or a discard window. */
  #target(): Uint8Array {
    if (!this.#header) return this.#hdr.subarray(this.#have);
    if (this.#skip > 0) return new Uint8Array(Math.min(this.#skip, 64 * 1024));
    return this.#body.subarray(this.#have);
  }

  #read(): void {
    while (!this.#closed) {
      let r: Received | null;
      const target = this.#target();
      try {
        r = this.#ms.recv(target);
      } catch (e) {
        this.close(`receive failed: ${(e as Error).message}`);
        return;
      }
      if (r === null) return;
      this.#fds.push(...r.fds);
      this.#truncated ||= r.truncated;
      if (r.bytes === 0) {
        this.close('peer closed the connection');
        return;
      }
      this.#advance(r.bytes);
    }
  }

  #advance(n: number): void {
    if (!this.#header) {
      this.#have += n;
      if (this.#have < HEADER_SIZE) return;
      const h = decodeHeader(this.#hdr);
      this.#header = h;
      this.#have = 0;
      if (h.size > this.#maxPayload) this.#skip = h.size;
      else this.#body = new Uint8Array(h.size);
    } else if (this.#skip > 0) {
      this.#skip -= n;
    } else {
      this.#have += n;
    }
    const h = this.#header;
    if (this.#skip > 0 || this.#have < this.#body.length) return;
    const oversized = h.size > this.#maxPayload;
    const m: Incoming = {
      header: h,
      payload: oversized ? new Uint8Array(0) : this.#body,
      fds: this.#fds,
      oversized,
      truncated: this.#truncated,
    };
    this.#header = null;
    this.#have = 0;
    this.#body = new Uint8Array(0);
    this.#fds = [];
    this.#truncated = false;
    this.options.trace?.(`<- ${describe(h, m.fds.length)}`);
    this.onMessage(m);
  }

  close(reason = 'closed'): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    closeAll(this.#fds);
    this.#queue.clear();
    this.#sock.close();
    this.onClose(reason);
  }
}

function describe(h: Header, fds: number): string {
  const flags = (['REPLY', 'NEED_REPLY'] as const).filter(name => h.flags & Flag[name]);
  const f = flags.length ? ` ${flags.join('|')}` : '';
  return `${requestName(h.request)}${f} size=${h.size}${fds ? ` fds=${fds}` : ''}`;
}
