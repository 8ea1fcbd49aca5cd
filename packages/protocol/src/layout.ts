// Every message body's layout, declared once: each field's byte offset and width, as
// vfio-user.rst lays out its structs (most of them mirror linux/vfio.h). Offsets are from the
// start of the payload, after the 16-byte header; `SIZE` is the fixed part, and data that
// follows a body starts there. decode.ts, encode.ts, replies.ts, dma.ts, feature.ts, header.ts,
// version.ts, region-caps.ts and describe.ts read fields through these tables, so a layout is
// fixed in one place only.

/** One little-endian unsigned field: its byte offset and its width in bytes. */
export interface Field {
  readonly at: number;
  readonly width: 2 | 4 | 8;
}

const u16 = (at: number): Field => ({ at, width: 2 });
const u32 = (at: number): Field => ({ at, width: 4 });
const u64 = (at: number): Field => ({ at, width: 8 });

/** The message header (vfio-user.rst "Header"), before every payload. */
export const Header = {
  id: u16(0),
  cmd: u16(2),
  size: u32(4),
  flags: u32(8),
  error: u32(12),
  SIZE: 16,
} as const;

/** VERSION: major, minor, then the NUL-terminated JSON capabilities. */
export const Version = { major: u16(0), minor: u16(2), SIZE: 4 } as const;

/** DMA_MAP (struct vfio_user_dma_map). */
export const DmaMap = {
  argsz: u32(0),
  flags: u32(4),
  offset: u64(8),
  address: u64(16),
  size: u64(24),
  SIZE: 32,
} as const;

/** DMA_UNMAP (struct vfio_user_dma_unmap), request and reply. */
export const DmaUnmap = {
  argsz: u32(0),
  flags: u32(4),
  address: u64(8),
  size: u64(16),
  SIZE: 24,
} as const;

/** DMA_UNMAP with GET_DIRTY_BITMAP: struct vfio_user_bitmap after the body, then the bitmap. */
export const DmaUnmapBitmap = { pgsize: u64(24), size: u64(32), SIZE: 40 } as const;

/** DEVICE_GET_INFO (struct vfio_device_info): the request uses argsz only. */
export const DeviceInfo = {
  argsz: u32(0),
  flags: u32(4),
  numRegions: u32(8),
  numIrqs: u32(12),
  SIZE: 16,
} as const;

/** DEVICE_GET_REGION_INFO (struct vfio_region_info): the request uses argsz and index. */
export const RegionInfo = {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  capOffset: u32(12),
  size: u64(16),
  offset: u64(24),
  SIZE: 32,
} as const;

/** DEVICE_GET_REGION_IO_FDS (struct vfio_user_region_io_fds_request). */
export const IoFds = {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  count: u32(12),
  SIZE: 16,
} as const;

/** DEVICE_GET_IRQ_INFO (struct vfio_irq_info): the request uses argsz and index. */
export const IrqInfo = {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  count: u32(12),
  SIZE: 16,
} as const;

/** DEVICE_SET_IRQS (struct vfio_irq_set); DATA_BOOL bytes follow at SIZE. */
export const SetIrqs = {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  start: u32(12),
  count: u32(16),
  SIZE: 20,
} as const;

/** REGION_READ/REGION_WRITE (struct vfio_user_region_access); data follows at SIZE. */
export const RegionAccess = { offset: u64(0), region: u32(8), count: u32(12), SIZE: 16 } as const;

/** DIRTY_PAGES (struct vfio_user_dirty_pages). */
export const DirtyPages = { argsz: u32(0), flags: u32(4), SIZE: 8 } as const;

/** DIRTY_PAGES GET_BITMAP: struct vfio_user_bitmap_range after the body, then the bitmap. */
export const DirtyRange = {
  iova: u64(8),
  size: u64(16),
  pgsize: u64(24),
  bitmapSize: u64(32),
  SIZE: 40,
} as const;

/** REGION_WRITE_MULTI: the write count, then `count` entries of WriteMultiEntry. */
export const WriteMulti = { count: u64(0), SIZE: 8 } as const;

/** One REGION_WRITE_MULTI entry, offsets from the entry's start; `DATA` holds up to 8 bytes. */
export const WriteMultiEntry = {
  offset: u64(0),
  region: u32(8),
  count: u32(12),
  DATA: 16,
  MAX_DATA: 8,
  SIZE: 24,
} as const;

/** DEVICE_FEATURE (struct vfio_user_device_feature); the feature's data follows at SIZE. */
export const Feature = { argsz: u32(0), flags: u32(4), SIZE: 8 } as const;

/** MIG_DATA_READ/MIG_DATA_WRITE (struct vfio_user_mig_data); data follows at SIZE. */
export const MigData = { argsz: u32(0), size: u32(4), SIZE: 8 } as const;

/** DMA_READ/DMA_WRITE in vfio-user.rst's layout: a u64 count, data at 16. */
export const DmaTransferSpec = { address: u64(0), count: u64(8), SIZE: 16 } as const;

/** DMA_READ/DMA_WRITE in the layout QEMU's VFIOUserDMARW declares: a u32 count, data at 12. */
export const DmaTransferQemu = { address: u64(0), count: u32(8), SIZE: 12 } as const;

/** A region-info capability's header (struct vfio_info_cap_header), then its own fields. */
export const CapHeader = { id: u16(0), version: u16(2), next: u32(4), SIZE: 8 } as const;

/** VFIO_REGION_INFO_CAP_SPARSE_MMAP: nr_areas, reserved, then SparseArea entries at SIZE. */
export const CapSparseMmap = { nrAreas: u32(8), SIZE: 16 } as const;

/** One sparse mmap area (struct vfio_region_sparse_mmap_area). */
export const SparseArea = { offset: u64(0), size: u64(8), SIZE: 16 } as const;

/** VFIO_REGION_INFO_CAP_TYPE (struct vfio_region_info_cap_type). */
export const CapType = { type: u32(8), subtype: u32(12), SIZE: 16 } as const;

// DEVICE_FEATURE data: the bytes after the feature's 8-byte body (Feature.SIZE).

/** VFIO_DEVICE_FEATURE_MIGRATION: the device's migration flags (u64). */
export const FeatureMigration = { flags: u64(0), SIZE: 8 } as const;

/** VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (struct vfio_device_feature_mig_state). */
export const FeatureMigState = { deviceState: u32(0), dataFd: u32(4), SIZE: 8 } as const;

/** VFU_PRECOPY_INFO, as struct vfio_precopy_info without its argsz and flags. */
export const FeaturePrecopyInfo = { initialBytes: u64(0), dirtyBytes: u64(8), SIZE: 16 } as const;

/** DMA_LOGGING_START (struct vfio_device_feature_dma_logging_control); ranges follow at SIZE. */
export const FeatureLoggingStart = { pageSize: u64(0), numRanges: u32(8), SIZE: 16 } as const;

/** One DMA logging range (struct vfio_device_feature_dma_logging_range). */
export const DmaLoggingRange = { iova: u64(0), length: u64(8), SIZE: 16 } as const;

/** DMA_LOGGING_REPORT (struct vfio_device_feature_dma_logging_report); the bitmap at SIZE. */
export const FeatureLoggingReport = {
  iova: u64(0),
  length: u64(8),
  pageSize: u64(16),
  SIZE: 24,
} as const;
