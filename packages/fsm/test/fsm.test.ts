import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  path,
  S,
  MigFlag,
  stateName,
  supported,
  v1Path,
  fromV1,
  toV1,
  MigrationStateMachine,
  type State,
} from '@vfu/fsm';

// The four tables of §8.3 (packages/fsm/test/combination-tables.md), one per flag set.
const TABLES: Record<string, string> = Object.fromEntries(
  readFileSync(new URL('./combination-tables.md', import.meta.url), 'utf8')
    .split('\n## ')
    .slice(1)
    .map(section => {
      const [flags, ...lines] = section.split('\n');
      return [flags.trim(), lines.filter(l => l.startsWith('|')).join('\n')];
    }),
);
const flagsOf = (k: string) =>
  k.split('|').reduce((a, f) => a | MigFlag[f as keyof typeof MigFlag], 0);
const st = (n: string) => S[n.trim() as keyof typeof S];
const cells = (l: string) =>
  l
    .split('|')
    .slice(1, -1)
    .map(c => c.trim());

describe('v2 combination transitions (§8.3)', () => {
  it('reads all four tables', () => {
    expect(Object.keys(TABLES)).toEqual([
      'STOP_COPY',
      'STOP_COPY|PRE_COPY',
      'STOP_COPY|P2P',
      'STOP_COPY|P2P|PRE_COPY',
    ]);
  });
  for (const [k, table] of Object.entries(TABLES)) {
    it(`every (from, to) pair with flags ${k} walks the table's path`, () => {
      const [head, ...rows] = table.trim().split('\n');
      const cols = cells(head).slice(1);
      let n = 0;
      for (const row of rows) {
        const [from, ...to] = cells(row);
        to.forEach((c, i) => {
          const expected = c === '—' ? [] : c === 'EINVAL' ? null : c.split('→').map(st);
          expect(path(st(from), st(cols[i]), flagsOf(k)), `${from} -> ${cols[i]}`).toEqual(
            expected,
          );
          n++;
        });
      }
      expect(n).toBe(cols.length ** 2);
    });
  }

  // Breadth-first, with no saving state inside a path.
  it('agrees with a search over the direct arcs of §8.2', () => {
    const arcs = (f: number): [State, State][] => {
      const a: [State, State][] = [
        [S.RESUMING, S.STOP],
        [S.STOP, S.RESUMING],
        [S.STOP, S.STOP_COPY],
        [S.STOP_COPY, S.STOP],
      ];
      const p2p = f & MigFlag.P2P,
        pre = f & MigFlag.PRE_COPY;
      if (!p2p) a.push([S.RUNNING, S.STOP], [S.STOP, S.RUNNING]);
      else
        a.push(
          [S.RUNNING, S.RUNNING_P2P],
          [S.RUNNING_P2P, S.RUNNING],
          [S.RUNNING_P2P, S.STOP],
          [S.STOP, S.RUNNING_P2P],
        );
      if (pre && !p2p)
        a.push([S.RUNNING, S.PRE_COPY], [S.PRE_COPY, S.RUNNING], [S.PRE_COPY, S.STOP_COPY]);
      if (pre && p2p)
        a.push(
          [S.RUNNING, S.PRE_COPY],
          [S.PRE_COPY, S.RUNNING],
          [S.PRE_COPY, S.PRE_COPY_P2P],
          [S.PRE_COPY_P2P, S.PRE_COPY],
          [S.PRE_COPY_P2P, S.RUNNING_P2P],
          [S.PRE_COPY_P2P, S.STOP_COPY],
          [S.RUNNING_P2P, S.PRE_COPY_P2P],
        );
      return a;
    };
    const saving = new Set<number>([S.STOP_COPY, S.PRE_COPY, S.PRE_COPY_P2P]);
    for (const k of Object.keys(TABLES)) {
      const f = flagsOf(k),
        a = arcs(f);
      const states = Object.values(S).filter(s => supported(s, f));
      for (const from of states)
        for (const to of states) {
          // BFS: interior states must not be saving states.
          // A saving state may be passed through only while the path has stayed inside the
          // saving group from a saving start (the session continues, §8.2).
          const prev = new Map<number, State>([[from, from]]);
          const inGroup = new Set<number>(saving.has(from) ? [from] : []);
          const q = [from];
          while (q.length) {
            const c = q.shift()!;
            if (c === to) break;
            if (c !== from && saving.has(c) && !inGroup.has(c)) continue;
            for (const [x, y] of a)
              if (x === c && !prev.has(y)) {
                prev.set(y, c);
                q.push(y);
                if (inGroup.has(c) && saving.has(y)) inGroup.add(y);
              }
          }
          const got = path(from, to, f);
          // §8.2: STOP_COPY -> PRE_COPY(_P2P) is forbidden outright (a future flag may allow it).
          const forbidden = from === S.STOP_COPY && (to === S.PRE_COPY || to === S.PRE_COPY_P2P);
          if (!prev.has(to) || forbidden) {
            expect(got, `${stateName(from)}->${stateName(to)}`).toBeNull();
            continue;
          }
          const p: number[] = [];
          for (let c = to; c !== from; c = prev.get(c)!) p.unshift(c);
          expect(got?.length, `${stateName(from)}->${stateName(to)}`).toBe(p.length);
        }
    }
  });

  it('rejects ERROR, values >= 8, states not advertised, and any SET from ERROR', () => {
    const f = MigFlag.STOP_COPY | MigFlag.PRE_COPY;
    expect(path(S.RUNNING, S.ERROR, f)).toBeNull();
    expect(path(S.RUNNING, 8, f)).toBeNull();
    expect(path(S.RUNNING, 0xabcd, f)).toBeNull();
    expect(path(S.RUNNING, S.RUNNING_P2P, f)).toBeNull();
    expect(path(S.RUNNING, S.PRE_COPY_P2P, f)).toBeNull();
    expect(path(S.ERROR, S.RUNNING, f)).toBeNull();
    expect(path(S.STOP_COPY, S.PRE_COPY, 7)).toBeNull(); // terminates (the 2026 kernel fix)
  });
});

