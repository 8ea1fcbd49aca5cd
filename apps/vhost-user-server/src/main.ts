import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { DeviceSetupError } from '@vfu/pci';
import { VhostUserServer, virtioModel } from '@vfu/vhost-user';
import { devices, defaultDevice } from './devices.js';

class UsageError extends Error {}

function usage(): string {
  return [
    'usage: vhost-user-server [--device NAME] --socket PATH [device options] [--trace]',
    '',
    `  --device NAME    virtio model: ${Object.keys(devices).join(', ')}`,
    `                   (default ${defaultDevice})`,
    '  --socket PATH    UNIX socket to listen on (QEMU: -chardev socket,path=PATH)',
    '  --trace          print every vhost-user message, one line each (stderr)',
    '  --quiet          no diagnostics on stderr',
    '',
    'device options:',
    ...Object.entries(devices).flatMap(([n, d]) =>
      Object.entries(d.options ?? {}).map(
        ([o, s]) => `  --${o} VALUE   (${n}) ${s.description} [default ${s.default}]`,
      ),
    ),
  ].join('\n');
}

interface Parsed {
  device: string;
  socket: string;
  trace: boolean;
  quiet: boolean;
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
        trace: { type: 'boolean' },
        quiet: { type: 'boolean' },
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
  if (!v.socket) throw new UsageError('--socket PATH is required');
  const deviceOptions: Record<string, string> = {};
  for (const o of deviceOpts) {
    if (v[o] === undefined) continue;
    if (!def.options?.[o]) throw new UsageError(`--${o} does not apply to device ${device}`);
    deviceOptions[o] = v[o] as string;
  }
  return {
    device,
    socket: resolve(v.socket as string),
    trace: !!v.trace,
    quiet: !!v.quiet,
    deviceOptions,
  };
}

export async function main(argv: string[]): Promise<number | undefined> {
  let p: Parsed | 'help';
  try {
    p = parse(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vhost-user-server: ${e.message}\n\n${usage()}\n`);
      return 2;
    }
    throw e;
  }
  if (p === 'help') {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const quiet = p.quiet;
  const say = (m: string) => {
    if (!quiet) process.stderr.write(`[vhost-user-server] ${m}\n`);
  };
  let device: ReturnType<typeof virtioModel>;
  try {
    device = virtioModel(devices[p.device], p.deviceOptions, say);
  } catch (e) {
    if (e instanceof DeviceSetupError) {
      process.stderr.write(`vhost-user-server: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  let server: VhostUserServer;
  try {
    server = new VhostUserServer(p.socket, device, {
      log: say,
      trace: p.trace ? l => process.stderr.write(`[trace] ${l}\n`) : undefined,
    });
  } catch (e) {
    process.stderr.write(
      `vhost-user-server: cannot listen on ${p.socket}: ${(e as Error).message}\n`,
    );
    return 1;
  }
  server.onSession = (s, reason) => say(s ? 'front-end connected' : `front-end gone (${reason})`);
  const attach = `-chardev socket,id=vhu0,path=${p.socket} -device vhost-user-blk-pci,chardev=vhu0`;
  process.stdout.write(
    `vhost-user-server: ${p.device} listening on ${p.socket}; attach QEMU with: ${attach}\n`,
  );
  const stop = (sig: string) => {
    say(`${sig}: shutting down`);
    server.close();
    process.exit(0);
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  return undefined;
}
