export type Outcome = 'completed' | 'cancelled' | 'failed';

export interface Report {
  outcome: Outcome;
  protocol: 'v1' | 'v2';
  /** What went wrong, and where each device was left. */
  error?: string;
  source: { state: string };
  destination: { state: string };
  bytes: number;
  precopyBytes: number;
  stopCopyBytes: number;
  iterations: number;
  /** From stopping the source to the destination running (ms). */
  downtimeMs: number;
  /**
   * Downtime parts: stopping the source and moving the rest; the destination loading and starting.
   */
  stopCopyMs: number;
  resumeMs: number;
  totalMs: number;
  /** Data-phase throughput, GiB/s. */
  throughputGiBps: number;
  /**
   * How the data left the source: 'splice' (v2, socket to socket in the kernel), 'mapping' (v1,
   * read from a mapping of the source's data window), or 'messages'.
   */
  dataPath: 'splice' | 'mapping' | 'messages';
  dirtyPagesReported: number;
  workloadWrites: number;
}

export interface Progress {
  phase: 'precopy' | 'stopcopy' | 'resume';
  iteration: number;
  bytes: number;
  pending: number;
}
