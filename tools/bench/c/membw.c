/* Memory bandwidth, the floor of a scan for changed pages and of a copy: membw BYTES compares
 * two buffers of BYTES (memcmp in 256 KiB blocks, as the server's scan does) and copies one into
 * the other (memcpy), each three times after faulting both in. Prints "memcmp_ms memcpy_ms",
 * the best of the three. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: membw BYTES\n");
    return 2;
  }
  size_t n = strtoull(argv[1], NULL, 0), blk = 256 << 10;
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) {
    perror("malloc");
    return 1;
  }
  memset(a, 1, n);
  memset(b, 1, n);
  double cmp = 1e30, cpy = 1e30;
  int differ = 0;
  for (int r = 0; r < 3; r++) {
    double t = now_ms();
    for (size_t o = 0; o < n; o += blk) differ |= memcmp(a + o, b + o, n - o < blk ? n - o : blk);
    double c = now_ms() - t;
    t = now_ms();
    memcpy(b, a, n);
    double m = now_ms() - t;
    cmp = c < cmp ? c : cmp;
    cpy = m < cpy ? m : cpy;
  }
  if (differ) return 1; /* equal buffers: the compare must have read them all */
  printf("%.2f %.2f\n", cmp, cpy);
  return 0;
}
