import { createRequire } from 'node:module';
import type { Server } from 'node:net';
import { PciDevice } from '@vfu/pci';
import { VfioUserServer } from '@vfu/server';
import { devices } from './devices.js';
import { withModelFile, ModelFileError } from './model-file.js';
import { controlServer } from './control.js';
import { parse, usage, UsageError, type Parsed } from './options.js';
import { createLogger, tracer } from './log.js';
import { checkSocketPath, removeStale, PathError } from './paths.js';

export { parse };

/** Signals that end the server; each removes its sockets first. */
const TERMINATING = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;

const version = (): string =>
  (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** The logger once there is one (signals may come before). */
let logged: ReturnType<typeof createLogger> | undefined;

const fail = (message: string): number => {
  process.stderr.write(`vfio-user-server: ${message}\n`);
  return 1;
};

/** Builds the device; an option it cannot take is a usage error naming what was given. */
function buildDevice(p: Parsed): PciDevice {
  try {
    return new PciDevice(devices[p.device], p.deviceOptions);
  } catch (e) {
    const given = Object.entries(p.deviceOptions)
      .map(([k, v]) => ` --${k} ${v}`)
      .join('');
    throw new UsageError(`cannot build ${p.device}${given}: ${(e as Error).message}`);
  }
}

export async function main(argv: string[]): Promise<number | undefined> {
  // SIGUSR1 would open Node's inspector (a debugger port) in a device server: log it instead.
  process.on('SIGUSR1', () => logged?.warn('SIGUSR1 ignored (no debugger in a device server)'));
  let p: Parsed | 'help' | 'version';
  let device: PciDevice;
  try {
    p = parse(await withModelFile(argv, devices));
    if (p === 'help' || p === 'version') {
      process.stdout.write(`${p === 'help' ? usage() : `vfio-user-server ${version()}`}\n`);
      return 0;
    }
    device = buildDevice(p);
  } catch (e) {
    if (!(e instanceof UsageError || e instanceof ModelFileError)) throw e;
    process.stderr.write(`vfio-user-server: ${e.message} (--help lists the options)\n`);
    return 2;
  }
  let controlStale = false;
  try {
    checkSocketPath(p.socket, 'socket');
    if (p.control) controlStale = checkSocketPath(p.control, 'control socket') === 'stale';
  } catch (e) {
    device.release();
    if (e instanceof PathError) return fail(e.message);
    throw e;
  }
  const log = createLogger(p.level, p.format);
  logged = log;
  const trace = p.trace ? tracer(log) : null;
  const server = new VfioUserServer({
    device,
    socketPath: p.socket,
    onDisconnect: p.onDisconnect,
    dmaLayout: p.dmaLayout,
    migration: p.migration ? {} : false,
    log,
    trace: trace ? line => trace.trace(line) : undefined,
  });
  try {
    server.listen();
  } catch (e) {
    device.release();
    return fail(`cannot listen on ${p.socket}: ${(e as Error).message}`);
  }
  let control: Server | null = null;
  const stop = (sig: string) => {
    log.info(`${sig}: shutting down`);
    server.close();
    control?.close();
    if (p.control) removeStale(p.control);
    device.release();
    process.exit(0);
  };
  for (const sig of TERMINATING) process.once(sig, () => stop(sig));
  if (p.control) {
    if (controlStale) removeStale(p.control);
    try {
      control = await controlServer(p.control, device, server, log);
    } catch (e) {
      server.close();
      device.release();
      return fail(`cannot listen on control socket ${p.control}: ${(e as Error).message}`);
    }
  }
  log.debug(`${p.device} options ${JSON.stringify(device.options)}, level ${p.level}`);
  const dev = JSON.stringify({ driver: 'vfio-user-pci', socket: { path: p.socket, type: 'unix' } });
  process.stdout.write(
    `vfio-user-server: ${p.device} listening on ${p.socket}; attach QEMU with: -device '${dev}'\n`,
  );
  return undefined;
}
