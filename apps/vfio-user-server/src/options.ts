// The command line: every bad option is a UsageError (one line, exit 2), found before anything
// is created or listened on.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { DeviceDefinition } from '@vfu/pci';
import { devices, defaultDevice } from './devices.js';
import { LEVELS, FORMATS, type Level, type Format } from './log.js';

export class UsageError extends Error {}

/** node:util's parse errors run to several lines; the first sentence says it all. */
const firstSentence = (m: string) => m.split(/\.(\s|$)/)[0];

const optionsOf = (d: DeviceDefinition): NonNullable<DeviceDefinition['options']> =>
  d.options ?? {};

export function usage(): string {
  const lines = [
    'usage: vfio-user-server [--device NAME] [--socket PATH] [device options] [options]',
    '',
    `  --device NAME          device model: ${Object.keys(devices).join(', ')}`,
    `                         (default ${defaultDevice}), or a model file: ./path/to/model.js`,
    '  --socket PATH          UNIX socket to listen on (default ./vfio-user-NAME.sock)',
    '  --log-level LEVEL      error, warn, info (default) or debug',
    '  --log-format FORMAT    text (default: time, level, message) or json (one object a line)',
    '  --trace                log every message, decoded, one line each (whatever the level)',
    '  --on-disconnect WHAT   reset (default) or keep the device state when the client goes',
    '  --dma-layout LAYOUT    DMA_READ/WRITE layout: spec (default; what QEMU 11.1.3 speaks)',
    '                         or qemu (u32 count, data at 12)',
    '  --no-migration         do not offer migration',
    '  --control PATH         a JSON-lines socket to read device state, use device controls and',
    '                         resume a migrated-away device (tests, demos, operators)',
    '  --version              print the version',
    '',
    'Logs go to stderr; the listening line goes to stdout. Sizes take K, M, G, T (binary).',
    '',
    'device options:',
    ...Object.entries(devices).flatMap(([n, d]) =>
      Object.entries(optionsOf(d)).map(
        ([o, s]) => `  --${o} VALUE   (${n}) ${s.description} [default ${s.default}]`,
      ),
    ),
  ];
  return lines.join('\n');
}

export interface Parsed {
  control?: string;
  device: string;
  socket: string;
  level: Level;
  format: Format;
  trace: boolean;
  onDisconnect: 'reset' | 'keep';
  dmaLayout: 'spec' | 'qemu';
  migration: boolean;
  deviceOptions: Record<string, string>;
}

type Values = Record<string, string | boolean | undefined>;

function parseValues(argv: string[], deviceOpts: Set<string>): Values {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        device: { type: 'string' },
        socket: { type: 'string' },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        trace: { type: 'boolean' },
        'on-disconnect': { type: 'string' },
        control: { type: 'string' },
        'dma-layout': { type: 'string' },
        'no-migration': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        ...Object.fromEntries([...deviceOpts].map(o => [o, { type: 'string' as const }])),
      },
    }).values as Values;
  } catch (e) {
    throw new UsageError(firstSentence((e as Error).message));
  }
}

/** The value of a string option that must be one of `choices`. */
function oneOf<T extends string>(v: Values, name: string, choices: readonly T[], dflt: T): T {
  const x = (v[name] as string | undefined) ?? dflt;
  if (!choices.includes(x as T))
    throw new UsageError(`--${name} must be ${choices.join(' or ')}; got "${x}"`);
  return x as T;
}

export function parse(argv: string[]): Parsed | 'help' | 'version' {
  const deviceOpts = new Set(Object.values(devices).flatMap(d => Object.keys(d.options ?? {})));
  const v = parseValues(argv, deviceOpts);
  if (v.help) return 'help';
  if (v.version) return 'version';
  for (const [k, x] of Object.entries(v))
    if (x === '') throw new UsageError(`--${k} needs a value; got an empty string`);
  const device = (v.device as string | undefined) ?? defaultDevice;
  const def = devices[device];
  if (!def)
    throw new UsageError(
      `unknown device "${device}"; choose one of: ${Object.keys(devices).join(', ')}`,
    );
  const deviceOptions: Record<string, string> = {};
  for (const o of deviceOpts) {
    if (v[o] === undefined) continue;
    if (!def.options?.[o]) throw new UsageError(`--${o} does not apply to device ${device}`);
    deviceOptions[o] = v[o] as string;
  }
  const socket = resolve((v.socket as string | undefined) ?? `vfio-user-${device}.sock`);
  const control = v.control ? resolve(v.control as string) : undefined;
  if (control === socket)
    throw new UsageError(`--control and --socket are the same path (${socket})`);
  return {
    control,
    device,
    socket,
    level: oneOf(v, 'log-level', LEVELS, 'info'),
    format: oneOf(v, 'log-format', FORMATS, 'text'),
    trace: !!v.trace,
    onDisconnect: oneOf(v, 'on-disconnect', ['reset', 'keep'] as const, 'reset'),
    dmaLayout: oneOf(v, 'dma-layout', ['spec', 'qemu'] as const, 'spec'),
    migration: !v['no-migration'],
    deviceOptions,
  };
}
