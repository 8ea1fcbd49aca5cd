// Device models this server can emulate, by --device name: every @vfu/device-* package the app
// depends on (package.json), so adding a model adds no code here (`nx g @vfu/tools:device NAME`
// adds the dependency).
import { readFileSync } from 'node:fs';
import { definitionProblem, type AnyDefinition } from './model-file.js';

const manifest = new URL('../package.json', import.meta.url);

/** The model packages named in the app's package.json, in name order. */
function modelPackages(): string[] {
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { dependencies?: object };
  return Object.keys(pkg.dependencies ?? {})
    .filter(name => name.startsWith('@vfu/device-'))
    .sort();
}

async function loadPackage(name: string): Promise<[string, AnyDefinition]> {
  const def = ((await import(name)) as { default?: unknown }).default;
  const problem = definitionProblem(def);
  if (problem) throw new Error(`${name}: ${problem}`);
  return [(def as AnyDefinition).id, def as AnyDefinition];
}

async function loadAll(): Promise<Record<string, AnyDefinition>> {
  const table: Record<string, AnyDefinition> = {};
  for (const [id, def] of await Promise.all(modelPackages().map(loadPackage))) {
    if (table[id]) throw new Error(`two device packages define the model ${id}`);
    table[id] = def;
  }
  return table;
}

export const devices: Record<string, AnyDefinition> = await loadAll();
export const defaultDevice = 'edu';
