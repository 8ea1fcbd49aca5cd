import { parseArgs } from 'node:util';
import { VfioUserClient } from '@vfu/client';
import { migrate, type MigrateOptions } from './driver.js';
import { memoryWorkload } from './workload.js';
import type { Report, Progress } from './report.js';

const USAGE = `usage: vfu-migrate --source PATH --destination PATH [options]

  --protocol v2|v1          migration protocol (default v2: DEVICE_FEATURE + MIG_DATA_*)
  --downtime-limit MS       switch over once the rest fits in this downtime (default 300)
  --max-iterations N        at most N pre-copy rounds (default 30)
  --workload                dirty the source's device memory during pre-copy
  --cancel-after N          cancel after N pre-copy rounds (the source goes on running)
  --json                    print the report as JSON
  --no-progress             no progress bar

Run both servers with --on-disconnect keep, so that the destination keeps the migrated
device when this driver disconnects.`;

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

function bar(p: Progress): string {
  const w = 24,
    filled = p.pending ? Math.min(w, Math.round((w * p.bytes) / (p.bytes + p.pending))) : w;
  const gauge = '#'.repeat(filled) + '.'.repeat(w - filled);
  return `\r${p.phase.padEnd(8)} [${gauge}] ${mib(p.bytes)} round ${p.iteration}   `;
}

export function describe(r: Report): string {
  const lines = [
    `migration ${r.outcome} (${r.protocol})${r.error ? `: ${r.error}` : ''}`,
    `  moved      ${mib(r.bytes)} (pre-copy ${mib(r.precopyBytes)}, ` +
      `stop-copy ${mib(r.stopCopyBytes)}) in ${r.iterations} round(s)`,
    `  downtime   ${r.downtimeMs.toFixed(1)} ms (stop-copy ${r.stopCopyMs.toFixed(1)}, ` +
      `resume ${r.resumeMs.toFixed(1)}); total ${r.totalMs.toFixed(0)} ms; ` +
      `data phase ${r.throughputGiBps.toFixed(2)} GiB/s`,
    `  devices    source ${r.source.state}, destination ${r.destination.state}`,
  ];
  if (r.workloadWrites)
    lines.push(`  workload   ${r.workloadWrites} page writes on the source during pre-copy`);
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      options: {
        source: { type: 'string' },
        destination: { type: 'string' },
        protocol: { type: 'string' },
        'downtime-limit': { type: 'string' },
        'max-iterations': { type: 'string' },
        workload: { type: 'boolean' },
        'cancel-after': { type: 'string' },
        json: { type: 'boolean' },
        'no-progress': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`vfu-migrate: ${(e as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const num = (k: string) => {
    const x = v[k];
    if (x === undefined) return undefined;
    const n = Number(x);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${k} takes a number`);
    return n;
  };
  let opts: Pick<
    MigrateOptions,
    'protocol' | 'downtimeLimitMs' | 'maxIterations' | 'cancelAfterIterations'
  >;
  try {
    if (!v.source || !v.destination) throw new Error('--source and --destination are required');
    if (v.protocol && v.protocol !== 'v1' && v.protocol !== 'v2')
      throw new Error('--protocol must be v1 or v2');
    opts = {
      protocol: (v.protocol ?? 'v2') as 'v1' | 'v2',
      downtimeLimitMs: num('downtime-limit'),
      maxIterations: num('max-iterations'),
      cancelAfterIterations: num('cancel-after'),
    };
  } catch (e) {
    process.stderr.write(`vfu-migrate: ${(e as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  let src: VfioUserClient, dst: VfioUserClient;
  try {
    src = await VfioUserClient.connect(v.source as string);
    dst = await VfioUserClient.connect(v.destination as string);
  } catch (e) {
    process.stderr.write(`vfu-migrate: cannot connect: ${(e as Error).message}\n`);
    return 1;
  }
  const wl = v.workload ? await memoryWorkload(src) : null;
  const tty = process.stderr.isTTY && !v['no-progress'] && !v.json;
  const report = await migrate(src, dst, {
    ...opts,
    workload: wl?.round,
    onProgress: tty ? p => process.stderr.write(bar(p)) : undefined,
  });
  if (tty) process.stderr.write('\n');
  wl?.close();
  src.close();
  dst.close();
  process.stdout.write(`${v.json ? JSON.stringify(report, null, 2) : describe(report)}\n`);
  return report.outcome === 'completed' ? 0 : 1;
}
