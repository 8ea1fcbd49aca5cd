import { createRequire } from 'node:module';
import { VfioUserClient } from '@vfu/client';
import { migrate } from './driver.js';
import { memoryWorkload } from './workload.js';
import type { Report, Progress } from './report.js';
import { parse, USAGE, UsageError, type Options } from './options.js';
import { subcommand, SUBCOMMANDS_USAGE } from './cli/index.js';
import { emit, progressEvents } from './cli/common.js';

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

const version = (): string =>
  (createRequire(import.meta.url)('../package.json') as { version: string }).version;

function bar(p: Progress): string {
  const w = 24,
    filled = p.pending ? Math.min(w, Math.round((w * p.bytes) / (p.bytes + p.pending))) : w;
  const gauge = '#'.repeat(filled) + '.'.repeat(w - filled);
  return `\r${p.phase.padEnd(8)} [${gauge}] ${mib(p.bytes)} round ${p.iteration}   `;
}

export function describe(r: Report): string {
  const lines = [
    `migration ${r.outcome} (${r.protocol})${r.error ? `: ${r.error}` : ''}`,
    `  moved      ${mib(r.bytes)} (pre-copy ${mib(r.precopyBytes)}, ` +
      `stop-copy ${mib(r.stopCopyBytes)}) in ${r.iterations} round(s)`,
    `  downtime   ${r.downtimeMs.toFixed(1)} ms (stop-copy ${r.stopCopyMs.toFixed(1)}, ` +
      `resume ${r.resumeMs.toFixed(1)}); total ${r.totalMs.toFixed(0)} ms; ` +
      `data phase ${r.throughputGiBps.toFixed(2)} GiB/s by ${r.dataPath}`,
    `  devices    source ${r.source.state}, destination ${r.destination.state}`,
  ];
  if (r.workloadWrites)
    lines.push(`  workload   ${r.workloadWrites} page writes on the source during pre-copy`);
  return lines.join('\n');
}

/** Figures as a reader wants them: milliseconds to 0.1, throughput to 0.001 GiB/s. */
function rounded(r: Report): Report {
  const ms = (x: number) => Math.round(x * 10) / 10;
  return {
    ...r,
    downtimeMs: ms(r.downtimeMs),
    stopCopyMs: ms(r.stopCopyMs),
    resumeMs: ms(r.resumeMs),
    totalMs: ms(r.totalMs),
    throughputGiBps: Math.round(r.throughputGiBps * 1000) / 1000,
  };
}

const say = (line: string) => process.stderr.write(`vfu-migrate: ${line}\n`);

/** One side that could not be reached or would not negotiate. */
class SideError extends Error {}

/** A reason a user can act on, from a connect or negotiation error. */
function connectReason(e: unknown, timeoutMs: number): string {
  const m = (e as Error).message;
  if (/ENOENT/.test(m)) return 'no such socket (is the server running?)';
  if (/ECONNREFUSED/.test(m)) return 'nobody listens on it (a dead server left it behind?)';
  if (/EBUSY/.test(m)) return 'the server already has a client (it serves one at a time)';
  if (/no reply|timed out|timeout/i.test(m))
    return `no answer to the vfio-user negotiation within ${timeoutMs} ms`;
  return m;
}

/** Connects and negotiates with one side within the timeout. */
async function connectSide(
  side: 'source' | 'destination',
  path: string,
  timeoutMs: number,
): Promise<VfioUserClient> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), timeoutMs + 1000);
  });
  try {
    return await Promise.race([VfioUserClient.connect(path, { timeoutMs }), late]);
  } catch (e) {
    throw new SideError(`${side} ${path}: ${connectReason(e, timeoutMs)}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Terminating signals abandon the migration (once); a second one ends the command at once. */
function onSignals(abort: AbortController): () => void {
  const handler = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) {
      say(`${sig} again: exiting now; each server handles its client going away`);
      process.exit(130);
    }
    abort.abort(sig);
  };
  const sigs = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of sigs) process.on(s, handler);
  return () => {
    for (const s of sigs) process.off(s, handler);
  };
}

async function run(o: Options, abort: AbortController): Promise<number> {
  const clients: VfioUserClient[] = [];
  try {
    for (const [side, path] of [
      ['source', o.source],
      ['destination', o.destination],
    ] as const) {
      clients.push(await connectSide(side, path, o.connectTimeoutMs));
      if (abort.signal.aborted) {
        say(`interrupted (${abort.signal.reason}) before the migration started; nothing changed`);
        return 130;
      }
    }
  } catch (e) {
    if (!(e instanceof SideError)) throw e;
    say(`cannot connect to the ${e.message}`);
    if (o.json) emit({ event: 'error', error: `cannot connect to the ${e.message}` });
    return 1;
  } finally {
    if (clients.length < 2 || abort.signal.aborted) for (const c of clients) c.close();
  }
  const [src, dst] = clients;
  const wl = o.workload ? await memoryWorkload(src) : null;
  const tty = process.stderr.isTTY && o.progress && !o.json;
  const report = await migrate(src, dst, {
    protocol: o.protocol,
    downtimeLimitMs: o.downtimeLimitMs,
    maxIterations: o.maxIterations,
    cancelAfterIterations: o.cancelAfterIterations,
    force: o.force,
    signal: abort.signal,
    workload: wl?.round,
    onProgress: tty ? p => process.stderr.write(bar(p)) : o.json ? progressEvents() : undefined,
  });
  if (tty) process.stderr.write('\n');
  wl?.close();
  src.close();
  dst.close();
  if (o.json) emit({ event: 'report', ...rounded(report) });
  // A signal after the switchover comes too late to abandon anything: the report stands.
  if (abort.signal.aborted && report.outcome !== 'completed') {
    const where = `source ${report.source.state}, destination ${report.destination.state}`;
    say(`interrupted (${abort.signal.reason}): migration abandoned; ${where}`);
    return 130;
  }
  if (!o.json) process.stdout.write(`${describe(report)}\n`);
  return report.outcome === 'completed' ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  const sub = await subcommand(argv, describe);
  if (sub !== null) return sub;
  let o: Options | 'help' | 'version';
  try {
    o = parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    say(`${e.message} (--help lists the options)`);
    return 2;
  }
  if (o === 'help' || o === 'version') {
    const help = `${USAGE}\n${SUBCOMMANDS_USAGE}`;
    process.stdout.write(`${o === 'help' ? help : `vfu-migrate ${version()}`}\n`);
    return 0;
  }
  const abort = new AbortController();
  const off = onSignals(abort);
  try {
    return await run(o, abort);
  } finally {
    off();
  }
}
