// DEVICE_FEATURE data payloads (§6.4, §8.5, §8.8): the bytes after the 8-byte feature header.
import { Bytes } from './bytes.js';
import { Errno } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import * as Layout from './layout.js';

const { FeatureMigState, FeaturePrecopyInfo, FeatureLoggingStart, DmaLoggingRange } = Layout;
const { FeatureLoggingReport, FeatureMigration } = Layout;

export const featureData = {
  /** A u64 datum (MIGRATION's flags, MIG_DATA_SIZE's size); bigint for values above 2^53. */
  u64(v: number | bigint): Uint8Array {
    const b = Bytes.alloc(FeatureMigration.SIZE);
    b.setU64(FeatureMigration.flags.at, v);
    return b.u8;
  },
  migDeviceState(state: number, dataFd = 0xffffffff): Uint8Array {
    const b = Bytes.alloc(FeatureMigState.SIZE);
    b.set(FeatureMigState.deviceState, state);
    b.set(FeatureMigState.dataFd, dataFd);
    return b.u8;
  },
  precopyInfo(initialBytes: number, dirtyBytes: number): Uint8Array {
    const b = Bytes.alloc(FeaturePrecopyInfo.SIZE);
    b.set(FeaturePrecopyInfo.initialBytes, initialBytes);
    b.set(FeaturePrecopyInfo.dirtyBytes, dirtyBytes);
    return b.u8;
  },
  loggingStart(pageSize: number, ranges: LogRange[]): Uint8Array {
    const b = Bytes.alloc(FeatureLoggingStart.SIZE + DmaLoggingRange.SIZE * ranges.length);
    b.set(FeatureLoggingStart.pageSize, pageSize);
    b.set(FeatureLoggingStart.numRanges, ranges.length);
    ranges.forEach((r, i) => {
      const at = FeatureLoggingStart.SIZE + DmaLoggingRange.SIZE * i;
      b.setAt(at, DmaLoggingRange.iova, r.iova);
      b.setAt(at, DmaLoggingRange.length, r.length);
    });
    return b.u8;
  },
  loggingReport(iova: number, length: number, pageSize: number, bitmap?: Uint8Array): Uint8Array {
    const L = FeatureLoggingReport;
    const b = Bytes.alloc(L.SIZE + (bitmap?.length ?? 0));
    b.set(L.iova, iova);
    b.set(L.length, length);
    b.set(L.pageSize, pageSize);
    if (bitmap) b.u8.set(bitmap, L.SIZE);
    return b.u8;
  },
};

export interface LogRange {
  iova: number;
  length: number;
}
export interface LoggingStart {
  pageSize: number;
  ranges: LogRange[];
}
export interface LoggingReport {
  iova: number;
  length: number;
  pageSize: number;
}

/** At most PAGE_SIZE / 16 ranges, as the kernel allows (§6.4). */
export const MAX_LOG_RANGES = 256;

export const decodeFeatureData = {
  u64(d: Uint8Array, what: string): number | ProtocolError {
    const n = FeatureMigration.SIZE;
    return d.length < n
      ? einval(`${what}: ${n} data bytes needed, got ${d.length}`)
      : new Bytes(d).get(FeatureMigration.flags);
  },
  migDeviceState(d: Uint8Array): { state: number; dataFd: number } | ProtocolError {
    const L = FeatureMigState;
    if (d.length < L.SIZE)
      return einval(`MIG_DEVICE_STATE SET: ${L.SIZE} data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    return { state: b.get(L.deviceState), dataFd: b.get(L.dataFd) };
  },
  precopyInfo(d: Uint8Array): { initialBytes: number; dirtyBytes: number } | ProtocolError {
    const L = FeaturePrecopyInfo;
    if (d.length < L.SIZE) return einval(`precopy info: ${L.SIZE} data bytes needed`);
    const b = new Bytes(d);
    return { initialBytes: b.get(L.initialBytes), dirtyBytes: b.get(L.dirtyBytes) };
  },
  loggingStart(d: Uint8Array): LoggingStart | ProtocolError {
    const L = FeatureLoggingStart;
    if (d.length < L.SIZE)
      return einval(`DMA_LOGGING_START: ${L.SIZE} data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    const n = b.get(L.numRanges);
    if (n > MAX_LOG_RANGES) {
      const why = `DMA_LOGGING_START with ${n} ranges, more than ${MAX_LOG_RANGES}`;
      return new ProtocolError(Errno.E2BIG, why);
    }
    const room = Math.floor((d.length - L.SIZE) / DmaLoggingRange.SIZE);
    if (n > room) return einval(`DMA_LOGGING_START announces ${n} ranges but carries ${room}`);
    const rangeAt = (i: number) => L.SIZE + DmaLoggingRange.SIZE * i;
    return {
      pageSize: b.get(L.pageSize),
      ranges: Array.from({ length: n }, (_, i) => ({
        iova: b.getAt(rangeAt(i), DmaLoggingRange.iova),
        length: b.getAt(rangeAt(i), DmaLoggingRange.length),
      })),
    };
  },
  loggingReport(d: Uint8Array): LoggingReport | ProtocolError {
    const L = FeatureLoggingReport;
    if (d.length < L.SIZE)
      return einval(`DMA_LOGGING_REPORT: ${L.SIZE} data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    return { iova: b.get(L.iova), length: b.get(L.length), pageSize: b.get(L.pageSize) };
  },
};
