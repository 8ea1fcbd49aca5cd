// Declared state: a device's fields and their types (re-exported so a model imports one package).
export {
  u8,
  u16,
  u32,
  u64,
  bool,
  bytes,
  type Schema,
  type StateOf,
  type FieldType,
} from '@vfu/stream';
export {
  ConfigSpace,
  Cfg,
  Command,
  Status,
  MsiControl,
  MsixControl,
  type PciIdentity,
} from './config-space.js';
export {
  layoutCapabilities,
  pm,
  msi,
  msix,
  pcie,
  vendorSpecific,
  extended,
  type Capability,
  type CapabilityLayout,
} from './capabilities.js';
export {
  bar,
  registers,
  sharedMemory,
  WRITE_BLOCK,
  parseSize,
  type Bar,
  type BarKind,
  type Register,
  type RegionHandler,
  type SharedMemory,
} from './regions.js';
export { Interrupts } from './interrupts.js';
export { GuestMemory, type MessageDma } from './guest-memory.js';
export { PciError, RegionAccessError, DmaError } from './errors.js';
export {
  PciDevice,
  defineDevice,
  DeviceSetupError,
  type DeviceDefinition,
  type DeviceContext,
  type BarIndex,
  type Options,
} from './device.js';
export { deviceImage } from './image.js';
