// DEVICE_FEATURE data payloads (§6.4, §8.5, §8.8): the bytes after the 8-byte feature header.
import { Bytes } from './bytes.js';
import { einval, ProtocolError } from './errors.js';

export const featureData = {
  u64(v: number | bigint): Uint8Array {
    const b = Bytes.alloc(8);
    b.setU64(0, v);
    return b.u8;
  },
  migDeviceState(state: number, dataFd = 0xffffffff): Uint8Array {
    const b = Bytes.alloc(8);
    b.setU32(0, state);
    b.setU32(4, dataFd);
    return b.u8;
  },
  precopyInfo(initialBytes: number, dirtyBytes: number): Uint8Array {
    const b = Bytes.alloc(16);
    b.setU64(0, initialBytes);
    b.setU64(8, dirtyBytes);
    return b.u8;
  },
  loggingStart(pageSize: number, ranges: LogRange[]): Uint8Array {
    const b = Bytes.alloc(16 + 16 * ranges.length);
    b.setU64(0, pageSize);
    b.setU32(8, ranges.length);
    ranges.forEach((r, i) => {
      b.setU64(16 + 16 * i, r.iova);
      b.setU64(24 + 16 * i, r.length);
    });
    return b.u8;
  },
  loggingReport(iova: number, length: number, pageSize: number, bitmap?: Uint8Array): Uint8Array {
    const b = Bytes.alloc(24 + (bitmap?.length ?? 0));
    b.setU64(0, iova);
    b.setU64(8, length);
    b.setU64(16, pageSize);
    if (bitmap) b.u8.set(bitmap, 24);
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
    return d.length < 8
      ? einval(`${what}: 8 data bytes needed, got ${d.length}`)
      : new Bytes(d).u64(0);
  },
  migDeviceState(d: Uint8Array): { state: number; dataFd: number } | ProtocolError {
    if (d.length < 8) return einval(`MIG_DEVICE_STATE SET: 8 data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    return { state: b.u32(0), dataFd: b.u32(4) };
  },
  precopyInfo(d: Uint8Array): { initialBytes: number; dirtyBytes: number } | ProtocolError {
    if (d.length < 16) return einval('precopy info: 16 data bytes needed');
    const b = new Bytes(d);
    return { initialBytes: b.u64(0), dirtyBytes: b.u64(8) };
  },
  loggingStart(d: Uint8Array): LoggingStart | ProtocolError {
    if (d.length < 16) return einval(`DMA_LOGGING_START: 16 data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    const n = b.u32(8);
    if (n > MAX_LOG_RANGES)
      return new ProtocolError(
        7,
        `DMA_LOGGING_START with ${n} ranges, more than ${MAX_LOG_RANGES}`,
      );
    if (d.length < 16 + 16 * n)
      return einval(
        `DMA_LOGGING_START announces ${n} ranges but carries ${Math.floor((d.length - 16) / 16)}`,
      );
    return {
      pageSize: b.u64(0),
      ranges: Array.from({ length: n }, (_, i) => ({
        iova: b.u64(16 + 16 * i),
        length: b.u64(24 + 16 * i),
      })),
    };
  },
  loggingReport(d: Uint8Array): LoggingReport | ProtocolError {
    if (d.length < 24) return einval(`DMA_LOGGING_REPORT: 24 data bytes needed, got ${d.length}`);
    const b = new Bytes(d);
    return { iova: b.u64(0), length: b.u64(8), pageSize: b.u64(16) };
  },
};
