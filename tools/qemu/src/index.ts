export { Qemu, Qtest, Qmp, qemuBinary, type QemuOptions, type VfioUserDevice } from './qemu.js';
export { startServer, startListening, type ServerProcess } from './server-process.js';
export { bootGuest, guestFiles, cpio, type GuestRun, type BootOptions } from './guest.js';
export {
  VirtioBlkDriver,
  pattern,
  type DriverOptions,
  type BlkResult,
} from './virtio-blk-driver.js';
