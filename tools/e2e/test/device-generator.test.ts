// `nx g @vfu/tools:device NAME` in a scratch copy of the workspace: the new model lives in its
// own folder (plus its registration), its generated test passes, it builds, and the real QEMU
// attaches to `vfio-user-server --device NAME` and reads the model's registers through qtest.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Qemu } from '@vfu/qemu-harness';
import { tempDir, workspaceStore } from './helpers.ts';

const workspace = resolve(import.meta.dirname, '../../..');
const scratch = tempDir('vfu-generator-');
const root = scratch.path('ws');
const MINUTES = 60_000;
const NEW_ID = 0x0c0ffee0;
let server: ChildProcess | undefined;

afterAll(() => {
  server?.kill('SIGKILL');
  scratch.cleanup();
});

// Plain output, and the scratch copy's test reports stay out of this run's report directory.
// The scratch copy sits in the temporary directory, perhaps on another file system: its offline
// installs must use the workspace's store, not the one pnpm would pick there.
const env = {
  ...process.env,
  NO_COLOR: '1',
  FORCE_COLOR: '0',
  VFU_REPORT_DIR: '',
  pnpm_config_store_dir: workspaceStore(workspace),
};

/** Runs a command in the scratch workspace; its output is in the error when it fails. */
function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: root, env, encoding: 'utf8', timeout: 10 * MINUTES });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The workspace's files as git sees them (tracked and new, not ignored): the scratch copy. */
function copyWorkspace(): void {
  const files = execFileSync(
    'git',
    ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    {
      cwd: workspace,
      encoding: 'utf8',
    },
  );
  for (const f of files.split('\0').filter(Boolean))
    if (existsSync(join(workspace, f)))
      cpSync(join(workspace, f), join(root, f), { preserveTimestamps: true });
}

/** Every file's contents, outside what installs and builds produce. */
function snapshot(dir = root, out = new Map<string, string>()): Map<string, string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (['node_modules', 'dist', '.nx'].includes(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) snapshot(p, out);
    else out.set(relative(root, p), readFileSync(p, 'utf8'));
  }
  return out;
}

/** Starts the scratch copy's server and resolves once it prints its listening line. */
function serve(socket: string): Promise<ChildProcess> {
  const bin = join(root, 'apps/vfio-user-server/bin/vfio-user-server.mjs');
  const proc = spawn(process.execPath, [bin, '--device', 'counter', '--socket', socket]);
  let out = '';
  return new Promise((ok, fail) => {
    proc.stderr.on('data', d => {
      out += d;
    });
    proc.stdout.on('data', d => {
      out += d;
      if (/counter listening on/.test(out)) ok(proc);
    });
    proc.once('exit', code => fail(new Error(`server exited (${code}):\n${out}`)));
  });
}

describe('nx g @vfu/tools:device', () => {
  let before: Map<string, string>;
  beforeAll(() => {
    copyWorkspace();
    sh('pnpm', ['install', '--offline', '--frozen-lockfile']);
    before = snapshot();
  }, 10 * MINUTES);

  it(
    'creates packages/devices/NAME and registers it: nothing else changes',
    () => {
      sh('pnpm', ['exec', 'nx', 'g', '@vfu/tools:device', 'counter']);
      const after = snapshot();
      const added = [...after.keys()].filter(f => !before.has(f)).sort();
      const changed = [...before.keys()].filter(f => after.get(f) !== before.get(f)).sort();
      expect(added).toEqual(
        [
          'README.md',
          'package.json',
          'src/index.ts',
          'test/counter.test.ts',
          'tsconfig.check.json',
          'tsconfig.json',
          'vitest.config.ts',
        ].map(f => `packages/devices/counter/${f}`),
      );
      // The registration: the app's dependency, and pnpm's record of the new package.
      expect(changed).toEqual(['apps/vfio-user-server/package.json', 'pnpm-lock.yaml']);
      const app = JSON.parse(after.get('apps/vfio-user-server/package.json')!);
      expect(app.dependencies['@vfu/device-counter']).toBe('workspace:*');
      expect(after.get('packages/devices/counter/src/index.ts')).toMatch(/id: 'counter'/);
      expect(() => sh('pnpm', ['exec', 'nx', 'g', '@vfu/tools:device', 'counter'])).toThrow(
        /packages\/devices\/counter exists already/,
      );
      expect(() => sh('pnpm', ['exec', 'nx', 'g', '@vfu/tools:device', 'Bad_Name'])).toThrow();
    },
    10 * MINUTES,
  );

  it(
    'a changed model builds, passes its generated test and lints clean',
    () => {
      const src = join(root, 'packages/devices/counter/src/index.ts');
      const text = readFileSync(src, 'utf8');
      writeFileSync(
        src,
        text.replace('COUNTER_ID = 0x7e3a0001', `COUNTER_ID = 0x${NEW_ID.toString(16)}`),
      );
      sh('pnpm', ['exec', 'nx', 'run-many', '-t', 'build', '--outputStyle=static']);
      const test = sh('pnpm', [
        'exec',
        'nx',
        'run',
        '@vfu/device-counter:test',
        '--outputStyle=static',
      ]);
      expect(test).toMatch(/Test Files +1 passed/); // and sh() throws on a failed one
      sh('pnpm', ['exec', 'nx', 'run', '@vfu/device-counter:typecheck', '--outputStyle=static']);
      sh('pnpm', ['exec', 'biome', 'ci', '--vcs-enabled=false', 'packages/devices/counter']);
    },
    10 * MINUTES,
  );

  it(
    'QEMU attaches to vfio-user-server --device counter and reads its registers',
    async () => {
      const socket = scratch.path('counter.sock');
      server = await serve(socket);
      const q = await Qemu.start({ devices: [{ socket, addr: '5.0' }] });
      try {
        const t = q.qtest,
          BAR0 = 0xfe000000;
        expect(await t.cfgRead32(5, 0)).toBe(0x01011b36);
        await t.cfgWrite32(5, 0x10, BAR0);
        await t.cfgWrite16(5, 4, 2); // memory decoding
        expect(await t.readl(BAR0)).toBe(NEW_ID);
        await t.writel(BAR0 + 4, 0x600dcafe);
        expect(await t.readl(BAR0 + 4)).toBe(0x600dcafe);
      } catch (e) {
        console.error(q.stderr());
        throw e;
      } finally {
        await q.quit();
        server.kill('SIGTERM');
      }
    },
    10 * MINUTES,
  );
});
