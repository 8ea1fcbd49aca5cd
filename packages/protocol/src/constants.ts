import { constants } from 'node:os';

/** Command numbers (protocol.md §1.4). */
export enum Command {
  VERSION = 1,
  DMA_MAP = 2,
  DMA_UNMAP = 3,
  DEVICE_GET_INFO = 4,
  DEVICE_GET_REGION_INFO = 5,
  DEVICE_GET_REGION_IO_FDS = 6,
  DEVICE_GET_IRQ_INFO = 7,
  DEVICE_SET_IRQS = 8,
  REGION_READ = 9,
  REGION_WRITE = 10,
  DMA_READ = 11,
  DMA_WRITE = 12,
  DEVICE_RESET = 13,
  DIRTY_PAGES = 14,
  REGION_WRITE_MULTI = 15,
  DEVICE_FEATURE = 16,
  MIG_DATA_READ = 17,
  MIG_DATA_WRITE = 18,
}
export const commandName = (cmd: number): string => Command[cmd] ?? `CMD_${cmd}`;

export const HEADER_SIZE = 16;
/** Header flags (§1.2). */
export const Flag = { TYPE_MASK: 0xf, COMMAND: 0, REPLY: 1, NO_REPLY: 0x10, ERROR: 0x20 } as const;

/**
 * Linux errno values by name, for error replies (§1.2: the error field carries an errno): Node's
 * own table (node:os), so no number is written out by hand.
 */
export const Errno = constants.errno;

export const DmaMapFlag = { READ: 1, WRITE: 2 } as const;
export const DmaUnmapFlag = { GET_DIRTY_BITMAP: 1, ALL: 2 } as const;
export const DeviceInfoFlag = { RESET: 1, PCI: 2 } as const;

/** Region indices of a PCI device (§4.1). */
export const Region = { BAR0: 0, BAR5: 5, ROM: 6, CONFIG: 7, VGA: 8, NUM_PCI: 9 } as const;
export const RegionFlag = { READ: 1, WRITE: 2, MMAP: 4, CAPS: 8 } as const;
export const RegionCapId = { SPARSE_MMAP: 1, TYPE: 2 } as const;
/** v1 migration region type/subtype (§4.1). */
export const MIGRATION_REGION_TYPE = 3,
  MIGRATION_REGION_SUBTYPE = 1;

/**
 * The v1 migration region's registers (§7.1; v1 vfio.h, struct vfio_device_migration_info):
 * offsets in the region's first page. The data window starts at V1_DATA_WINDOW.
 */
export const V1MigrationReg = {
  DEVICE_STATE: 0,
  RESERVED: 4,
  PENDING_BYTES: 8,
  DATA_OFFSET: 16,
  DATA_SIZE: 24,
} as const;
/** Where the v1 data window begins in the migration region (after the register page). */
export const V1_DATA_WINDOW = 4096;

export const Irq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4, COUNT: 5 } as const;
export const IrqInfoFlag = { EVENTFD: 1, MASKABLE: 2, AUTOMASKED: 4, NORESIZE: 8 } as const;
export const IrqSetFlag = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
  DATA_TYPE_MASK: 0b111,
  ACTION_TYPE_MASK: 0b111000,
} as const;

export const DirtyPagesFlag = { START: 1, STOP: 2, GET_BITMAP: 4 } as const;

/** DEVICE_FEATURE flags and indices (§8.5). */
export const FeatureFlag = { MASK: 0xffff, GET: 1 << 16, SET: 1 << 17, PROBE: 1 << 18 } as const;
export const Feature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
  /** Kernel feature, not in the vfio-user spec: a documented extension here (§8.8, §12). */
  MIG_DATA_SIZE: 9,
  /**
   * Our extension (no vfio-user message exists for VFIO_MIG_GET_PRECOPY_INFO, §8.8): GET,
   * data `{initial_bytes u64, dirty_bytes u64}`, valid in PRE_COPY and PRE_COPY_P2P only.
   */
  VFU_PRECOPY_INFO: 0xfe01,
  /**
   * Our extension: GET, data a JSON object (UTF-8, argsz at least 8 + 4096) of what a migration
   * driver needs to know: `{state, migratedAway, used, lastRefusal}` (docs/migration.md).
   */
  VFU_STATUS: 0xfe02,
} as const;
export const MigrationFlag = { STOP_COPY: 1, P2P: 2, PRE_COPY: 4 } as const;
/** v2 device states (§8.1). */
export const MigState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;
export type MigStateValue = (typeof MigState)[keyof typeof MigState];

export const MIB = 1 << 20;
/** Defaults the server advertises (§2.3). */
export const Defaults = {
  maxMsgFds: 8,
  maxDataXferSize: MIB,
  pgsize: 4096,
  maxDmaMaps: 65535,
  /** Largest payload the server reads: the data plus room for the largest fixed part. */
  maxMessageSize: MIB + 16 + 16,
  /** lvu's 8 TiB bound on one DMA mapping, to bound bitmap sizes (§3.1). */
  maxDmaMapSize: 8 * 2 ** 40,
} as const;
