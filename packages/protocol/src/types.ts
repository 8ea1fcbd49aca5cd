// The typed messages of commands 2-18 (payloads, after the 16-byte header).
import type { Command, RegionCapId } from './constants.js';

export interface DmaMap {
  argsz: number;
  flags: number;
  offset: number;
  address: number;
  size: number;
}
export interface BitmapSpec {
  pgsize: number;
  size: number;
}
export interface DmaUnmap {
  argsz: number;
  flags: number;
  address: number;
  size: number;
  bitmap?: BitmapSpec;
}
export interface DmaUnmapReply extends DmaUnmap {
  bitmapData?: Uint8Array;
}
export interface DeviceInfo {
  argsz: number;
  flags: number;
  numRegions: number;
  numIrqs: number;
}
export interface RegionInfoRequest {
  argsz: number;
  index: number;
}
export type RegionCap =
  | { id: typeof RegionCapId.SPARSE_MMAP; areas: { offset: number; size: number }[] }
  | { id: typeof RegionCapId.TYPE; type: number; subtype: number };
export interface RegionInfo {
  argsz: number;
  flags: number;
  index: number;
  capOffset: number;
  size: number;
  offset: number;
  caps: RegionCap[];
}
export interface IoFdsRequest {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}
export interface IrqInfoRequest {
  argsz: number;
  index: number;
}
export interface IrqInfo {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}
export interface SetIrqs {
  argsz: number;
  flags: number;
  index: number;
  start: number;
  count: number;
  bools?: Uint8Array;
}
export interface RegionAccess {
  offset: number;
  region: number;
  count: number;
  data?: Uint8Array;
}
export interface DmaTransfer {
  address: number;
  count: number;
  data?: Uint8Array;
}
export interface DirtyRange {
  iova: number;
  size: number;
  pgsize: number;
  bitmapSize: number;
}
export interface DirtyPages {
  argsz: number;
  flags: number;
  range?: DirtyRange;
  bitmap?: Uint8Array;
}
export interface WriteMulti {
  writes: RegionAccess[];
}
export interface FeatureMessage {
  argsz: number;
  flags: number;
  data: Uint8Array;
}
export interface MigData {
  argsz: number;
  size: number;
  data?: Uint8Array;
}

/** A client's command, decoded. */
export type Request =
  | { cmd: Command.DMA_MAP; body: DmaMap }
  | { cmd: Command.DMA_UNMAP; body: DmaUnmap }
  | { cmd: Command.DEVICE_GET_INFO; body: { argsz: number } }
  | { cmd: Command.DEVICE_GET_REGION_INFO; body: RegionInfoRequest }
  | { cmd: Command.DEVICE_GET_REGION_IO_FDS; body: IoFdsRequest }
  | { cmd: Command.DEVICE_GET_IRQ_INFO; body: IrqInfoRequest }
  | { cmd: Command.DEVICE_SET_IRQS; body: SetIrqs }
  | { cmd: Command.REGION_READ; body: RegionAccess }
  | { cmd: Command.REGION_WRITE; body: RegionAccess }
  | { cmd: Command.DEVICE_RESET; body: Record<string, never> }
  | { cmd: Command.DIRTY_PAGES; body: DirtyPages }
  | { cmd: Command.REGION_WRITE_MULTI; body: WriteMulti }
  | { cmd: Command.DEVICE_FEATURE; body: FeatureMessage }
  | { cmd: Command.MIG_DATA_READ; body: MigData }
  | { cmd: Command.MIG_DATA_WRITE; body: MigData };
