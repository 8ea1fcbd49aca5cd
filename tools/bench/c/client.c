/* A C vfio-user client: VERSION, then N REGION_READs of COUNT bytes of REGION, timing each.
 * Prints "median_us p99_us per_second total_bytes seconds". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int rd(int fd, void *b, size_t n) { size_t d = 0; while (d < n) { ssize_t r = read(fd, (char *)b + d, n - d); if (r <= 0) return -1; d += r; } return 0; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: client SOCKET N COUNT REGION\n"); return 2; }
  int n = atoi(argv[2]); uint32_t count = atoi(argv[3]), region = atoi(argv[4]);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
  int sz = 4 << 20; setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sz, 4); setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sz, 4);
  static uint8_t buf[2 << 20];
  const char *json = "{\"capabilities\":{\"max_msg_fds\":8}}";
  uint8_t v[128] = {0}; uint32_t vs = 16 + 4 + strlen(json) + 1;
  uint16_t one = 1; memcpy(v + 2, &one, 2); memcpy(v + 4, &vs, 4); memcpy(v + 20, json, strlen(json));
  write(s, v, vs);
  if (rd(s, buf, 16)) return 1;
  uint32_t rs; memcpy(&rs, buf + 4, 4); rd(s, buf + 16, rs - 16);
  uint8_t m[32] = {0}; uint16_t cmd = 9; uint32_t ms = 32;
  memcpy(m + 2, &cmd, 2); memcpy(m + 4, &ms, 4); memcpy(m + 24, &region, 4); memcpy(m + 28, &count, 4);
  double *lat = malloc(sizeof(double) * n), t0 = now();
  for (int i = 0; i < n; i++) {
    uint16_t id = i; memcpy(m, &id, 2);
    double t = now();
    if (write(s, m, 32) != 32 || rd(s, buf, 16)) return 1;
    memcpy(&rs, buf + 4, 4);
    if (rs > sizeof buf || rd(s, buf + 16, rs - 16)) return 1;
    lat[i] = (now() - t) * 1e6;
  }
  double total = now() - t0;
  qsort(lat, n, sizeof *lat, cmp);
  printf("%.2f %.2f %.0f %.0f %.4f\n", lat[n / 2], lat[(int)(n * 0.99)], n / total, (double)n * count, total);
  return 0;
}
