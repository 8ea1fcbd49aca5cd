// The VFIO migration state machine (protocol.md §8), pure: which states exist for a device's
// feature flags, which arcs a SET walks (the kernel's combination-transition algorithm with the
// ERROR guard of the 2026 fix), and the v1 device_state encoding mapped onto the same machine
// (§9).

import { MigState, MigrationFlag, type MigStateValue } from '@vfu/protocol';

/** The v2 states (protocol's MigState, under the short name this package's tables use). */
export const S = MigState;
export type State = MigStateValue;
export const stateName = (s: number): string =>
  Object.entries(S).find(([, v]) => v === s)?.[0] ?? `STATE_${s}`;

/** The migration feature's flags (protocol's MigrationFlag). */
export const MigFlag = MigrationFlag;
const ALL_MIG_FLAGS = MigFlag.STOP_COPY | MigFlag.P2P | MigFlag.PRE_COPY;

const {
  ERROR: E,
  STOP: ST,
  RUNNING: RU,
  STOP_COPY: SC,
  RESUMING: RE,
  RUNNING_P2P: RP,
  PRE_COPY: PC,
  PRE_COPY_P2P: PP,
} = S;
/**
 * Next hop from cur (row) towards new (column), assuming every optional state exists (kernel
 * vfio_from_fsm_table).
 */
const TABLE: readonly (readonly State[])[] = [
  /* ERROR        */ [E, E, E, E, E, E, E, E],
  /* STOP         */ [E, ST, RP, SC, RE, RP, RP, RP],
  /* RUNNING      */ [E, RP, RU, RP, RP, RP, PC, RP],
  /* STOP_COPY    */ [E, ST, ST, SC, ST, ST, E, E],
  /* RESUMING     */ [E, ST, ST, ST, RE, ST, ST, ST],
  /* RUNNING_P2P  */ [E, ST, RU, ST, ST, RP, RU, PP],
  /* PRE_COPY     */ [E, RU, RU, PP, RU, RU, PC, PP],
  /* PRE_COPY_P2P */ [E, RP, RP, SC, RP, RP, PC, PP],
];

/** Whether a device with `flags` has `state` (ERROR is never a state one can ask for). */
export function supported(state: number, flags: number): boolean {
  switch (state) {
    case RU:
      return true;
    case ST:
    case SC:
    case RE:
      return (flags & MigFlag.STOP_COPY) !== 0;
    case RP:
      return (flags & (MigFlag.STOP_COPY | MigFlag.P2P)) === (MigFlag.STOP_COPY | MigFlag.P2P);
    case PC:
      return (
        (flags & (MigFlag.STOP_COPY | MigFlag.PRE_COPY)) === (MigFlag.STOP_COPY | MigFlag.PRE_COPY)
      );
    case PP:
      return (flags & ALL_MIG_FLAGS) === ALL_MIG_FLAGS;
    default:
      return false;
  }
}

export const isSaving = (s: number) => s === SC || s === PC || s === PP;

/**
 * The arcs a SET from `cur` to `target` walks (the states entered, in order), [] for a no-op,
 * or null when the SET is invalid (EINVAL): target unsupported or ERROR or >= 8, cur ERROR, or
 * no path (STOP_COPY -> PRE_COPY).
 */
export function path(cur: number, target: number, flags: number): State[] | null {
  if (!Number.isInteger(target) || target < 0 || target >= 8 || !supported(target, flags))
    return null;
  if (cur === E || !supported(cur, flags)) return null;
  const out: State[] = [];
  while (cur !== target) {
    let next = TABLE[cur][target];
    // guarded: no endless loop
    while (next !== E && !supported(next, flags)) next = TABLE[next][target];
    if (next === E) return null;
    out.push(next);
    cur = next;
  }
  return out;
}

// --- v1 (§7.2, §9) ---------------------------------------------------------------------------

export const V1 = { RUNNING: 1, SAVING: 2, RESUMING: 4, MASK: 7, ERROR: 6 } as const;

/** v1 device_state bits -> v2 state; null for 101b, 111b and anything with bits 3-31 set. */
export function fromV1(bits: number): State | null {
  if (bits >>> 0 !== bits || bits & ~V1.MASK) return null;
  return ([ST, RU, SC, PC, RE, null, E, null] as const)[bits] ?? null;
}
/** v2 state -> v1 bits; null for the P2P states, which v1 cannot express. */
export function toV1(s: number): number | null {
  return (
    ({ [ST]: 0, [RU]: 1, [SC]: 2, [PC]: 3, [RE]: 4, [E]: 6 } as Record<number, number>)[s] ?? null
  );
}

/**
 * The arcs of a v1 device_state write, or null (EINVAL): reserved or error values, bits 3-31,
 * leaving ERROR, or no path (010b -> 011b). The v1 machine is STOP_COPY|PRE_COPY.
 */
export function v1Path(cur: number, bits: number): State[] | null {
  const target = fromV1(bits);
  if (target === null || target === E) return null;
  return path(cur, target, MigFlag.STOP_COPY | MigFlag.PRE_COPY);
}

/**
 * The machine of one device: its current state and what a SET does. Executing arcs is the
 * caller's (the server runs them against the device one by one, §8.4).
 */
export class MigrationStateMachine {
  #state: State = RU;
  constructor(readonly flags: number) {}
  get state(): State {
    return this.#state;
  }
  /** Records that an arc completed. */
  enter(s: State): void {
    this.#state = s;
  }
  /** A failed arc the device could not recover from. */
  fail(): void {
    this.#state = E;
  }
  /** DEVICE_RESET: the only way out of ERROR; back to RUNNING (kernel semantics, §8.7). */
  reset(): void {
    this.#state = RU;
  }
  plan(target: number): State[] | null {
    return path(this.#state, target, this.flags);
  }
  planV1(bits: number): State[] | null {
    return this.#state === E ? null : v1Path(this.#state, bits);
  }
}
