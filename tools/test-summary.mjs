// Sums vitest JSON reports: prints each failed test or file with the first lines of its error
// (CI shows only the end of the output), then the closing "N passed, N failed" line.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { stripVTControlCharacters } from 'node:util';

const ERROR_LINES = 6;

function reports(dir, found = []) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) reports(path, found);
    else if (name.endsWith('.json')) found.push(path);
  }
  return found;
}

/** An error's first line and its last lines (where a failed command's output ends), no stack. */
function excerpt(message) {
  const plain = stripVTControlCharacters(String(message ?? ''));
  const lines = plain.split('\n').filter(line => line.trim() !== '' && !/^\s+at /.test(line));
  const shown =
    lines.length > ERROR_LINES ? [lines[0], '...', ...lines.slice(1 - ERROR_LINES)] : lines;
  return shown.map(line => `    ${line.slice(0, 200)}`).join('\n');
}

let passed = 0;
let failed = 0;
let skipped = 0;
let failedFiles = 0;
const files = reports(process.argv[2]);
for (const file of files) {
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + (report.numTodoTests ?? 0);
  for (const result of report.testResults) {
    const failures = result.assertionResults.filter(a => a.status === 'failed');
    for (const a of failures) console.log(`FAILED ${a.fullName}\n${excerpt(a.failureMessages[0])}`);
    // A file that fails outside its tests (an import, a beforeAll) reports its tests skipped.
    if (result.status === 'failed' && failures.length === 0) {
      failedFiles++;
      const why =
        excerpt(result.message) || '    (a hook or an import: its error is printed above)';
      console.log(`FAILED ${relative(process.cwd(), result.name)}\n${why}`);
    }
  }
}
const skippedNote = skipped ? `, ${skipped} skipped` : '';
const failedFilesNote = failedFiles ? `, ${failedFiles} files failed outside their tests` : '';
console.log(`projects: ${files.length}`);
console.log(`tests: ${passed} passed, ${failed} failed${skippedNote}${failedFilesNote}`);
process.exit(failed > 0 || failedFiles > 0 || files.length === 0 ? 1 : 0);
