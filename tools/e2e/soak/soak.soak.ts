// The long robustness runs of docs/robustness.md, run by hand (`pnpm soak`); each prints its
// figures. Counts come from the environment:
//   VFU_SOAK=fuzz|memory|cycles|all   which run (default all)
//   VFU_SOAK_MESSAGES=10000000        messages for the fuzz run
//   VFU_SOAK_MEMORY_MESSAGES=1000000  messages for the memory run (sampled every 100,000)
//   VFU_SOAK_CYCLES=10000             connect/negotiate/disconnect cycles
//   VFU_SOAK_SEED=1                   the generator's seed (a failing run repeats with it)
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoakServer } from './server.ts';
import { fuzzServer } from './fuzz.ts';
import { connectCycles } from './cycles.ts';
import { describeCycles, describeFuzz, describeMemory, RSS_SPREAD_BOUND_MIB } from './report.ts';

const which = process.env.VFU_SOAK ?? 'all';
const num = (k: string, d: number) => Number(process.env[k] ?? d);
const seed = num('VFU_SOAK_SEED', 1);
const say = (l: string) => console.log(`[soak] ${l}`);
const run = (name: string) => (which === 'all' || which === name ? it : it.skip);

describe('soak', () => {
  let dir: string;
  let server: SoakServer;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vfu-soak-'));
    server = await SoakServer.start(join(dir, 'edu.sock'));
  });
  afterEach(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  run('fuzz')('fuzz: a live server fed codec-valid and mutated messages', async () => {
    const messages = num('VFU_SOAK_MESSAGES', 10_000_000);
    const rep = await fuzzServer(server, { messages, seed, sampleEvery: 500_000, progress: say });
    for (const l of describeFuzz(rep, seed)) say(l);
    expect(server.exit).toBeNull();
  });

  run('memory')('memory: RSS and open fds sampled every 100,000 messages', async () => {
    const messages = num('VFU_SOAK_MEMORY_MESSAGES', 1_000_000);
    const rep = await fuzzServer(server, { messages, seed, sampleEvery: 100_000, progress: say });
    const { lines, held } = describeMemory(rep, server.baselineFds);
    for (const l of lines) say(l);
    expect(held, `RSS within ${RSS_SPREAD_BOUND_MIB} MiB, fds at the baseline`).toBe(true);
  });

  run('cycles')('cycles: connect, negotiate, disconnect', async () => {
    const rep = await connectCycles(server, num('VFU_SOAK_CYCLES', 10_000), 1000, say);
    for (const l of describeCycles(rep)) say(l);
    expect(rep.samples.every(s => s.fds === rep.baselineFds)).toBe(true);
  });
});
