// `--device ./path/to/model.js`: a device model from outside the workspace, a module whose
// default export is a defineDevice(...) definition. It is loaded before the arguments are
// parsed (its options become command-line options) and served under its id.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { DeviceDefinition } from '@vfu/pci';

// A model's definition is typed by its own state schema; tables of models need the common shape.
// biome-ignore lint/suspicious/noExplicitAny: the schemas differ per model (contravariance)
export type AnyDefinition = DeviceDefinition<any>;

export class ModelFileError extends Error {
  override readonly name = 'ModelFileError';
}

/** Why `def` is not a device definition, or null when it is one. */
export function definitionProblem(def: unknown): string | null {
  if (typeof def !== 'object' || def === null) return `the default export is ${typeOf(def)}`;
  const d = def as Record<string, unknown>;
  if (typeof d.id !== 'string' || !d.id) return 'the default export has no string id';
  if (!Number.isInteger(d.version)) return `model ${d.id} has no integer version`;
  const pci = d.pci as Record<string, unknown> | undefined;
  if (typeof pci?.vendor !== 'number' || typeof pci.device !== 'number')
    return `model ${d.id} has no pci.vendor and pci.device`;
  if (typeof d.state !== 'object' || d.state === null) return `model ${d.id} declares no state`;
  if (typeof d.bars !== 'function') return `model ${d.id} has no bars function`;
  return null;
}

const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

/** A --device value naming a file rather than a built-in model. */
const isModelPath = (device: string) => device.includes('/') || /\.[cm]?js$/.test(device);

async function loadModelFile(path: string): Promise<AnyDefinition> {
  const file = resolve(path);
  if (!existsSync(file) || !statSync(file).isFile())
    throw new ModelFileError(`device model ${file}: no such file`);
  let mod: { default?: unknown };
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    throw new ModelFileError(`device model ${file} does not load: ${(e as Error).message}`);
  }
  const problem = definitionProblem(mod.default);
  if (problem)
    throw new ModelFileError(
      `device model ${file}: ${problem}; export default defineDevice({...}) from @vfu/pci`,
    );
  return mod.default as AnyDefinition;
}

/**
 * When --device names a file, loads it into `devices` under its id and returns the arguments
 * with the path replaced by that id; otherwise returns them unchanged.
 */
export async function withModelFile(
  argv: string[],
  devices: Record<string, AnyDefinition>,
): Promise<string[]> {
  const at = argv.findIndex(a => a === '--device' || a.startsWith('--device='));
  if (at < 0) return argv;
  const inline = argv[at].startsWith('--device=');
  const value = inline ? argv[at].slice('--device='.length) : argv[at + 1];
  if (value === undefined || !isModelPath(value)) return argv;
  const def = await loadModelFile(value);
  if (devices[def.id])
    throw new ModelFileError(`device model ${value}: its id ${def.id} is a built-in model's name`);
  devices[def.id] = def;
  const out = [...argv];
  out.splice(at, inline ? 1 : 2, '--device', def.id);
  return out;
}
