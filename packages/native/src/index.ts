export { NativeError, E, errnoName } from './errors.js';
export { OwnedFd, closeAll, openFdCount, dupFd, fileIdentity } from './fd.js';
export {
  listenUnix,
  acceptUnix,
  connectUnix,
  someoneListens,
  socketPair,
  setNonBlocking,
  yieldCpu,
  peerHasReadAll,
  MessageSocket,
  MAX_FDS_PER_SENDMSG,
  type Received,
} from './socket.js';
export { FdWatcher } from './watch.js';
export { SendQueue } from './send-queue.js';
export { MappedMemory, memfdCreate, truncate, isHole, safeToMap, PAGE_SIZE } from './memory.js';
export { eventfdCreate, eventfdWrite, eventfdRead, isEventfd } from './eventfd.js';
export { hash, copyAndHash, isZero } from './hash.js';
export { recvExact, sendExact, SplicePipe, SpliceError, ShortIoError } from './relay.js';
