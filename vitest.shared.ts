// Shared vitest settings: run from TypeScript sources through the '@vfu/source' export condition.
import { defineConfig } from 'vitest/config';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// With VFU_REPORT_DIR set, each package also writes a JSON report that tools/run-tests.sh sums up.
const report = () => {
  const dir = process.env.VFU_REPORT_DIR;
  if (!dir) return ['default'];
  const name = JSON.parse(readFileSync('package.json', 'utf8')).name as string;
  return ['default', ['json', { outputFile: join(dir, `${name}.json`) }]];
};

export const vfuVitest = (overrides: { testTimeout?: number; include?: string[] } = {}) =>
  defineConfig({
    resolve: { conditions: ['@vfu/source'] },
    ssr: { resolve: { conditions: ['@vfu/source'] } },
    test: {
      pool: 'forks',
      testTimeout: overrides.testTimeout ?? 20_000,
      hookTimeout: 60_000,
      include: overrides.include ?? ['test/**/*.test.ts'],
      reporters: report() as never,
    },
  });
