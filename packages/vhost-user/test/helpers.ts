// A front-end and guest RAM for tests: the package's Frontend plays QEMU over a real socketpair,
// guest memory is a real memfd that both sides map.
import {
  FdWatcher,
  MappedMemory,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  memfdCreate,
  socketPair,
  type OwnedFd,
} from '@vfu/native';
import {
  BackendSession,
  Frontend,
  Request,
  VhostConnection,
  VhostFeature,
  type VhostUserDevice,
} from '@vfu/vhost-user';
import { DriverQueue, type VirtioRequest } from '@vfu/virtio';

export const RAM = 1 << 20;
/** The front-end's (pretend) address of guest RAM: ring addresses are given in it. */
export const USER_BASE = 0x7f1200000000;
const QSIZE = 16;
export const ringLayout = (q: number) => ({
  size: QSIZE,
  desc: 0x1000 + q * 0x1000 * 4,
  driver: 0x2000 + q * 0x1000 * 4,
  device: 0x3000 + q * 0x1000 * 4,
});

/** Answers each request with its bytes inverted, after `gate` when one is set. */
export class TestDevice implements VhostUserDevice {
  features = [5];
  queues = { count: 2, size: 64 };
  cfg = Uint8Array.from({ length: 24 }, (_, i) => i + 1);
  gate: Promise<void> | null = null;
  writeConfig?: (offset: number, data: Uint8Array) => boolean;
  requests: VirtioRequest[] = [];
  onRequest: () => void = () => {};
  config(): Uint8Array {
    return this.cfg;
  }
  async handle(req: VirtioRequest): Promise<Uint8Array> {
    this.requests.push(req);
    this.onRequest();
    if (this.gate) await this.gate;
    return req.data.map(b => b ^ 0xff).subarray(0, req.writable);
  }
}

/** Resolves when an eventfd is signalled (a call or error notification). */
export function signalled(fd: OwnedFd): Promise<bigint> {
  return new Promise(resolve => {
    const w = new FdWatcher(fd.fd, () => {
      const v = eventfdRead(fd.fd);
      if (v === null) return;
      w.close();
      resolve(v);
    });
  });
}

export interface Rig {
  fe: Frontend;
  be: BackendSession;
  dev: TestDevice;
  ram: Uint8Array;
  ramFd: OwnedFd;
  /** The back-end's end of the socket pair (the session owns it): to see what it sent. */
  beSocket: OwnedFd;
  logs: string[];
  /** The test's own fds (kick, call, err), closed with the rig. */
  own: OwnedFd[];
  close(): void;
}

export function rig(dev = new TestDevice()): Rig {
  const [a, b] = socketPair();
  const logs: string[] = [];
  const be = new BackendSession(new VhostConnection(a), dev, { log: l => logs.push(l) });
  const fe = new Frontend(b);
  const ramFd = memfdCreate('guest-ram', RAM);
  const map = MappedMemory.map(ramFd.fd, 0, RAM);
  const own: OwnedFd[] = [];
  return {
    fe,
    be,
    dev,
    ram: map.bytes(0, RAM),
    ramFd,
    beSocket: a,
    logs,
    own,
    close() {
      for (const f of own) f.close();
      fe.close();
      map.release();
      ramFd.close();
    },
  };
}

export const bit = (n: number) => 1n << BigInt(n);

/** What QEMU does before the guest runs: features, owner, memory table. */
export async function negotiate(r: Rig, extra = 0n): Promise<bigint> {
  const offered = (await r.fe.request({ request: Request.GET_FEATURES })).payload;
  const features = new DataView(offered.buffer, offered.byteOffset, 8).getBigUint64(0, true);
  const want = (features & ~bit(VhostFeature.LOG_ALL)) | extra;
  expectZero(await r.fe.ack({ request: Request.SET_FEATURES, features: want }));
  const p = (await r.fe.request({ request: Request.GET_PROTOCOL_FEATURES })).payload;
  const proto = new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0, true);
  r.fe.send({ request: Request.SET_PROTOCOL_FEATURES, features: proto });
  r.fe.send({ request: Request.SET_OWNER });
  const region = { guestAddress: 0, size: RAM, userAddress: USER_BASE, mmapOffset: 0 };
  expectZero(await r.fe.ack({ request: Request.SET_MEM_TABLE, regions: [region] }, [r.ramFd.fd]));
  return want;
}

function expectZero(v: bigint): void {
  if (v !== 0n) throw new Error(`acknowledged with ${v}`);
}

interface Ring {
  driver: DriverQueue;
  kick: OwnedFd;
  call: OwnedFd;
  err: OwnedFd;
  /** Makes buffers available, asks for an interrupt when they are used, and kicks. */
  submit(bufs: { address: number; len: number; write?: boolean }[], indirect?: number): number;
  /** A kick, as KVM's ioeventfd would give it. */
  kickNow(): void;
}

/** SET_VRING_NUM/BASE/ADDR/KICK/CALL/ERR and ENABLE for queue `q`, as QEMU orders them. */
export async function startRing(r: Rig, q: number, flags = 0, log = 0) {
  const l = ringLayout(q);
  const eventIdx = (r.be.features & bit(29)) !== 0n; // RING_EVENT_IDX as negotiated
  const driver = new DriverQueue({ address: 0, bytes: r.ram }, l, eventIdx);
  const kick = eventfdCreate();
  const call = eventfdCreate();
  const err = eventfdCreate();
  r.own.push(kick, call, err);
  r.fe.send({ request: Request.SET_VRING_NUM, state: { index: q, num: QSIZE } });
  r.fe.send({ request: Request.SET_VRING_BASE, state: { index: q, num: 0 } });
  const addr = {
    index: q,
    flags,
    desc: USER_BASE + l.desc,
    used: USER_BASE + l.device,
    avail: USER_BASE + l.driver,
    log: log || l.device,
  };
  r.fe.send({ request: Request.SET_VRING_ADDR, addr });
  r.fe.send({ request: Request.SET_VRING_KICK, file: { index: q, noFd: false } }, [kick.fd]);
  r.fe.send({ request: Request.SET_VRING_CALL, file: { index: q, noFd: false } }, [call.fd]);
  r.fe.send({ request: Request.SET_VRING_ERR, file: { index: q, noFd: false } }, [err.fd]);
  expectZero(await r.fe.ack({ request: Request.SET_VRING_ENABLE, state: { index: q, num: 1 } }));
  const ring: Ring = {
    driver,
    kick,
    call,
    err,
    submit(bufs, indirect) {
      if (eventIdx) driver.setUsedEvent(driver.usedIdx);
      const head = driver.add(bufs, indirect);
      eventfdWrite(kick.fd);
      return head;
    },
    kickNow() {
      eventfdWrite(kick.fd);
    },
  };
  return ring;
}
