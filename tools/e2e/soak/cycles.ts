// Connect, negotiate (VERSION), read a register, disconnect: many times over, each cycle waiting
// for the server to let the client go, with the server's open-fd count sampled as it goes.
import { VfioUserClient } from '@vfu/client';
import { Reg } from '@vfu/device-edu';
import type { SoakServer } from './server.ts';

export interface CyclesReport {
  cycles: number;
  baselineFds: number;
  /** Server fds with no client, sampled every `sampleEvery` cycles (and at the end). */
  samples: { cycles: number; fds: number; rssKiB: number }[];
  seconds: number;
}

export async function connectCycles(
  server: SoakServer,
  cycles: number,
  sampleEvery = 1000,
  progress?: (line: string) => void,
): Promise<CyclesReport> {
  const rep: CyclesReport = { cycles: 0, baselineFds: server.baselineFds, samples: [], seconds: 0 };
  const start = Date.now();
  while (rep.cycles < cycles) {
    const c = await VfioUserClient.connect(server.socket, { timeoutMs: 10_000 });
    await c.read32(0, Reg.ID);
    c.close();
    await server.idle();
    rep.cycles++;
    if (rep.cycles % sampleEvery === 0 || rep.cycles === cycles) {
      rep.samples.push({ cycles: rep.cycles, fds: server.fds(), rssKiB: server.rssKiB() });
      progress?.(`${rep.cycles} cycles, server fds ${server.fds()} (baseline ${rep.baselineFds})`);
    }
  }
  rep.seconds = (Date.now() - start) / 1000;
  return rep;
}
