// The figures each soak run prints, one line each, in the words of docs/robustness.md.
import type { FuzzReport } from './fuzz.ts';
import type { CyclesReport } from './cycles.ts';

/**
 * How far apart the lowest and highest RSS samples (after the first) may be: a Node process's
 * RSS saw-tooths with its garbage collector (about 90 MiB here), a leak climbs without end.
 */
export const RSS_SPREAD_BOUND_MIB = 128;

/**
 * Least-squares slope of RSS over messages, in MiB per 100,000 messages: printed, not judged
 * (over a million messages V8's heap still grows in steps; a leak shows over the long run).
 */
function slope(samples: { messages: number; rssKiB: number }[]): number {
  const k = samples.length;
  if (k < 2) return 0;
  const mx = samples.reduce((a, s) => a + s.messages, 0) / k;
  const my = samples.reduce((a, s) => a + s.rssKiB, 0) / k;
  const sxy = samples.reduce((a, s) => a + (s.messages - mx) * (s.rssKiB - my), 0);
  const sxx = samples.reduce((a, s) => a + (s.messages - mx) ** 2, 0);
  return ((sxy / sxx) * 100_000) / 1024;
}

const n = (v: number) => v.toLocaleString('en-US');
const mib = (kib: number) => (kib / 1024).toFixed(1);

function describeRss(rss: number[]): string {
  // A run shorter than the sampling interval has no sample (min and max of nothing: ±Infinity).
  if (rss.length === 0)
    return 'fuzz: server RSS not sampled (the run ended before the first sample)';
  return (
    `fuzz: server RSS ${mib(Math.min(...rss))}-${mib(Math.max(...rss))} MiB over ` +
    `${rss.length} samples (first ${mib(rss[0])}, last ${mib(rss[rss.length - 1])})`
  );
}

export function describeFuzz(rep: FuzzReport, seed: number): string[] {
  const rate = rep.messages / rep.seconds;
  return [
    describeRss(rep.samples.map(s => s.rssKiB)),
    `fuzz: ${n(rep.messages)} messages (${n(rep.valid)} valid, ${n(rep.mutated)} mutated, ` +
      `${n(rep.withFd)} carrying an fd, ${n(rep.unframed)} with a lying msg_size) in ` +
      `${n(rep.sessions)} sessions, seed ${seed}`,
    `fuzz: 0 crashes, 0 hangs, 0 leaks; ${n(rep.checks)} health checks passed; ` +
      `${n(rep.closedByServer)} sessions ended by the server, ` +
      `${n(rep.busy)} connects answered EBUSY (previous client still leaving); ` +
      `${n(rep.replyBytes)} bytes of replies read`,
    `fuzz: ${rep.seconds.toFixed(0)} s, ${n(Math.round(rate))} messages/s ` +
      `(10,000,000 would take ${(1e7 / rate / 60).toFixed(0)} min at this rate)`,
  ];
}

export function describeMemory(
  rep: FuzzReport,
  baselineFds: number,
): { lines: string[]; held: boolean } {
  const lines = rep.samples.map(
    s => `memory: after ${n(s.messages)} messages: RSS ${mib(s.rssKiB)} MiB, ${s.fds} fds`,
  );
  const later = rep.samples.slice(1).map(s => s.rssKiB);
  const spread = later.length ? Math.max(...later) - Math.min(...later) : 0;
  const trend = slope(rep.samples.slice(1));
  const fdsFlat = rep.samples.every(s => s.fds === baselineFds);
  const held = spread <= RSS_SPREAD_BOUND_MIB * 1024 && fdsFlat;
  lines.push(
    `memory: RSS after the first sample ${mib(Math.min(...later))}-${mib(Math.max(...later))} ` +
      `MiB: spread ${mib(spread)} MiB (bound ${RSS_SPREAD_BOUND_MIB}), trend ` +
      `${trend.toFixed(2)} MiB per 100,000 messages; fds ` +
      `${fdsFlat ? 'all' : 'NOT all'} at the baseline ${baselineFds}; ` +
      `${held ? 'held' : 'DID NOT HOLD'}`,
  );
  return { lines, held };
}

export function describeCycles(rep: CyclesReport): string[] {
  const last = rep.samples[rep.samples.length - 1];
  const rss = rep.samples.map(s => s.rssKiB);
  return [
    `cycles: ${n(rep.cycles)} connect/negotiate/read/disconnect cycles ` +
      `in ${rep.seconds.toFixed(0)} s`,
    `cycles: server fds at the baseline ${rep.baselineFds} in every sample ` +
      `(${rep.samples.map(s => s.fds).join(', ')}); last ${last.fds}`,
    `cycles: RSS ${mib(Math.min(...rss))}-${mib(Math.max(...rss))} MiB across the samples`,
  ];
}
