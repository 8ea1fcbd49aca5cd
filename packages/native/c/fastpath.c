// Byte loops that JavaScript cannot run at memory speed: a lane hash for the integrity check of
// bulk memory in a device-state stream, fused with the copy that moves the bytes anyway, so the
// check costs no pass of its own. Loaded through koffi by src/libc.ts (built by the package's
// build script with the system C compiler).
//
// The hash: sixteen independent 64-bit lanes over 128-byte blocks (lane k takes the k-th word of
// each block), the lanes merged, the tail (under 128 bytes) and the length mixed in, then a final
// avalanche. The lanes are independent so that their multiplies overlap: eight at a time in an
// AVX-512 register where the CPU has one (about four times the scalar speed here), four chains in
// general registers elsewhere; both compute the same function. Every step is a bijection of the
// state for a fixed input word and of the input word for a fixed state, so a change confined to
// one 8-byte word of the input always changes the 64-bit state before the fold; the 32-bit result
// (the high half folded onto the low one) misses any change with a probability of about 2^-32,
// as a CRC-32 misses a random change (unlike a CRC it has no guarantee for short bursts).
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Odd 64-bit constants with well-spread bits (the fractional parts of sqrt(2), sqrt(3), sqrt(5)
// and the golden ratio); odd, so that multiplying by them is a bijection modulo 2^64.
#define M1 0x6A09E667F3BCC909ULL
#define M2 0xBB67AE8584CAA73BULL
#define M3 0x3C6EF372FE94F82BULL
#define M4 0x9E3779B97F4A7C15ULL

#define LANES 16
#define BLOCK (8 * LANES)
// Scalar passes cover this much at a time, four lanes per pass, so that the data a pass reads
// is still in the cache for the next pass.
#define SPAN 65536

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v; // little-endian hosts only (x86-64, arm64): the stream's byte order
}

static inline uint64_t round64(uint64_t acc, uint64_t word) {
  return rotl(acc + word * M2, 29) * M1;
}

static void lanes_init(uint64_t lane[LANES]) {
  for (int k = 0; k < LANES; k++)
    lane[k] = M1 + (uint64_t)k * M4;
}

/** Four lanes from `first` over whole blocks; `n` is a multiple of BLOCK. */
static void four_lanes(uint64_t lane[LANES], int first, const uint8_t *p, size_t n) {
  uint64_t a = lane[first], b = lane[first + 1], c = lane[first + 2], d = lane[first + 3];
  for (size_t i = 8 * (size_t)first; i < n; i += BLOCK) {
    a = round64(a, load64(p + i));
    b = round64(b, load64(p + i + 8));
    c = round64(c, load64(p + i + 16));
    d = round64(d, load64(p + i + 24));
  }
  lane[first] = a;
  lane[first + 1] = b;
  lane[first + 2] = c;
  lane[first + 3] = d;
}

static void blocks_scalar(uint64_t lane[LANES], const uint8_t *p, size_t n) {
  for (size_t at = 0; at < n; at += SPAN) {
    size_t len = n - at < SPAN ? n - at : SPAN;
    for (int first = 0; first < LANES; first += 4)
      four_lanes(lane, first, p + at, len);
  }
}

#if defined(__x86_64__)
#include <immintrin.h>

/** All sixteen lanes in two registers; copies each block to `dst` too unless it is NULL. */
__attribute__((target("avx512f,avx512dq"))) static void
blocks_avx512(uint64_t lane[LANES], uint8_t *dst, const uint8_t *src, size_t n) {
  const __m512i m1 = _mm512_set1_epi64((long long)M1), m2 = _mm512_set1_epi64((long long)M2);
  __m512i lo = _mm512_loadu_si512(lane), hi = _mm512_loadu_si512(lane + 8);
  for (size_t i = 0; i < n; i += BLOCK) {
    __m512i w0 = _mm512_loadu_si512(src + i), w1 = _mm512_loadu_si512(src + i + 64);
    if (dst) {
      _mm512_storeu_si512(dst + i, w0);
      _mm512_storeu_si512(dst + i + 64, w1);
    }
    lo = _mm512_add_epi64(lo, _mm512_mullo_epi64(w0, m2));
    hi = _mm512_add_epi64(hi, _mm512_mullo_epi64(w1, m2));
    lo = _mm512_mullo_epi64(_mm512_rol_epi64(lo, 29), m1);
    hi = _mm512_mullo_epi64(_mm512_rol_epi64(hi, 29), m1);
  }
  _mm512_storeu_si512(lane, lo);
  _mm512_storeu_si512(lane + 8, hi);
}

