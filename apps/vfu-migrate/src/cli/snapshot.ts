import type { Describe } from './common.js';
import { describeStream, inspectFile } from '../inspect.js';
import { restore, save } from '../snapshot.js';
import {
  connect,
  connectDestination,
  emit,
  FORCE_USAGE,
  options,
  out,
  protocolOf,
  required,
  usage,
  UsageError,
} from './common.js';

const SAVE_USAGE = `usage:
  vfu-migrate save --source SOCK --file PATH [--resume] [--protocol v2|v1] [--json]

Stops the device and writes its whole state to PATH (a new file). The device stays
stopped (its state lives in the file) unless --resume runs it again.`;

const RESTORE_USAGE = `usage:
  vfu-migrate restore --destination SOCK --file PATH [--protocol v2|v1] [--json] [--force]

Loads the state saved in PATH into the device, which then runs. A file that is not
a complete, intact stream is refused before the device is touched.
${FORCE_USAGE}`;

const INSPECT_USAGE = `usage: vfu-migrate inspect PATH [--json]

Prints what a saved state holds (model, versions, records, sizes) and whether every
record is intact. No server needed.`;

export async function saveCommand(argv: string[], describe: Describe): Promise<number> {
  const { v } = options(argv, {
    source: { type: 'string' },
    file: { type: 'string' },
    resume: { type: 'boolean' },
    protocol: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (v.help) return usage(SAVE_USAGE);
  const [source, file, protocol] = [required(v, 'source'), required(v, 'file'), protocolOf(v)];
  const src = await connect('source', source);
  try {
    const rep = await save(src, file, { protocol, resume: !!v.resume });
    if (v.json) emit({ event: 'report', ...rep });
    else out(describe(rep));
    return rep.outcome === 'completed' && !rep.error ? 0 : 1;
  } finally {
    src.close();
  }
}

export async function restoreCommand(argv: string[], describe: Describe): Promise<number> {
  const { v } = options(argv, {
    destination: { type: 'string' },
    file: { type: 'string' },
    protocol: { type: 'string' },
    json: { type: 'boolean' },
    force: { type: 'boolean' },
  });
  if (v.help) return usage(RESTORE_USAGE);
  const [dest, file, protocol] = [required(v, 'destination'), required(v, 'file'), protocolOf(v)];
  const dst = await connectDestination(dest, !!v.force);
  try {
    const rep = await restore(dst, file, protocol);
    if (v.json) emit({ event: 'report', ...rep });
    else out(describe(rep));
    return rep.outcome === 'completed' ? 0 : 1;
  } finally {
    dst.close();
  }
}

export async function inspectCommand(argv: string[]): Promise<number> {
  const { v, rest } = options(argv, { json: { type: 'boolean' } }, true);
  if (v.help) return usage(INSPECT_USAGE);
  if (rest.length !== 1) throw new UsageError('inspect takes one file');
  const s = await inspectFile(rest[0]);
  out(v.json ? JSON.stringify(s) : describeStream(s));
  return s.problem ? 1 : 0;
}
