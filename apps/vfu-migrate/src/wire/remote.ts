// The destination half as the source half sees it across the wire: each step of Destination is
// a message to `vfu-migrate receive`, and its answer. A destination that gives up (ABORT) or a
// wire that goes fails the next step; a switchover whose answer never comes is in doubt.
import type { Destination, Protocol } from '../destination.js';
import { SwitchoverInDoubt } from '../destination.js';
import { identityDiff, type Identity } from '../identity.js';
import type { Progress, Report } from '../report.js';
import { Msg, msgName, type Message, type ResultMsg } from './codec.js';
import type { Link } from './link.js';

export class RemoteDestination implements Destination {
  /** The destination device's state as last reported by the other half. */
  #state = '?';
  #gaveUp: string | null = null;
  #doubt = false;

  constructor(
    readonly link: Link,
    readonly identity: Identity,
  ) {}

  async open(protocol: Protocol): Promise<void> {
    await this.link.send(Msg.DEVICE, { protocol, identity: this.identity });
    const m = this.#answer(await this.link.expect(Msg.DEVICE));
    this.#state = m.body.state ?? '?';
    const diff = identityDiff(this.identity, m.body.identity);
    if (diff) throw new Error(`the destination's device is not the same device (${diff})`);
  }

  async start(): Promise<void> {
    await this.link.send(Msg.START, {});
    await this.#result('start');
  }

  async write(data: Uint8Array): Promise<void> {
    this.#heard();
    try {
      await this.link.sendData(data);
    } catch (e) {
      this.#heard(); // the other half's reason, if it said one before the wire went
      throw e;
    }
  }

  /** While data flows the other half says nothing, unless it gives up. */
  #heard(): void {
    if (this.#gaveUp) throw new Error(this.#gaveUp);
    const m = this.link.poll();
    if (m) this.#answer(m);
    if (m) throw new Error(`the destination sent ${msgName(m.type)} while the stream was moving`);
  }

  progress(p: Progress): void {
    this.link.send(Msg.PROGRESS, p).catch(() => {});
  }

  async finish(): Promise<void> {
    await this.link.send(Msg.SWITCHOVER, {});
    try {
      await this.#result('switchover');
    } catch (e) {
      if (this.#gaveUp) throw e;
      this.#doubt = true;
      this.#state = 'unknown';
      throw new SwitchoverInDoubt(
        `no answer to the switchover (${(e as Error).message}): the destination may run the ` +
          'device, so the source stays stopped; check the destination before resuming the source',
      );
    }
  }

  async abort(reason: string): Promise<void> {
    if (this.#doubt || this.link.closed) return;
    await this.link.send(Msg.ABORT, { reason }).catch(() => {});
    // The other half answers with where its device was left, unless it gave up first.
    for (let i = 0; i < 64 && !this.#gaveUp; i++) {
      const m = await this.link.next().catch(() => null);
      if (!m) break;
      if (m.type === Msg.ABORT) {
        this.#state = m.body.state ?? this.#state;
        break;
      }
    }
    await this.link.close();
  }

  async describe(): Promise<string> {
    if (this.#doubt) return 'unknown (the wire was cut during the switchover)';
    return this.#state;
  }

  /** The source's report goes to the other half, which prints it too; then the wire closes. */
  async report(r: Report): Promise<void> {
    if (this.link.closed) return;
    await this.link.send(Msg.RESULT, { step: 'report', ok: r.outcome === 'completed', report: r });
    await this.link.close();
  }

  /** Reads the RESULT of `step`; an ABORT instead is the other half giving up, with its reason. */
  async #result(step: ResultMsg['step']): Promise<void> {
    const m = this.#answer(await this.link.expect(Msg.RESULT));
    if (m.body.step !== step) throw new Error(`RESULT of ${m.body.step}, expected ${step}`);
    this.#state = m.body.state ?? this.#state;
    if (!m.body.ok) throw new Error(m.body.error ?? `the destination failed at ${step}`);
  }

  #answer<M extends Message>(m: M | Extract<Message, { type: typeof Msg.ABORT }>): M {
    if (m.type !== Msg.ABORT) return m as M;
    const body = (m as Extract<Message, { type: typeof Msg.ABORT }>).body;
    this.#state = body.state ?? this.#state;
    this.#gaveUp = `the destination gave up: ${body.reason}`;
    throw new Error(this.#gaveUp);
  }
}
