import type { Describe } from './common.js';
import { send } from '../send.js';
import {
  usage,
  TLS_USAGE,
  WIRE_OPTIONS,
  addressOption,
  connect,
  integer,
  options,
  printReport,
  protocolOf,
  required,
  wireOptions,
} from './common.js';

const SEND_USAGE = `usage: vfu-migrate send --source SOCK --to HOST:PORT [options]

The source half of a migration between hosts; \`vfu-migrate receive\` is the other half.
  --protocol v2|v1          migration protocol (default v2)
  --downtime-limit MS       switch over once the rest fits in this downtime (default 300)
  --max-iterations N        at most N pre-copy rounds (default 30)
  --json                    NDJSON on stdout: progress events, then the report
${TLS_USAGE}`;

export async function sendCommand(argv: string[], describe: Describe): Promise<number> {
  const { v } = options(argv, {
    source: { type: 'string' },
    to: { type: 'string' },
    protocol: { type: 'string' },
    'downtime-limit': { type: 'string' },
    'max-iterations': { type: 'string' },
    ...WIRE_OPTIONS,
  });
  if (v.help) return usage(SEND_USAGE);
  const source = required(v, 'source');
  const opts = {
    to: addressOption(v, 'to', 'localhost'),
    protocol: protocolOf(v),
    downtimeLimitMs: integer(v, 'downtime-limit', 0, 3_600_000),
    maxIterations: integer(v, 'max-iterations', 1, 1_000_000),
    ...wireOptions(v, 'vfu-migrate send'),
  };
  const src = await connect('source', source);
  try {
    return printReport(v, await send(src, opts), describe);
  } finally {
    src.close();
  }
}
