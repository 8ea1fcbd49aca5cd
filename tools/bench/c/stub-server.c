/* The floor: a minimal vfio-user server in C. Answers VERSION with "{}" and every other
 * command with a reply whose payload is the REGION_READ reply layout for the requested count
 * (offset, region, count, then count zero bytes). One client, blocking I/O. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int rd(int fd, void *b, size_t n) { size_t d = 0; while (d < n) { ssize_t r = read(fd, (char *)b + d, n - d); if (r <= 0) return -1; d += r; } return 0; }
static int wr(int fd, const void *b, size_t n) { size_t d = 0; while (d < n) { ssize_t r = write(fd, (const char *)b + d, n - d); if (r <= 0) return -1; d += r; } return 0; }

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: stub-server SOCKET\n"); return 2; }
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  unlink(argv[1]);
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 1; }
  printf("listening\n"); fflush(stdout);
  static uint8_t in[2 << 20], out[2 << 20];
  for (;;) {
    int c = accept(l, 0, 0);
    int sz = 4 << 20; setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sz, 4); setsockopt(c, SOL_SOCKET, SO_RCVBUF, &sz, 4);
    for (;;) {
      if (rd(c, in, 16)) break;
      uint32_t size; memcpy(&size, in + 4, 4);
      if (size < 16 || size > sizeof in || rd(c, in + 16, size - 16)) break;
      uint16_t cmd; memcpy(&cmd, in + 2, 2);
      uint32_t n = 16;
      memcpy(out, in, 16);
      uint32_t flags = 1; memcpy(out + 8, &flags, 4);
      if (cmd == 1) { memcpy(out + 16, in + 16, 4); memcpy(out + 20, "{}", 3); n = 23; }
      else if (size >= 32) { uint32_t cnt; memcpy(&cnt, in + 28, 4); if (cnt > (1 << 20)) cnt = 1 << 20; memcpy(out + 16, in + 16, 16); memset(out + 32, 0, cnt); n = 32 + cnt; }
      memcpy(out + 4, &n, 4);
      if (wr(c, out, n)) break;
    }
    close(c);
  }
}
