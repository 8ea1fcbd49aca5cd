import type { Describe } from './common.js';
import { send } from '../send.js';
import { parseAddress } from '../wire/socket.js';
import {
  usage,
  TLS_OPTIONS,
  TLS_USAGE,
  connect,
  integer,
  options,
  progressLine,
  out,
  protocolOf,
  required,
  secret,
  tlsFiles,
  UsageError,
} from './common.js';

const SEND_USAGE = `usage: vfu-migrate send --source SOCK --to HOST:PORT [options]

The source half of a migration between hosts; \`vfu-migrate receive\` is the other half.
  --protocol v2|v1          migration protocol (default v2)
  --downtime-limit MS       switch over once the rest fits in this downtime (default 300)
  --max-iterations N        at most N pre-copy rounds (default 30)
  --json                    print the report as JSON
${TLS_USAGE}`;

export async function sendCommand(argv: string[], describe: Describe): Promise<number> {
  const { v } = options(argv, {
    source: { type: 'string' },
    to: { type: 'string' },
    protocol: { type: 'string' },
    'downtime-limit': { type: 'string' },
    'max-iterations': { type: 'string' },
    json: { type: 'boolean' },
    ...TLS_OPTIONS,
  });
  if (v.help) return usage(SEND_USAGE);
  const source = required(v, 'source');
  let to: ReturnType<typeof parseAddress>;
  try {
    to = parseAddress(required(v, 'to'), 'localhost');
  } catch (e) {
    throw new UsageError(`--to: ${(e as Error).message}`);
  }
  const opts = {
    to,
    protocol: protocolOf(v),
    downtimeLimitMs: integer(v, 'downtime-limit', 0, 3_600_000),
    maxIterations: integer(v, 'max-iterations', 1, 1_000_000),
    timeoutMs: integer(v, 'timeout', 100, 3_600_000, 60_000),
    tls: tlsFiles(v),
    secret: secret(v),
    software: 'vfu-migrate send',
    onProgress: progressLine(v),
  };
  const src = await connect('source', source);
  try {
    const rep = await send(src, opts);
    if (opts.onProgress) process.stderr.write('\n');
    out(v.json ? JSON.stringify(rep, null, 2) : describe(rep));
    return rep.outcome === 'completed' ? 0 : 1;
  } finally {
    src.close();
  }
}
