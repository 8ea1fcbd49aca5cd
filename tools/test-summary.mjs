// Sums vitest JSON reports: prints each failed test and the closing "N passed, N failed" line.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const files = [];
const walk = d => {
  for (const f of readdirSync(d)) {
    const p = join(d, f);
    statSync(p).isDirectory() ? walk(p) : f.endsWith('.json') && files.push(p);
  }
};
walk(process.argv[2]);
let passed = 0,
  failed = 0,
  skipped = 0;
for (const f of files) {
  const r = JSON.parse(readFileSync(f, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
  for (const t of r.testResults)
    for (const a of t.assertionResults)
      if (a.status === 'failed') console.log(`FAILED ${a.fullName}`);
}
console.log(`projects: ${files.length}`);
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
