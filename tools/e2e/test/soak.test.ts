// The soak runs of docs/robustness.md at small counts (the long ones are `pnpm soak`, by hand):
// a live server fed fuzzed sessions, sampled for RSS and fds, and connect/disconnect cycles.
import { describe, it, expect } from 'vitest';
import { fuzzServer } from '../soak/fuzz.ts';
import { connectCycles } from '../soak/cycles.ts';
import { soakServerForSuite } from './helpers.ts';

describe('soak runs, small counts', () => {
  const live = soakServerForSuite();

  it('fuzz: 20,000 valid and mutated messages; the server answers and serves on', async () => {
    const rep = await fuzzServer(live.server, { messages: 20_000, seed: 1 });
    expect(rep.messages).toBe(20_000);
    expect(rep.valid).toBeGreaterThan(5_000);
    expect(rep.mutated).toBeGreaterThan(5_000);
    expect(rep.withFd).toBeGreaterThan(0);
    expect(rep.checks).toBeGreaterThan(1);
    // Framed messages are answered: at least a 16-byte header back for most of them.
    expect(rep.replyBytes).toBeGreaterThan(16 * (rep.messages / 2));
    expect(live.server.exit).toBeNull();
  });

  it('memory: samples taken with the server idle show its fds at the baseline', async () => {
    const rep = await fuzzServer(live.server, { messages: 30_000, seed: 7, sampleEvery: 10_000 });
    expect(rep.samples.length).toBe(3);
    for (const s of rep.samples) expect(s.fds).toBe(live.server.baselineFds);
  });

  it('cycles: 500 connect/negotiate/disconnect cycles leave the fds at the baseline', async () => {
    const rep = await connectCycles(live.server, 500, 100);
    expect(rep.cycles).toBe(500);
    expect(rep.samples.map(s => s.fds)).toEqual(Array(5).fill(live.server.baselineFds));
  });
});
