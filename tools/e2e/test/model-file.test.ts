// `vfio-user-server --device ./model.js`: a device model from outside the workspace, served over
// a real socket; a missing file or a module that is no device model is a clear error.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { startServer } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { Region } from '@vfu/protocol';
import { tempDir } from './helpers.ts';

const req = createRequire(import.meta.url);
const serverBin = req.resolve('@vfu/vfio-user-server/bin/vfio-user-server.mjs');
const tmp = tempDir('vfu-model-');
const LIMIT = 300_000; // a busy machine is slow; the test is about what happens, not when
afterAll(() => tmp.cleanup());

// The model's folder sees @vfu/pci as an installed package would be (a link to the workspace's).
beforeAll(() => {
  mkdirSync(tmp.path('node_modules/@vfu'), { recursive: true });
  symlinkSync(dirname(dirname(req.resolve('@vfu/pci'))), tmp.path('node_modules/@vfu/pci'));
});

const MODEL = `import { defineDevice, bar, registers, u32 } from '@vfu/pci';
export default defineDevice({
  id: 'outside',
  version: 1,
  description: 'a model from outside the workspace',
  options: { magic: { description: 'what register 0 reads', default: '7' } },
  pci: { vendor: 0x1b36, device: 0x01fe, classCode: 0xff0000 },
  state: { scratch: u32 },
  bars: (dev, o) => ({
    0: bar('mem32', registers(4096, dev.state, [
      { offset: 0, width: 4, read: () => Number(o.magic) },
      { offset: 4, width: 4, read: s => s.scratch, write: (s, v) => { s.scratch = Number(v); } },
    ])),
  }),
});
`;
const file = (name: string, text: string) => {
  writeFileSync(tmp.path(name), text);
  return tmp.path(name);
};
const run = (args: string[]) =>
  spawnSync(process.execPath, [serverBin, ...args], {
    encoding: 'utf8',
    timeout: LIMIT,
    cwd: tmp.dir,
  });
const u32le = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);

describe('vfio-user-server --device FILE', { timeout: LIMIT }, () => {
  it('serves the model a file exports, with its own options, under its id', async () => {
    const model = file('model.mjs', MODEL);
    const server = await startServer(tmp.path('outside.sock'), [
      '--device',
      model,
      '--magic',
      '42',
    ]);
    const c = await VfioUserClient.connect(server.socket);
    try {
      expect(server.output()).toMatch(/outside listening on/);
      expect(u32le(await c.regionRead(Region.CONFIG, 0, 4))).toBe(0x01fe1b36);
      expect(u32le(await c.regionRead(Region.BAR0, 0, 4))).toBe(42);
      await c.regionWrite(Region.BAR0, 4, Uint8Array.of(1, 2, 3, 4));
      expect(u32le(await c.regionRead(Region.BAR0, 4, 4))).toBe(0x04030201);
    } finally {
      c.close();
      expect(await server.stop()).toBe(0);
    }
  });

  it('takes a path relative to the working directory, and --device=PATH', async () => {
    file('relative.mjs', MODEL);
    const socket = tmp.path('relative.sock');
    const r = run(['--device=./relative.mjs', '--socket', socket, '--magic', 'x', '--bogus']);
    // The model loaded: its option was accepted and the unknown one is what is refused.
    expect(r.stderr).toMatch(/Unknown option '--bogus'/);
    expect(r.status).toBe(2);
  });

  it('a missing file: exit code 2 and the path that is missing', () => {
    const r = run(['--device', './nowhere/model.js']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`device model ${join(tmp.dir, 'nowhere/model.js')}: no such file`);
  });

  it('a module that is no device model: exit code 2 and what it exports instead', () => {
    const cases: [string, string, RegExp][] = [
      ['number.mjs', 'export default 42;\n', /the default export is number/],
      ['none.mjs', 'export const x = 1;\n', /the default export is undefined/],
      [
        'nobars.mjs',
        "export default { id: 'a', version: 1, pci: { vendor: 1, device: 2 }, state: {} };\n",
        /model a has no bars function/,
      ],
      ['broken.mjs', 'export default {\n', /does not load: /],
    ];
    for (const [name, text, message] of cases) {
      const r = run(['--device', file(name, text)]);
      expect(r.status, name).toBe(2);
      expect(r.stderr, name).toMatch(message);
      expect(r.stderr, name).toMatch(/export default defineDevice|does not load/);
    }
  });

  it('refuses a model whose id is a built-in model name', () => {
    const r = run(['--device', file('edu.mjs', MODEL.replace("id: 'outside'", "id: 'edu'"))]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/its id edu is a built-in model's name/);
  });
});
