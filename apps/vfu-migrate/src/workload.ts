import type { VfioUserClient } from '@vfu/client';
import type { MappedMemory } from '@vfu/native';

/**
 * A workload for the source while pre-copy runs: writes random pages of the first mappable
 * region (through mmap, unseen by the server, as a guest's stores would be) and, for edu, a
 * register. Returns a function doing one round; it reports the pages written.
 */
export async function memoryWorkload(
  c: VfioUserClient,
  pagesPerRound = 64,
): Promise<{ round: () => Promise<number>; close(): void }> {
  const info = await c.deviceInfo();
  let map: MappedMemory | null = null,
    region = -1;
  for (let i = 0; i < Math.min(6, info.numRegions) && !map; i++) {
    try {
      map = await c.mapRegion(i);
      region = i;
    } catch {
      /* not mappable */
    }
  }
  let seq = 1;
  return {
    round: async () => {
      if (!map) return 0;
      const pages = map.length / 4096;
      for (let i = 0; i < pagesPerRound; i++) {
        const p = Math.floor(Math.random() * pages);
        const v = map.bytes(p * 4096, 8);
        new DataView(v.buffer, v.byteOffset, 8).setBigUint64(0, BigInt(seq++), true);
      }
      return pagesPerRound;
    },
    close: () => {
      map?.release();
      void region;
    },
  };
}
