/* The floor: a minimal vfio-user server in C. One client at a time, blocking I/O, buffered:
 * each read() takes what is there, every complete message in it is answered into one output
 * buffer, sent with one write(). VERSION gets "{}"; REGION_READ the read-reply layout with
 * `count` zero bytes; REGION_WRITE its 32-byte reply; REGION_WRITE_MULTI its 24-byte reply;
 * anything else the read-reply layout; a message with NO_REPLY (0x10) gets nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define IN_SIZE (4 << 20)
#define OUT_SIZE (4 << 20)
static uint8_t in[IN_SIZE], out[OUT_SIZE];

static int wr(int fd, const void *b, size_t n) { size_t d = 0; while (d < n) { ssize_t r = write(fd, (const char *)b + d, n - d); if (r <= 0) return -1; d += r; } return 0; }

/* Appends the reply to the message at m (size bytes) to out; flushes first when it would not fit. */
static int answer(int c, const uint8_t *m, uint32_t size, size_t *on) {
  uint16_t cmd; uint32_t flags; memcpy(&cmd, m + 2, 2); memcpy(&flags, m + 8, 4);
  if (flags & 0x10) return 0;
  uint32_t n = 16, cnt = 0;
  if (cmd == 1) n = 23;
  else if (cmd == 10) n = 32;
  else if (cmd == 15) n = 24;
  else if (size >= 32) { memcpy(&cnt, m + 28, 4); if (cnt > (1 << 20)) cnt = 1 << 20; n = 32 + cnt; }
  if (*on + n > OUT_SIZE) { if (wr(c, out, *on)) return -1; *on = 0; }
  uint8_t *o = out + *on;
  memcpy(o, m, 16);
  uint32_t rf = 1; memcpy(o + 8, &rf, 4);
  memcpy(o + 4, &n, 4);
  if (cmd == 1) { memcpy(o + 16, m + 16, 4); memcpy(o + 20, "{}", 3); }
  else if (cmd == 15) { memset(o + 16, 0, 8); memcpy(o + 16, m + 16, 8); }
  else if (n >= 32) { memcpy(o + 16, m + 16, 16); memset(o + 32, 0, n - 32); }
  *on += n;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: stub-server SOCKET\n"); return 2; }
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  unlink(argv[1]);
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 1; }
  printf("listening\n"); fflush(stdout);
  for (;;) {
    int c = accept(l, 0, 0);
    int sz = 4 << 20; setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sz, 4); setsockopt(c, SOL_SOCKET, SO_RCVBUF, &sz, 4);
    size_t have = 0;
    for (;;) {
      ssize_t r = read(c, in + have, IN_SIZE - have);
      if (r <= 0) break;
      have += r;
      size_t at = 0, on = 0;
      int bad = 0;
      while (have - at >= 16) {
        uint32_t size; memcpy(&size, in + at + 4, 4);
        if (size < 16 || size > IN_SIZE) { bad = 1; break; }
        if (have - at < size) break;
        if (answer(c, in + at, size, &on)) { bad = 1; break; }
        at += size;
      }
      if (bad || (on && wr(c, out, on))) break;
      memmove(in, in + at, have - at);
      have -= at;
    }
    close(c);
  }
}
