// The only file in the repository that talks to koffi. Everything else sees plain numbers
// (fds) wrapped in owned handles, Uint8Arrays and typed errors.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

// Our own C (c/fastpath.c), built into dist/ by the package's build; the same path from src/
// (tests) and from dist/.
const fastpathPath = fileURLToPath(new URL('../dist/libvfu-fastpath.so', import.meta.url));
if (!existsSync(fastpathPath))
  throw new Error(
    `${fastpathPath} is missing: build @vfu/native with a C compiler on the PATH ` +
      '(`pnpm exec nx run-many -t build`, or `npm run setup`)',
  );
const fastpath = koffi.load(fastpathPath);

/** The byte loops of c/fastpath.c (lengths in bytes, the caller checks every bound). */
export const fast = {
  hash: fastpath.func('uint32_t vfu_hash(const void *src, size_t n)'),
  copyHash: fastpath.func('uint32_t vfu_copy_hash(void *dst, const void *src, size_t n)'),
  isZero: fastpath.func('int vfu_is_zero(const void *src, size_t n)'),
};

/** The waiting socket I/O of c/relay.c: each returns 0 or -errno. */
export const relayIo = {
  recvExact: fastpath.func(
    'int vfu_recv_exact(int fd, void *buf, uint32_t n, int timeout_ms, _Out_ uint32_t *done)',
  ),
  sendExact: fastpath.func(
    'int vfu_send_exact(int fd, const void *buf, uint32_t n, int timeout_ms, ' +
      '_Out_ uint32_t *done)',
  ),
  pipe: fastpath.func('int vfu_relay_pipe(_Out_ int *fds)'),
  spliceExact: fastpath.func(
    'int vfu_splice_exact(int src, int dst, int pipe_r, int pipe_w, uint32_t n, ' +
      'int timeout_ms, _Out_ uint32_t *moved, _Out_ int *dst_failed)',
  ),
};

export const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  // The msghdr passed as its address and the result as an int (every buffer here is below
  // 2 GiB): koffi then converts plain numbers only, the cheapest call form it has.
  sendmsg: libc.func('int sendmsg(int fd, uintptr_t msg, int flags)'),
  recvmsg: libc.func('int recvmsg(int fd, uintptr_t msg, int flags)'),
  close: libc.func('int close(int fd)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t n)'),
  write: libc.func('intptr_t write(int fd, const void *buf, size_t n)'),
  mmap: libc.func(
    'uintptr_t mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, int64_t off)',
  ),
  munmap: libc.func('int munmap(uintptr_t addr, size_t len)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  memfdCreate: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t len)'),
  lseek: libc.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  setsockopt: libc.func(
    'int setsockopt(int fd, int level, int name, const int *value, uint32_t len)',
  ),
  schedYield: libc.func('int sched_yield()'),
  fstat: libc.func('int fstat(int fd, _Out_ uint8_t *st)'),
  ioctlInt: libc.func('int ioctl(int fd, unsigned long request, _Out_ int *value)'),
  epollCreate1: libc.func('int epoll_create1(int flags)'),
  epollCtl: libc.func('int epoll_ctl(int epfd, int op, int fd, const uint8_t *event)'),
};

/** errno of the libc call that just returned; read it before anything else runs. */
export const errno = (): number => koffi.errno() as number;

/** Address of a buffer's bytes, stable for the buffer's life (ArrayBuffer stores do not move). */
export const addressOf = (buf: Uint8Array): bigint => koffi.address(buf) as bigint;

/** A Buffer over its own off-heap ArrayBuffer: its address never changes. */
export const stableBuffer = (n: number): Buffer => Buffer.from(new ArrayBuffer(n));

/** A zero-copy ArrayBuffer over native memory. Touching it after munmap kills the process. */
export const viewOf = (addr: number, len: number): ArrayBuffer =>
  koffi.view(addr, len) as ArrayBuffer;

export interface PollEvents {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}
export interface PollHandle {
  start(opts: { readable?: boolean; writable?: boolean }, cb?: unknown): void;
  stop(): void;
  close(): void;
  unref(): void;
  ref(): void;
}

/** libuv's uv_poll on Node's own loop (koffi.node.poll). One handle per fd. */
export function pollFd(
  fd: number,
  opts: { readable?: boolean; writable?: boolean },
  cb: (ev: PollEvents) => void,
): PollHandle {
  // At runtime the callback receives (status, events); the typings say (events).
  // A non-zero status (e.g. ECONNRESET) comes with all-false events: report it as readable and
  // hung up, so the reader's next call surfaces the error.
  const wrap = (a: unknown, b?: unknown) => {
    if (typeof a === 'number' && a !== 0) cb({ readable: true, writable: false, disconnect: true });
    else cb((typeof a === 'number' ? b : a) as PollEvents);
  };
  const h = koffi.node.poll(fd, opts, wrap as never) as unknown as PollHandle;
  return {
    start: o => h.start(o, wrap as never),
    stop: () => h.stop(),
    close: () => h.close(),
    unref: () => h.unref(),
    ref: () => h.ref(),
  };
}
