// What the subcommands share: their option parsing (strict; a bad option is one line and exit
// 2), the connection to a server, the shared secret and TLS files, and printing.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { VfioUserClient } from '@vfu/client';
import { checkDestination } from '../driver.js';
import { parseAddress, type Address, type TlsFiles } from '../wire/socket.js';
import type { Progress, Report } from '../report.js';

/** The one-host form's report printer (main.ts), which every subcommand's report uses. */
export type Describe = (r: Report) => string;

export class UsageError extends Error {}

export type Values = Record<string, string | boolean | undefined>;

export const say = (line: string): void => void process.stderr.write(`vfu-migrate: ${line}\n`);
export const out = (text: string): void => void process.stdout.write(`${text}\n`);
/** One NDJSON line on stdout (--json): every event, progress or report, is one line. */
export const emit = (event: object): void => out(JSON.stringify(event));

/** Progress for --json: an event when a phase starts, then at most one every 200 ms. */
export function progressEvents(): (p: Progress) => void {
  let last = { phase: '', at: 0 };
  const t0 = performance.now();
  return p => {
    const at = performance.now();
    if (p.phase === last.phase && at - last.at < 200) return;
    last = { phase: p.phase, at };
    emit({ event: 'progress', ...p, elapsedMs: Math.round(at - t0) });
  };
}

/** Progress on stderr when it is a terminal (and no --json): phase, MiB moved, round. */
function progressLine(v: Values): ((p: Progress) => void) | undefined {
  if (v.json || !process.stderr.isTTY) return undefined;
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  return p => {
    const line = `${p.phase.padEnd(8)} ${mib(p.bytes)} MiB moved, round ${p.iteration}`;
    process.stderr.write(`\r${line}, ${mib(p.pending)} MiB pending   `);
  };
}

/** Prints a subcommand's --help; its exit status. */
export function usage(text: string): number {
  out(text);
  return 0;
}

/** Parses `argv` against `options` (plus --help); positionals only where `positionals`. */
export function options(
  argv: string[],
  opts: ParseArgsConfig['options'],
  positionals = false,
): { v: Values; rest: string[] } {
  try {
    const r = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: positionals,
      options: { ...opts, help: { type: 'boolean', short: 'h' } },
    });
    return { v: r.values as Values, rest: r.positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.split(/\.(\s|$)/)[0]);
  }
}

export function required(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== 'string' || !x) throw new UsageError(`--${name} is required`);
  return x;
}

export function protocolOf(v: Values): 'v1' | 'v2' {
  const p = v.protocol ?? 'v2';
  if (p !== 'v1' && p !== 'v2') throw new UsageError(`--protocol must be v1 or v2; got "${p}"`);
  return p;
}

/** A whole number option within [min, max], or `fallback`. */
export function integer(v: Values, name: string, min: number, max: number, fallback?: number) {
  const x = v[name];
  if (x === undefined) return fallback;
  const n = /^\d+$/.test(x as string) ? Number(x) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} takes a whole number from ${min} to ${max}; got "${x}"`);
  return n;
}

const TLS_OPTIONS = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'secret-file': { type: 'string' },
  timeout: { type: 'string' },
} as const;

export const TLS_USAGE = `\
  --tls-cert PATH           this half's TLS certificate (PEM), with --tls-key PATH
  --tls-ca PATH             trust only peers whose certificate this CA signed
  --secret-file PATH        both halves prove they hold this secret (first line of the file)
  --timeout MS              longest wait for the other half (default 60000)`;

/** The options both halves of a migration between hosts take (send and receive). */
export const WIRE_OPTIONS = { json: { type: 'boolean' }, ...TLS_OPTIONS } as const;

/** A required [HOST:]PORT option; `host` where it names none. */
export function addressOption(v: Values, name: string, host: string): Address {
  try {
    return parseAddress(required(v, name), host);
  } catch (e) {
    throw new UsageError(`--${name}: ${(e as Error).message}`);
  }
}

/** What either half hands its wire: TLS, the secret, the timeout, progress, and its name. */
export function wireOptions(v: Values, software: string) {
  return {
    tls: tlsFiles(v),
    secret: secret(v),
    timeoutMs: integer(v, 'timeout', 100, 3_600_000, 60_000),
    software,
    onProgress: v.json ? progressEvents() : progressLine(v),
  };
}

/**
 * Prints a report after any progress line, as text or (--json) as the last NDJSON event; its
 * exit status (0: done).
 */
export function printReport<R extends Report | { outcome: string }>(
  v: Values,
  rep: R,
  text: (r: R) => string,
): number {
  if (progressLine(v)) process.stderr.write('\n');
  if (v.json) emit({ event: 'report', ...rep });
  else out(text(rep));
  return rep.outcome === 'completed' ? 0 : 1;
}

/** TLS files, or null for plain TCP; a key without a certificate (or the reverse) is an error. */
function tlsFiles(v: Values): TlsFiles | null {
  const cert = v['tls-cert'] as string | undefined,
    key = v['tls-key'] as string | undefined,
    ca = v['tls-ca'] as string | undefined;
  if (!!cert !== !!key) throw new UsageError('--tls-cert and --tls-key go together');
  if (!cert && !ca) return null;
  return { cert, key, ca };
}

/** The shared secret: the file's first line, at least 16 bytes. */
function secret(v: Values): Uint8Array | undefined {
  const path = v['secret-file'] as string | undefined;
  if (!path) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8').split('\n')[0].trim();
  } catch (e) {
    throw new UsageError(`--secret-file: ${(e as Error).message}`);
  }
  if (text.length < 16) throw new UsageError(`--secret-file: the secret needs 16 characters`);
  return Buffer.from(text, 'utf8');
}

/** A client of the server at `path`, or a message saying why not. */
export async function connect(side: string, path: string): Promise<VfioUserClient> {
  try {
    return await VfioUserClient.connect(path);
  } catch (e) {
    throw new Error(`cannot connect to the ${side} ${path}: ${(e as Error).message}`);
  }
}

/**
 * The destination of a receive or a restore: refused, before anything is sent to it, when it
 * runs a used device of its own and `force` is not given (as the one-host form refuses it).
 */
export async function connectDestination(path: string, force: boolean): Promise<VfioUserClient> {
  const dst = await connect('destination', path);
  try {
    await checkDestination(dst, force);
    return dst;
  } catch (e) {
    dst.close();
    throw e;
  }
}

export const FORCE_USAGE =
  '  --force                   write into a destination that runs a used device of its own';
