// A device's identity beyond its model and state version: what a guest can see of it (BARs and
// their sizes and types, the ROM, memories, the config space's read-only identity, the
// capability list). Two devices whose identities differ are not the same device, whatever
// their model: a state must not move between them.

/** Named, printable facts: `{"BAR2": "mem32 1 MiB", ...}`. */
export type DeviceIdentity = Record<string, string>;

/** The first fact that differs, said as a user can act on it; null when they are the same. */
export function identityMismatch(stream: DeviceIdentity, here: DeviceIdentity): string | null {
  const keys = [...new Set([...Object.keys(stream), ...Object.keys(here)])].sort();
  for (const k of keys) {
    const a = stream[k] ?? 'absent',
      b = here[k] ?? 'absent';
    if (a !== b) return `${k} is ${a} in the stream but ${b} on this device`;
  }
  return null;
}

/** Reads an identity from its stream form (JSON); a message when it is not one. */
export function parseIdentity(text: string): DeviceIdentity | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'device identity in the stream header is not JSON';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return 'device identity in the stream header is not an object';
  const facts = Object.entries(v as Record<string, unknown>);
  if (facts.some(([, x]) => typeof x !== 'string'))
    return 'device identity in the stream header has a fact that is not a string';
  return v as DeviceIdentity;
}

/** A size as people write it: 1 MiB, 256 B, 4 KiB. */
export function sizeText(n: number): string {
  for (const [unit, s] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const)
    if (n >= s && n % s === 0) return `${n / s} ${unit}`;
  return `${n} B`;
}
