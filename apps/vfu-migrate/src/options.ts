// vfu-migrate's command line: every bad option is one line and exit 2, found before connecting.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { statSync } from 'node:fs';

export const USAGE = `usage: vfu-migrate --source PATH --destination PATH [options]

  --protocol v2|v1          migration protocol (default v2: DEVICE_FEATURE + MIG_DATA_*)
  --downtime-limit MS       switch over once the rest fits in this downtime (default 300;
                            0: only after --max-iterations rounds)
  --max-iterations N        at most N pre-copy rounds (default 30)
  --workload                dirty the source's device memory during pre-copy
  --cancel-after N          cancel after N pre-copy rounds (the source goes on running)
  --connect-timeout MS      give up on a side that does not connect and negotiate in time
                            (default 5000; also the limit for any one reply)
  --force                   migrate into a destination that runs a used device of its own
  --json                    NDJSON on stdout: progress events, then the report
  --no-progress             no progress bar
  --version                 print the version

Run both servers with --on-disconnect keep, so that the destination keeps the migrated
device when this driver disconnects. Exit status: 0 completed, 1 failed or cancelled,
2 bad options, 130 interrupted.`;

export class UsageError extends Error {}

/** node:util's parse errors run to several lines; the first sentence says it all. */
const firstSentence = (m: string) => m.split(/\.(\s|$)/)[0];

export interface Options {
  source: string;
  destination: string;
  protocol: 'v1' | 'v2';
  downtimeLimitMs?: number;
  maxIterations?: number;
  cancelAfterIterations?: number;
  connectTimeoutMs: number;
  workload: boolean;
  force: boolean;
  json: boolean;
  progress: boolean;
}

type Values = Record<string, string | boolean | undefined>;

/** An integer option within [min, max], or undefined when absent. */
function integer(v: Values, name: string, min: number, max: number): number | undefined {
  const x = v[name];
  if (x === undefined) return undefined;
  const n = /^\d+$/.test(x as string) ? Number(x) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} takes a whole number from ${min} to ${max}; got "${x}"`);
  return n;
}

/** The same socket under two names (a hard link, a symlink, ./x and x) is one server. */
function sameSocket(a: string, b: string): boolean {
  if (a === b) return true;
  const sa = statSync(a, { throwIfNoEntry: false }),
    sb = statSync(b, { throwIfNoEntry: false });
  return !!sa && !!sb && sa.dev === sb.dev && sa.ino === sb.ino;
}

export function parse(argv: string[]): Options | 'help' | 'version' {
  let v: Values;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      options: {
        source: { type: 'string' },
        destination: { type: 'string' },
        protocol: { type: 'string' },
        'downtime-limit': { type: 'string' },
        'max-iterations': { type: 'string' },
        workload: { type: 'boolean' },
        'cancel-after': { type: 'string' },
        'connect-timeout': { type: 'string' },
        force: { type: 'boolean' },
        json: { type: 'boolean' },
        'no-progress': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
    }).values;
  } catch (e) {
    throw new UsageError(firstSentence((e as Error).message));
  }
  if (v.help) return 'help';
  if (v.version) return 'version';
  if (!v.source || !v.destination) throw new UsageError('--source and --destination are required');
  const source = resolve(v.source as string),
    destination = resolve(v.destination as string);
  if (sameSocket(source, destination))
    throw new UsageError(`--source and --destination are the same socket (${source})`);
  if (v.protocol !== undefined && v.protocol !== 'v1' && v.protocol !== 'v2')
    throw new UsageError(`--protocol must be v1 or v2; got "${v.protocol}"`);
  return {
    source,
    destination,
    protocol: (v.protocol ?? 'v2') as 'v1' | 'v2',
    downtimeLimitMs: integer(v, 'downtime-limit', 0, 3_600_000),
    maxIterations: integer(v, 'max-iterations', 1, 1_000_000),
    cancelAfterIterations: integer(v, 'cancel-after', 1, 100_000),
    connectTimeoutMs: integer(v, 'connect-timeout', 100, 600_000) ?? 5000,
    workload: !!v.workload,
    force: !!v.force,
    json: !!v.json,
    progress: !v['no-progress'],
  };
}
