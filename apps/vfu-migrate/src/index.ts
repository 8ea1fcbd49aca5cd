export { migrate, MigrationFailure, type MigrateOptions } from './driver.js';
export { memoryWorkload } from './workload.js';
export { describe, main } from './main.js';
export type { Report, Progress, Outcome } from './report.js';
export { send, type SendOptions } from './send.js';
export { receive, type ReceiveOptions, type ReceiveReport } from './receive.js';
export { save, restore, FileDestination, type SaveOptions } from './snapshot.js';
export { inspectFile, describeStream, type StreamSummary } from './inspect.js';
export { LocalDestination, SwitchoverInDoubt, type Destination } from './destination.js';
