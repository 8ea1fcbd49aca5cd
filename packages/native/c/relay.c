// Socket I/O that waits, with a bound, for a caller that has both sockets to itself for a while:
// a migration driver relaying MIG_DATA_READ replies to another server as MIG_DATA_WRITEs. The
// data goes socket -> pipe -> socket with splice(2), so the kernel hands pages on instead of
// copying them into this process and out again. Each function returns 0 or -errno: -ETIMEDOUT
// once `timeout_ms` have passed since the call began (whatever the peer trickled meanwhile;
// negative: no limit), -EPIPE at the end of the stream.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/** The deadline `timeout_ms` from now (-1: none). */
static int64_t deadline_in(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/** Waits until `fd` is ready for `events` or the deadline passes (a signal does not move it). */
static int wait_for(int fd, short events, int64_t deadline) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int left = -1;
    if (deadline >= 0) {
      int64_t ms = deadline - now_ms();
      if (ms <= 0)
        return -ETIMEDOUT;
      left = ms > INT_MAX ? INT_MAX : (int)ms;
    }
    int r = poll(&p, 1, left);
    if (r > 0)
      return 0;
    if (r == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

/**
 * Reads exactly `n` bytes; `*done` is how many came (all of them, or those before a failure).
 * No control buffer is offered, so fds that come with them are closed by the kernel
 * (MSG_CTRUNC), never installed in this process.
 */
int vfu_recv_exact(int fd, uint8_t *buf, uint32_t n, int timeout_ms, uint32_t *done) {
  int64_t deadline = deadline_in(timeout_ms);
  int e = 0;
  uint32_t got = 0;
  while (e == 0 && got < n) {
    ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0)
      got += (uint32_t)r;
    else if (r == 0)
      e = -EPIPE;
    else if (errno == EAGAIN)
      e = wait_for(fd, POLLIN, deadline);
    else if (errno != EINTR)
      e = -errno;
  }
  *done = got;
  return e;
}

/** Writes exactly `n` bytes; `*done` is how many went. */
int vfu_send_exact(int fd, const uint8_t *buf, uint32_t n, int timeout_ms, uint32_t *done) {
  int64_t deadline = deadline_in(timeout_ms);
  int e = 0;
  uint32_t sent = 0;
  while (e == 0 && sent < n) {
    ssize_t r = send(fd, buf + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0)
      sent += (uint32_t)r;
    else if (errno == EAGAIN)
      e = wait_for(fd, POLLOUT, deadline);
    else if (errno != EINTR)
      e = -errno;
  }
  *done = sent;
  return e;
}

/** A non-blocking pipe for vfu_splice_exact, as large as the system lets it be (up to 1 MiB). */
int vfu_relay_pipe(int fds[2]) {
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
    return -errno;
  fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); // a smaller pipe only means more rounds
  return 0;
}

/** One splice(2) that moves what it can: bytes moved, 0 for none now, or -errno. */
static ssize_t splice_some(int from, int to, size_t n) {
  for (;;) {
    ssize_t r = splice(from, NULL, to, NULL, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0)
      return r;
    if (r == 0)
      return -EPIPE; // the sending end is closed
    if (errno == EAGAIN)
      return 0;
    if (errno != EINTR)
      return -errno;
  }
}

/**
 * Moves exactly `n` bytes from socket `src` to socket `dst` through the pipe (empty before, and
 * after a success; after a failure it may hold bytes and must not be used again). On return
 * `moved[0]` is how many bytes left `src` and `moved[1]` how many reached `dst`, and after a
 * failure `*dst_failed` says which side it was: the caller can then finish the message on the
 * side that still works (read the rest from `src`, or make up the rest for `dst`) and keep that
 * stream in step.
 */
int vfu_splice_exact(int src, int dst, int pipe_r, int pipe_w, uint32_t n, int timeout_ms,
                     uint32_t moved[2], int *dst_failed) {
  int64_t deadline = deadline_in(timeout_ms);
  uint32_t left = n, held = 0; // bytes still in `src`; bytes in the pipe
  int e = 0;
  *dst_failed = 0;
  while (e == 0 && (left > 0 || held > 0)) {
    ssize_t in = left > 0 ? splice_some(src, pipe_w, left) : 0;
    if (in < 0) {
      e = (int)in;
      break;
    }
    left -= (uint32_t)in;
    held += (uint32_t)in;
    ssize_t out = held > 0 ? splice_some(pipe_r, dst, held) : 0;
    if (out < 0) {
      e = (int)out;
      *dst_failed = 1;
      break;
    }
    held -= (uint32_t)out;
    if (in > 0 || out > 0)
      continue;
    // No progress: a pipe holding bytes waits for `dst` to take them (its being full may be
    // why `src` could not go on); an empty one waits for `src`.
    *dst_failed = held > 0;
    e = held > 0 ? wait_for(dst, POLLOUT, deadline) : wait_for(src, POLLIN, deadline);
  }
  if (e == 0)
    *dst_failed = 0;
  moved[0] = n - left;
  moved[1] = n - left - held;
  return e;
}
