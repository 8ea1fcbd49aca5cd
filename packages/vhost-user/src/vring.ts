// One vring's state on the back-end (vhost-user.rst "Ring states"): set up from SET_VRING_*
// messages, started by its kick fd, stopped by GET_VRING_BASE once its requests are done.
import type { FdWatcher, OwnedFd } from '@vfu/native';
import type { VringAddr } from './types.js';
import type { SplitQueue } from '@vfu/virtio';

export class Vring {
  num = 0;
  addr: VringAddr | null = null;
  /** last_avail_idx: where the back-end goes on taking requests (SET/GET_VRING_BASE). */
  base = 0;
  /** used->idx as this back-end last wrote it (read from guest memory when the ring starts). */
  usedIdx: number | null = null;
  kick: OwnedFd | null = null;
  kickWatch: FdWatcher | null = null;
  call: OwnedFd | null = null;
  err: OwnedFd | null = null;
  /** Used entries were published while no call fd was set: signal when one comes. */
  callPending = false;
  started = false;
  enabled = false;
  /** A driver error stopped the ring until the front-end sets it up again. */
  broken = false;
  inflight = 0;
  /** Bumped when the ring is reset: completions of an older epoch are dropped. */
  epoch = 0;
  queue: SplitQueue | null = null;
  drained: (() => void)[] = [];

  constructor(readonly index: number) {}

  closeKick(): void {
    this.kickWatch?.close();
    this.kickWatch = null;
    this.kick?.close();
    this.kick = null;
  }

  /** Back to "stopped", with no fds (RESET_DEVICE, disconnect). */
  reset(): void {
    this.closeKick();
    this.call?.close();
    this.call = null;
    this.err?.close();
    this.err = null;
    this.num = 0;
    this.addr = null;
    this.base = 0;
    this.usedIdx = null;
    this.callPending = false;
    this.started = false;
    this.enabled = false;
    this.broken = false;
    this.inflight = 0;
    this.epoch++;
    this.queue = null;
    for (const d of this.drained.splice(0)) d();
  }
}
