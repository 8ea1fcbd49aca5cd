// Runs our servers (vfio-user-server, vhost-user-server) as real separate processes, for tests,
// benchmarks and the demo.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ServerProcess {
  proc: ChildProcess;
  socket: string;
  /** Everything the server printed so far, stdout and stderr in the order it wrote them. */
  output: () => string;
  stop(): Promise<number | null>;
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** Starts vfio-user-server with `args` (plus --socket); resolves once it listens. */
export function startServer(
  socket: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServerProcess> {
  const bin = createRequire(import.meta.url).resolve(
    '@vfu/vfio-user-server/bin/vfio-user-server.mjs',
  );
  return startListening(bin, socket, ['--socket', socket, ...args], env);
}

/**
 * Runs the Node script `bin` with `args` and resolves once it prints its listening line and
 * `socket` exists (our servers print that line once they listen).
 *
 * Its stdout and stderr go to one file rather than a pipe: the server writes its log lines
 * synchronously, so a line written before it answered a request is in the file when the answer
 * arrives, and a test that got the answer can assert what was logged (a pipe gives no such
 * order between the log and the socket).
 */
export async function startListening(
  bin: string,
  socket: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'vfu-server-output-'));
  const file = join(dir, 'output');
  const fd = openSync(file, 'a');
  const proc = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', fd, fd], env });
  closeSync(fd);
  let final: string | null = null;
  const output = () => final ?? readFileSync(file, 'utf8');
  const exited = new Promise<number | null>(resolve =>
    proc.once('exit', code => {
      final = readFileSync(file, 'utf8');
      rmSync(dir, { recursive: true, force: true });
      resolve(code);
    }),
  );
  // A bounded poll of the file: the process writes its listening line once it listens.
  for (const deadline = Date.now() + 10_000; ; await sleep(10)) {
    if (final !== null) throw new Error(`server exited (${proc.exitCode}):\n${output()}`);
    if (/listening on/.test(output()) && existsSync(socket)) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`server did not listen within 10 s:\n${output()}`);
    }
  }
  return {
    proc,
    socket,
    output,
    stop: () => {
      if (final === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}
