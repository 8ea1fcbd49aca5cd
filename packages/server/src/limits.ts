import { Defaults } from '@vfu/protocol';

/** What the server advertises and enforces (protocol.md §2.3). */
export interface ServerLimits {
  maxMsgFds: number;
  maxDataXferSize: number;
  maxDmaMaps: number;
  pageSize: number;
  /** Largest message read: max_data_xfer_size plus the largest fixed part. */
  maxMessageSize: number;
}
export const defaultLimits: ServerLimits = {
  maxMsgFds: Defaults.maxMsgFds,
  maxDataXferSize: Defaults.maxDataXferSize,
  maxDmaMaps: Defaults.maxDmaMaps,
  pageSize: Defaults.pgsize,
  maxMessageSize: Defaults.maxMessageSize,
};
