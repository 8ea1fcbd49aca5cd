// Runs `vfio-user-server` as a real separate process, for tests and the demo.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';

export interface ServerProcess {
  proc: ChildProcess;
  socket: string;
  output: () => string;
  stop(): Promise<number | null>;
}

/** Starts the server with `args` (plus --socket) and resolves once it prints its listening line. */
export async function startServer(
  socket: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServerProcess> {
  const bin = createRequire(import.meta.url).resolve(
    '@vfu/vfio-user-server/bin/vfio-user-server.mjs',
  );
  const proc = spawn(process.execPath, [bin, '--socket', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  proc.stdout!.on('data', d => {
    out += d;
  });
  proc.stderr!.on('data', d => {
    out += d;
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`server did not listen within 10 s:\n${out}`)),
      10000,
    );
    const check = () => {
      if (/listening on/.test(out) && existsSync(socket)) {
        clearTimeout(t);
        resolve();
      }
    };
    proc.stdout!.on('data', check);
    proc.once('exit', c => {
      clearTimeout(t);
      reject(new Error(`server exited (${c}):\n${out}`));
    });
  });
  return {
    proc,
    socket,
    output: () => out,
    stop: () =>
      new Promise(r => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r(proc.exitCode);
        proc.once('exit', c => r(c));
        proc.kill('SIGTERM');
      }),
  };
}
