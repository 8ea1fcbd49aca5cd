/* A C vfio-user client: VERSION, then one of these, timed:
 *   read  N REGION_READs of COUNT bytes at REGION/OFFSET, one at a time (round trips);
 *   post  N posted (NO_REPLY) REGION_WRITEs of COUNT bytes, written back to back in 64 KiB
 *         write()s, then one REGION_READ whose reply says every write before it was handled;
 *   multi N posted REGION_WRITE_MULTIs of 8 writes of COUNT (<= 8) bytes each, then the read;
 *   mixed N REGION_WRITE (answered) and REGION_READ alternately, up to 64 in flight.
 * Prints "median_us p99_us per_second total_bytes seconds p90_us" (latencies only for read;
 * per_second counts region writes for multi, messages otherwise). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int s;
static uint8_t rbuf[4 << 20];
static size_t rs, re; /* unread bytes of rbuf: [rs, re) */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static int wr(const void *b, size_t n) { size_t d = 0; while (d < n) { ssize_t r = write(s, (const char *)b + d, n - d); if (r <= 0) return -1; d += r; } return 0; }

/* The next whole message from the socket (buffered reads), or NULL. */
static uint8_t *next_msg(void) {
  for (;;) {
    if (re - rs >= 16) {
      uint32_t size; memcpy(&size, rbuf + rs + 4, 4);
      if (size < 16 || size > sizeof rbuf) return NULL;
      if (re - rs >= size) { uint8_t *m = rbuf + rs; rs += size; return m; }
    }
    if (rs > 0) { memmove(rbuf, rbuf + rs, re - rs); re -= rs; rs = 0; }
    ssize_t r = read(s, rbuf + re, sizeof rbuf - re);
    if (r <= 0) return NULL;
    re += r;
  }
}

static void header(uint8_t *m, uint16_t id, uint16_t cmd, uint32_t size, uint32_t flags) {
  memcpy(m, &id, 2); memcpy(m + 2, &cmd, 2); memcpy(m + 4, &size, 4); memcpy(m + 8, &flags, 4); memset(m + 12, 0, 4);
}
static void access_(uint8_t *m, uint64_t off, uint32_t region, uint32_t count) {
  memcpy(m + 16, &off, 8); memcpy(m + 24, &region, 4); memcpy(m + 28, &count, 4);
}
/* One REGION_READ round trip; returns 0 when its reply came back without error. */
static int sync_read(uint32_t region, uint64_t off) {
  uint8_t m[32]; header(m, 0xffff, 9, 32, 0); access_(m, off, region, 4);
  if (wr(m, 32)) return -1;
  uint8_t *r = next_msg();
  return r && (r[8] & 0x20) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: client SOCKET N COUNT REGION [read|post|multi|mixed] [OFFSET]\n"); return 2; }
  int n = atoi(argv[2]); uint32_t count = atoi(argv[3]), region = atoi(argv[4]);
  const char *mode = argc > 5 ? argv[5] : "read";
  uint64_t offset = argc > 6 ? strtoull(argv[6], 0, 0) : 0;
  s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
  int sz = 4 << 20; setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sz, 4); setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sz, 4);
  const char *json = "{\"capabilities\":{\"max_msg_fds\":8,\"write_multiple\":true}}";
  uint8_t v[128] = {0}; uint32_t vs = 16 + 4 + strlen(json) + 1;
  header(v, 0, 1, vs, 0); memcpy(v + 20, json, strlen(json));
  if (wr(v, vs) || !next_msg()) { fprintf(stderr, "no VERSION reply\n"); return 1; }
  double t0 = now(), total;
  double *lat = NULL;
  uint64_t done = n;
  if (!strcmp(mode, "read")) {
    lat = malloc(sizeof(double) * n);
    uint8_t m[32]; header(m, 0, 9, 32, 0); access_(m, offset, region, count);
    for (int i = 0; i < n; i++) {
      uint16_t id = i; memcpy(m, &id, 2);
      double t = now();
      if (wr(m, 32)) return 1;
      uint8_t *r = next_msg();
      if (!r || (r[8] & 0x20)) { fprintf(stderr, "read %d failed\n", i); return 1; }
      lat[i] = (now() - t) * 1e6;
    }
  } else if (!strcmp(mode, "post") || !strcmp(mode, "multi")) {
    int multi = !strcmp(mode, "multi");
    uint32_t msz = multi ? 24 + 8 * 24 : 32 + count;
    static uint8_t batch[64 * 1024];
    int per = sizeof batch / msz;
    for (int i = 0; i < per; i++) {
      uint8_t *m = batch + i * msz;
      memset(m, 0, msz);
      if (multi) {
        header(m, i, 15, msz, 0x10);
        uint64_t k = 8; memcpy(m + 16, &k, 8);
        for (int j = 0; j < 8; j++) {
          uint8_t *e = m + 24 + 24 * j;
          uint64_t o = offset; memcpy(e, &o, 8); memcpy(e + 8, &region, 4); memcpy(e + 12, &count, 4);
          memset(e + 16, j + 1, count);
        }
      } else {
        header(m, i, 10, msz, 0x10); access_(m, offset, region, count); memset(m + 32, i & 0xff, count);
      }
    }
    for (int left = n; left > 0;) {
      int k = left < per ? left : per;
      if (wr(batch, (size_t)k * msz)) { fprintf(stderr, "write failed\n"); return 1; }
      left -= k;
    }
    if (sync_read(region, offset)) { fprintf(stderr, "final read failed\n"); return 1; }
    if (multi) done = (uint64_t)n * 8;
  } else if (!strcmp(mode, "mixed")) {
    int sent = 0, got = 0, window = 64;
    uint8_t m[64];
    while (got < n) {
      while (sent < n && sent - got < window) {
        if (sent & 1) { header(m, sent, 9, 32, 0); access_(m, offset, region, count); if (wr(m, 32)) return 1; }
        else { header(m, sent, 10, 32 + count, 0); access_(m, offset, region, count); memset(m + 32, 7, count); if (wr(m, 32 + count)) return 1; }
        sent++;
      }
      uint8_t *r = next_msg();
      if (!r || (r[8] & 0x20)) { fprintf(stderr, "mixed reply %d failed\n", got); return 1; }
      got++;
    }
  } else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
  total = now() - t0;
  double med = 0, p90 = 0, p99 = 0;
  if (lat) {
    qsort(lat, n, sizeof *lat, cmp);
    med = lat[n / 2];
    p90 = lat[(int)(n * 0.9)];
    p99 = lat[(int)(n * 0.99)];
  }
  printf("%.2f %.2f %.0f %.0f %.4f %.2f\n", med, p99, done / total, (double)n * count, total, p90);
  return 0;
}
