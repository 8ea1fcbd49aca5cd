// What a guest sees of a device, as the two halves compare it before any state moves: two
// devices that differ here are not the same device, whatever their model says.
import type { VfioUserClient } from '@vfu/client';

export type Identity = Record<string, string>;

export async function deviceIdentity(c: VfioUserClient): Promise<Identity> {
  const info = await c.deviceInfo();
  const id: Identity = { regions: `${info.numRegions}`, irqs: `${info.numIrqs}` };
  for (let i = 0; i < info.numRegions; i++) {
    const r = await c.regionInfo(i);
    r.fd?.close();
    if (r.size) id[`region ${i}`] = `${r.size} bytes, flags 0x${r.flags.toString(16)}`;
  }
  return id;
}

/** The first fact that differs, as a user reads it; null when they are the same device. */
export function identityDiff(here: Identity, there: Identity): string | null {
  for (const k of [...new Set([...Object.keys(here), ...Object.keys(there)])].sort()) {
    const a = here[k] ?? 'absent',
      b = there[k] ?? 'absent';
    if (a !== b) return `${k}: ${a} on the source, ${b} on the destination`;
  }
  return null;
}