describe('v1 device_state (§7.4, §9)', () => {
  // protocol.md §7.4 "Recommended v1 table": ok / no-op / EINVAL for each (from, to) value.
  const table = `
| 000 | no-op | ok | ok | ok | ok | EINVAL | EINVAL | EINVAL |
| 001 | ok | no-op | ok | ok | ok | EINVAL | EINVAL | EINVAL |
| 010 | ok | ok | no-op | EINVAL | ok | EINVAL | EINVAL | EINVAL |
| 011 | ok | ok | ok | no-op | ok | EINVAL | EINVAL | EINVAL |
| 100 | ok | ok | ok | ok | no-op | EINVAL | EINVAL | EINVAL |
| 110 | EINVAL | EINVAL | EINVAL | EINVAL | EINVAL | EINVAL | EINVAL | EINVAL |`;
  const targets = [0, 1, 2, 3, 4, 5, 7, 6];
  it('allows and refuses each transition as the recommended table says', () => {
    for (const row of table.trim().split('\n')) {
      const [from, ...to] = cells(row);
      const m = new MigrationStateMachine(MigFlag.STOP_COPY | MigFlag.PRE_COPY);
      const cur = fromV1(parseInt(from, 2))!;
      if (cur === S.ERROR) m.fail();
      else m.enter(cur);
      to.forEach((c, i) => {
        const p = m.planV1(targets[i]);
        if (c === 'EINVAL') expect(p, `${from} -> ${targets[i].toString(2)}`).toBeNull();
        else if (c === 'no-op') expect(p).toEqual([]);
        else {
          expect(p).not.toBeNull();
          expect(p!.at(-1)).toBe(fromV1(targets[i]));
        }
      });
    }
  });
  it('maps every value both ways, rejects bits 3-31, and performs every QEMU v1 transition', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(fromV1)).toEqual([
      S.STOP,
      S.RUNNING,
      S.STOP_COPY,
      S.PRE_COPY,
      S.RESUMING,
      null,
      S.ERROR,
      null,
    ]);
    expect(
      [S.STOP, S.RUNNING, S.STOP_COPY, S.PRE_COPY, S.RESUMING, S.ERROR, S.RUNNING_P2P].map(toV1),
    ).toEqual([0, 1, 2, 3, 4, 6, null]);
    expect(fromV1(1 | 8)).toBeNull();
    expect(v1Path(S.RUNNING, 0x80000001)).toBeNull();
    // 001→011, 011→010, 001→010, 000→010, 010→010, 010→000, 001→100,
    // 100→001, 011→001, 010→001, 000→001, 001→000, 001→001
    for (const [a, b] of [
      [1, 3],
      [3, 2],
      [1, 2],
      [0, 2],
      [2, 2],
      [2, 0],
      [1, 4],
      [4, 1],
      [3, 1],
      [2, 1],
      [0, 1],
      [1, 0],
      [1, 1],
    ])
      expect(v1Path(fromV1(a)!, b), `${a}->${b}`).not.toBeNull();
  });
  it('reset leaves ERROR for RUNNING', () => {
    const m = new MigrationStateMachine(5);
    m.fail();
    expect(m.plan(S.RUNNING)).toBeNull();
    m.reset();
    expect(m.state).toBe(S.RUNNING);
  });
});
