export { migrate, MigrationFailure, type MigrateOptions } from './driver.js';
export { memoryWorkload } from './workload.js';
export { describe, main } from './main.js';
export type { Report, Progress, Outcome } from './report.js';
