import type { Report } from './report.js';

/** A report of nothing done yet: failed until something says otherwise. */
export function blankReport(protocol: 'v1' | 'v2', source: string): Report {
  return {
    outcome: 'failed',
    protocol,
    source: { state: source },
    destination: { state: '?' },
    bytes: 0,
    precopyBytes: 0,
    stopCopyBytes: 0,
    iterations: 0,
    downtimeMs: 0,
    stopCopyMs: 0,
    resumeMs: 0,
    totalMs: 0,
    throughputGiBps: 0,
    dataPath: 'messages',
    dirtyPagesReported: 0,
    workloadWrites: 0,
  };
}
