// The kit outside this workspace: @vfu/pci and what it needs, packed with `pnpm pack`, installed
// from the tarballs into a project under the system's temporary directory with no network (pnpm
// --offline, registry unreachable: koffi comes from the local store), and a device defined there
// runs in the test harness, from JavaScript and type-checked from TypeScript.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tempDir, workspaceStore } from './helpers.ts';

const workspace = resolve(import.meta.dirname, '../../..');
const KIT = ['native', 'protocol', 'stream', 'pci'];
const LIMIT = 300_000; // a busy machine is slow; the test is about what happens, not when
const tmp = tempDir('vfu-pack-');
const project = tmp.path('project');
const tarball = (name: string) => tmp.path(`vfu-${name}-0.1.0.tgz`);
afterAll(() => tmp.cleanup());

// No registry: anything not in the workspace's store fails the install instead of downloading.
const env = {
  ...process.env,
  npm_config_registry: 'http://127.0.0.1:9/',
  NO_COLOR: '1',
  pnpm_config_store_dir: workspaceStore(workspace),
};

function sh(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: LIMIT });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const MODEL = `import { defineDevice, bar, registers, u32 } from '@vfu/pci';
import { DeviceHarness } from '@vfu/pci/testing';

const model = defineDevice({
  id: 'outside',
  version: 1,
  description: 'a model in a project of its own',
  pci: { vendor: 0x1b36, device: 0x01fe, classCode: 0xff0000, pin: 1 },
  state: { n: u32 },
  bars: dev => ({
    0: bar('mem32', registers(4096, dev.state, [
      {
        offset: 0,
        width: 4,
        read: s => s.n + 0x100,
        write: (s, v) => {
          s.n = Number(v);
          dev.irq.raise();
        },
      },
      { offset: 4, width: 4, write: () => dev.irq.lower() },
    ])),
  }),
});
const h = new DeviceHarness(model);
h.bar(0).write32(0, 5);
h.bar(0).write32(4, 1);
const copy = h.migrate();
console.log(JSON.stringify({
  register: h.bar(0).read32(0),
  vendor: h.config.read16(0),
  intx: h.irqs.intx,
  differences: h.differences(copy),
}));
h.release();
copy.release();
`;

const TYPED = `import { defineDevice, bar, registers, u32 } from '@vfu/pci';
import { DeviceHarness } from '@vfu/pci/testing';

const model = defineDevice({
  id: 'typed',
  version: 1,
  description: 'type-checked against the installed declarations',
  pci: { vendor: 1, device: 2, classCode: 0 },
  state: { n: u32 },
  bars: dev => ({ 0: bar('mem32', registers(4096, dev.state, [{ offset: 0, width: 4 }])) }),
});
export const n: number = new DeviceHarness(model).state.n;
`;

describe('the kit, packed and installed outside the workspace', { timeout: LIMIT }, () => {
  beforeAll(() => {
    for (const name of KIT)
      sh('pnpm', ['pack', '--pack-destination', tmp.dir], join(workspace, 'packages', name));
    sh('mkdir', ['-p', project], tmp.dir);
    const dependencies = { '@vfu/pci': `file:${tarball('pci')}` };
    const devDependencies = { '@types/node': '20.19.43' };
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'outside',
        private: true,
        type: 'module',
        dependencies,
        devDependencies,
      }),
    );
    // pci's dependencies name versions; here they come from the tarballs. koffi ships prebuilt.
    const overrides = ['native', 'protocol', 'stream'].map(
      n => `  "@vfu/${n}": "file:${tarball(n)}"`,
    );
    const settings = ['overrides:', ...overrides, 'allowBuilds:', '  koffi: false', ''];
    writeFileSync(join(project, 'pnpm-workspace.yaml'), settings.join('\n'));
    sh('pnpm', ['install', '--offline'], project);
  }, LIMIT);

  it('the tarballs hold the built code and sources, no tests, and name no workspace', () => {
    for (const name of KIT) {
      const files = sh('tar', ['tzf', tarball(name)], tmp.dir).split('\n');
      expect(files, name).toContain('package/dist/index.js');
      expect(files, name).toContain('package/dist/index.d.ts');
      expect(files, name).toContain('package/LICENSE');
      expect(
        files.filter(f => /\/test\/|tsbuildinfo|node_modules/.test(f)),
        name,
      ).toEqual([]);
      const pkg = JSON.parse(sh('tar', ['xzOf', tarball(name), 'package/package.json'], tmp.dir));
      expect(pkg.license, name).toBe('MIT');
      expect(pkg.private, name).toBeUndefined();
      expect(JSON.stringify(pkg), name).not.toMatch(/workspace:|@vfu\/source/);
    }
  });

  it('runs a device defined there in the harness: a register, INTx and a migration', () => {
    writeFileSync(join(project, 'device.mjs'), MODEL);
    const out = JSON.parse(sh(process.execPath, ['device.mjs'], project));
    expect(out).toEqual({ register: 0x105, vendor: 0x1b36, intx: 1, differences: [] });
  });

  it('type-checks a TypeScript model against the installed declarations', () => {
    writeFileSync(join(project, 'model.ts'), TYPED);
    const compilerOptions = {
      module: 'NodeNext',
      target: 'ES2022',
      strict: true,
      noEmit: true,
      types: ['node'],
    };
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions, files: ['model.ts'] }),
    );
    sh(join(workspace, 'node_modules/.bin/tsc'), ['-p', '.'], project);
    writeFileSync(join(project, 'model.ts'), TYPED.replace('state: { n: u32 }', 'state: { n: 3 }'));
    expect(() => sh(join(workspace, 'node_modules/.bin/tsc'), ['-p', '.'], project)).toThrow(
      /model\.ts/,
    );
  });
});
