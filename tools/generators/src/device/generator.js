// `nx g @vfu/tools:device NAME`: a device model package made from packages/devices/template,
// with its test, registered with vfio-user-server (a dependency of the app: the server loads
// every @vfu/device-* package it depends on). Plain JavaScript: Nx loads it without a compiler.
import { execFileSync } from 'node:child_process';

const TEMPLATE = 'packages/devices/template';
const APP = 'apps/vfio-user-server/package.json';
const FILES = ['package.json', 'tsconfig.json', 'tsconfig.check.json', 'vitest.config.ts'];

/**
 * @typedef {{ name: string; skipInstall?: boolean }} Options
 * @typedef {{
 *   root: string;
 *   exists(path: string): boolean;
 *   read(path: string, encoding: 'utf-8'): string | null;
 *   write(path: string, content: string): void;
 * }} Tree
 */

/**
 * @param {Tree} tree
 * @param {Options} options
 */
export default function deviceGenerator(tree, options) {
  const name = checkName(tree, options.name);
  const dir = `packages/devices/${name}`;
  const constant = `${name.toUpperCase().replaceAll('-', '_')}_ID`;
  for (const file of FILES) tree.write(`${dir}/${file}`, read(tree, `${TEMPLATE}/${file}`));
  tree.write(`${dir}/package.json`, packageJson(read(tree, `${TEMPLATE}/package.json`), name));
  tree.write(`${dir}/src/index.ts`, model(read(tree, `${TEMPLATE}/src/index.ts`), name, constant));
  const test = read(tree, `${TEMPLATE}/test/template.test.ts`);
  tree.write(`${dir}/test/${name}.test.ts`, modelTest(test, name, constant));
  tree.write(`${dir}/README.md`, readme(name));
  register(tree, name);
  if (options.skipInstall) return undefined;
  return () => {
    const run = (/** @type {string[]} */ args) =>
      execFileSync('pnpm', args, { cwd: tree.root, stdio: 'inherit' });
    run(['exec', 'biome', 'format', '--write', dir]);
    // The new package changes the lockfile: say so, or pnpm refuses under CI=true, where
    // it freezes the lockfile by default.
    run(['install', '--offline', '--no-frozen-lockfile']);
  };
}

/**
 * @param {Tree} tree
 * @param {unknown} name
 */
function checkName(tree, name) {
  if (typeof name !== 'string' || !/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/.test(name))
    throw new Error(`device name ${String(name)}: lower-case letters, digits and dashes`);
  if (tree.exists(`packages/devices/${name}`))
    throw new Error(`packages/devices/${name} exists already`);
  return name;
}

/**
 * @param {Tree} tree
 * @param {string} path
 */
function read(tree, path) {
  const text = tree.read(path, 'utf-8');
  if (text === null) throw new Error(`${path} is missing: the generator copies the template`);
  return text;
}

/**
 * Replaces `from` by `to`, and fails loudly if the template no longer contains `from`.
 * @param {string} text
 * @param {string | RegExp} from
 * @param {string} to
 */
function change(text, from, to) {
  const found = typeof from === 'string' ? text.includes(from) : from.test(text);
  if (!found) throw new Error(`the template changed (no ${String(from)}): update this generator`);
  return typeof from === 'string' ? text.replaceAll(from, to) : text.replace(from, to);
}

/**
 * @param {string} text
 * @param {string} name
 */
function packageJson(text, name) {
  const pkg = JSON.parse(text);
  pkg.name = `@vfu/device-${name}`;
  pkg.description = `The ${name} device model for vfio-user-server.`;
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

/**
 * @param {string} text
 * @param {string} name
 * @param {string} constant
 */
function model(text, name, constant) {
  let out = change(text, /^(\/\/.*\n)+/, `// The ${name} device model, made from the template.\n`);
  out = change(out, "id: 'template'", `id: '${name}'`);
  return change(out, 'TEMPLATE_ID', constant);
}

/**
 * @param {string} text
 * @param {string} name
 * @param {string} constant
 */
function modelTest(text, name, constant) {
  let out = change(text, "describe('template device'", `describe('${name} device'`);
  out = change(out, 'TEMPLATE_ID', constant);
  return change(out, /\btemplate\b/g, 'model');
}

/** @param {string} name */
function readme(name) {
  return `# @vfu/device-${name}

The ${name} device model, made from the template: BAR 0 holds its registers (\`Reg\` in
src/index.ts), with INTx and one MSI vector. Its state is declared, so it migrates with no code of
its own. Change the PCI ids, the registers and the state; keep the test (test/${name}.test.ts,
written with \`@vfu/pci/testing\`) passing with \`pnpm exec nx run @vfu/device-${name}:test\`.

\`\`\`sh
pnpm exec nx run-many -t build && pnpm exec vfio-user-server --device ${name}
\`\`\`
`;
}

/**
 * The server serves every @vfu/device-* package it depends on.
 * @param {Tree} tree
 * @param {string} name
 */
function register(tree, name) {
  const app = JSON.parse(read(tree, APP));
  app.dependencies[`@vfu/device-${name}`] = 'workspace:*';
  tree.write(APP, `${JSON.stringify(app, null, 2)}\n`);
}
