import type { Describe } from './common.js';
import { receive, type ReceiveReport } from '../receive.js';
import {
  usage,
  TLS_USAGE,
  WIRE_OPTIONS,
  addressOption,
  connectDestination,
  FORCE_USAGE,
  options,
  printReport,
  required,
  say,
  wireOptions,
  UsageError,
} from './common.js';

const RECEIVE_USAGE = `usage:
  vfu-migrate receive --destination SOCK --listen [HOST:]PORT [options]

The destination half of a migration between hosts: takes one migration from a
\`vfu-migrate send\`, then exits. It needs a way to tell who may push a state into the
device: --secret-file, or --tls-ca (peers must hold a certificate that CA signed), or
--insecure (anyone who reaches the port; for a trusted network only).
  --json                    NDJSON on stdout: progress events, then the report
  --insecure                accept a source half that proves nothing
${FORCE_USAGE}
${TLS_USAGE}`;

export async function receiveCommand(argv: string[], describe: Describe): Promise<number> {
  const { v } = options(argv, {
    destination: { type: 'string' },
    listen: { type: 'string' },
    insecure: { type: 'boolean' },
    force: { type: 'boolean' },
    ...WIRE_OPTIONS,
  });
  if (v.help) return usage(RECEIVE_USAGE);
  const destination = required(v, 'destination');
  const listen = addressOption(v, 'listen', '0.0.0.0');
  const wire = wireOptions(v, 'vfu-migrate receive');
  const { tls, secret: key } = wire;
  if (tls && !tls.cert) throw new UsageError('a TLS listener needs --tls-cert and --tls-key');
  if (!key && !tls?.ca && !v.insecure)
    throw new UsageError('say who may migrate in: --secret-file, --tls-ca or --insecure');
  const dst = await connectDestination(destination, !!v.force);
  // Ctrl-C while listening: stop, the device untouched (a migration under way ends by its bounds).
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => stop.abort(sig);
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    const rep = await receive({
      ...wire,
      signal: stop.signal,
      destination: dst,
      listen,
      onListening: a => say(`listening on ${a.host}:${a.port}`),
      onRefused: (peer, why) => say(`refused ${peer}: ${why}`),
    });
    return printReport(v, rep, r => describeReceived(r, describe));
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    dst.close();
  }
}

function describeReceived(r: ReceiveReport, describe: Describe): string {
  const lines = [
    `received ${r.outcome} (${r.protocol}) from ${r.peer}${r.error ? `: ${r.error}` : ''}`,
    `  device     held by the ${r.holder}; destination ${r.destination.state}`,
    `  stream     ${r.bytes} bytes into the device`,
  ];
  if (r.source) lines.push(`  the source's report:`, describe(r.source).replace(/^/gm, '    '));
  return lines.join('\n');
}