static int vector_unit = -1; // 1: AVX-512 F and DQ usable; set on first use

static int has_vector_unit(void) {
  if (vector_unit < 0) {
    const char *force = getenv("VFU_FASTPATH"); // "scalar": what tests use to check both paths
    int usable = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    vector_unit = usable && !(force && strcmp(force, "scalar") == 0);
  }
  return vector_unit;
}
#endif

/** Feeds whole blocks (`n` a multiple of BLOCK), copying them to `dst` first unless NULL. */
static void lanes_blocks(uint64_t lane[LANES], uint8_t *dst, const uint8_t *src, size_t n) {
#if defined(__x86_64__)
  if (has_vector_unit()) {
    blocks_avx512(lane, dst, src, n);
    return;
  }
#endif
  if (dst) {
    // What is hashed is what was stored: our own copy, which no one else writes.
    memcpy(dst, src, n);
    src = dst;
  }
  blocks_scalar(lane, src, n);
}

/** Merges the lanes, mixes in the tail (`rest` < BLOCK bytes) and the length, folds to 32. */
static uint32_t lanes_final(const uint64_t lane[LANES], const uint8_t *tail, size_t rest,
                            uint64_t total) {
  uint64_t h = 0;
  for (int k = 0; k < LANES; k++)
    h += rotl(lane[k], (7 * k + 3) % 64); // 3, 10, ... 59, 2, 9, ... 44: never 0
  for (; rest >= 8; rest -= 8, tail += 8)
    h = rotl(h ^ (load64(tail) * M3), 31) * M4;
  if (rest) {
    uint64_t w = 0;
    memcpy(&w, tail, rest);
    h = rotl(h ^ (w * M3), 23) * M1;
  }
  h ^= total;
  h ^= h >> 31;
  h *= M2;
  h ^= h >> 27;
  h *= M3;
  h ^= h >> 33;
  return (uint32_t)(h ^ (h >> 32));
}

/** The 32-bit lane hash of `n` bytes. */
uint32_t vfu_hash(const uint8_t *src, size_t n) {
  uint64_t lane[LANES];
  lanes_init(lane);
  size_t whole = n - n % BLOCK;
  lanes_blocks(lane, NULL, src, whole);
  return lanes_final(lane, src + whole, n - whole, n);
}

/**
 * Copies `n` bytes from `src` to `dst` (not overlapping) and returns the hash of the bytes
 * written, as vfu_hash(dst, n) would right after: what is hashed is what was stored (each word
 * as it was loaded, or the copy itself), so a concurrent writer of `src` cannot make the hash
 * disagree with the copy.
 */
uint32_t vfu_copy_hash(uint8_t *dst, const uint8_t *src, size_t n) {
  uint64_t lane[LANES];
  lanes_init(lane);
  size_t whole = n - n % BLOCK;
  lanes_blocks(lane, dst, src, whole);
  memcpy(dst + whole, src + whole, n - whole);
  return lanes_final(lane, dst + whole, n - whole, n);
}

/** Whether all `n` bytes are zero (stops at the first 256-byte stretch that is not). */
int vfu_is_zero(const uint8_t *p, size_t n) {
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    uint64_t acc = 0;
    for (int k = 0; k < 32; k++)
      acc |= load64(p + i + 8 * k);
    if (acc)
      return 0;
  }
  for (; i < n; i++)
    if (p[i])
      return 0;
  return 1;
}
