import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { PciDevice, DeviceSetupError } from '@vfu/pci';
import { VfioUserServer } from '@vfu/server';
import { devices, defaultDevice } from './devices.js';
import { withModelFile, ModelFileError } from './model-file.js';
import { controlServer } from './control.js';

const LEVELS = ['error', 'warn', 'info', 'debug'] as const;
type Level = (typeof LEVELS)[number];

export class UsageError extends Error {}

function usage(): string {
  const lines = [
    'usage: vfio-user-server [--device NAME] [--socket PATH] [device options]',
    '                        [--log-level LEVEL] [--trace] [--control PATH]',
    '',
    `  --device NAME          device model: ${Object.keys(devices).join(', ')}`,
    `                         (default ${defaultDevice})`,
    '  --socket PATH          UNIX socket to listen on (default ./vfio-user-NAME.sock)',
    '  --log-level LEVEL      error, warn, info (default) or debug',
    '  --trace                print every message, decoded, one line each (stderr)',
    '  --on-disconnect WHAT   reset (default) or keep the device state when the client goes',
    '  --dma-layout LAYOUT    DMA_READ/WRITE layout: spec (default; what QEMU 11.1.3 speaks)',
    '                         or qemu (u32 count, data at 12)',
    '  --no-migration         do not offer migration',
    '  --control PATH         a JSON-lines socket to read device state and use device controls',
    '',
    'device options:',
    ...Object.entries(devices).flatMap(([n, d]) =>
      Object.entries(d.options ?? {}).map(
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
  trace: boolean;
  onDisconnect: 'reset' | 'keep';
  dmaLayout: 'spec' | 'qemu';
  migration: boolean;
  deviceOptions: Record<string, string>;
}

export function parse(argv: string[]): Parsed | 'help' {
  const deviceOpts = new Set(Object.values(devices).flatMap(d => Object.keys(d.options ?? {})));
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        device: { type: 'string' },
        socket: { type: 'string' },
        'log-level': { type: 'string' },
        trace: { type: 'boolean' },
        'on-disconnect': { type: 'string' },
        control: { type: 'string' },
        'dma-layout': { type: 'string' },
        'no-migration': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries([...deviceOpts].map(o => [o, { type: 'string' as const }])),
      },
    }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify.*$/s, ''));
  }
  if (v.help) return 'help';
  const device = (v.device as string | undefined) ?? defaultDevice;
  const def = devices[device];
  if (!def)
    throw new UsageError(
      `unknown device "${device}"; choose one of: ${Object.keys(devices).join(', ')}`,
    );
  const level = ((v['log-level'] as string | undefined) ?? 'info') as Level;
  if (!LEVELS.includes(level))
    throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}`);
  const onDisconnect = (v['on-disconnect'] as string | undefined) ?? 'reset';
  if (onDisconnect !== 'reset' && onDisconnect !== 'keep')
    throw new UsageError('--on-disconnect must be reset or keep');
  const dmaLayout = (v['dma-layout'] as string | undefined) ?? 'spec';
  if (!['spec', 'qemu'].includes(dmaLayout))
    throw new UsageError('--dma-layout must be spec or qemu');
  const deviceOptions: Record<string, string> = {};
  for (const o of deviceOpts) {
    if (v[o] === undefined) continue;
    if (!def.options?.[o]) throw new UsageError(`--${o} does not apply to device ${device}`);
    deviceOptions[o] = v[o] as string;
  }
  return {
    control: v.control ? resolve(v.control as string) : undefined,
    device,
    socket: resolve((v.socket as string | undefined) ?? `vfio-user-${device}.sock`),
    level,
    trace: !!v.trace,
    onDisconnect,
    dmaLayout: dmaLayout as Parsed['dmaLayout'],
    migration: !v['no-migration'],
    deviceOptions,
  };
}

export async function main(argv: string[]): Promise<number | undefined> {
  let p: Parsed | 'help';
  try {
    p = parse(await withModelFile(argv, devices));
  } catch (e) {
    if (e instanceof ModelFileError) {
      process.stderr.write(`vfio-user-server: ${e.message}\n`);
      return 2;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`vfio-user-server: ${e.message}\n\n${usage()}\n`);
      return 2;
    }
    throw e;
  }
  if (p === 'help') {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const at = LEVELS.indexOf(p.level);
  const log = (level: Level, m: string) => {
    if (LEVELS.indexOf(level) <= at) process.stderr.write(`[${level}] ${m}\n`);
  };
  let device: PciDevice;
  try {
    device = new PciDevice(devices[p.device], p.deviceOptions);
  } catch (e) {
    if (e instanceof DeviceSetupError || e instanceof RangeError) {
      process.stderr.write(`vfio-user-server: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const server = new VfioUserServer({
    device,
    socketPath: p.socket,
    onDisconnect: p.onDisconnect,
    dmaLayout: p.dmaLayout,
    migration: p.migration ? {} : false,
    log: m => log(/^refused|failed|migrated away/.test(m) ? 'warn' : 'info', m),
    trace: p.trace ? l => process.stderr.write(`[trace] ${l}\n`) : undefined,
  });
  try {
    server.listen();
  } catch (e) {
    process.stderr.write(
      `vfio-user-server: cannot listen on ${p.socket}: ${(e as Error).message}\n`,
    );
    device.release();
    return 1;
  }
  const control = p.control ? controlServer(p.control, device, server, m => log('warn', m)) : null;
  const dev = JSON.stringify({ driver: 'vfio-user-pci', socket: { path: p.socket, type: 'unix' } });
  process.stdout.write(
    `vfio-user-server: ${p.device} listening on ${p.socket}; attach QEMU with: -device '${dev}'\n`,
  );
  const stop = (sig: string) => {
    log('info', `${sig}: shutting down`);
    server.close();
    control?.close();
    device.release();
    process.exit(0);
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  return undefined;
}
