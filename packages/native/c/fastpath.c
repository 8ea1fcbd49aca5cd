// Byte loops that JavaScript cannot run at memory speed: a lane hash for the integrity check of
// bulk memory in a device-state stream, fused with the copy that moves the bytes anyway, so the
// check costs no pass of its own. Loaded through koffi by src/libc.ts (built by the package's
// build script with the system C compiler).
//
// The hash: four independent 64-bit lanes over 32-byte blocks (independent so that the CPU
// overlaps their multiplies), the lanes merged, the tail (under 32 bytes) and the length mixed
// in, then a final avalanche. Every step is a bijection of the state for a fixed input word and
// of the input word for a fixed state, so a change confined to one 8-byte word of the input
// always changes the 64-bit state before the fold; the 32-bit result (the high half folded onto
// the low one) misses any change with a probability of about 2^-32, as a CRC-32 misses a random
// change (unlike a CRC it has no guarantee for short bursts).
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// Odd 64-bit constants with well-spread bits (the fractional parts of sqrt(2), sqrt(3), sqrt(5)
// and the golden ratio); odd, so that multiplying by them is a bijection modulo 2^64.
#define M1 0x6A09E667F3BCC909ULL
#define M2 0xBB67AE8584CAA73BULL
#define M3 0x3C6EF372FE94F82BULL
#define M4 0x9E3779B97F4A7C15ULL

struct lanes {
  uint64_t a, b, c, d;
};

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v; // little-endian hosts only (x86-64, arm64): the stream's byte order
}

static inline uint64_t round64(uint64_t acc, uint64_t word) {
  return rotl(acc + word * M2, 29) * M1;
}

static void lanes_init(struct lanes *s) {
  s->a = M1;
  s->b = M2;
  s->c = M3;
  s->d = M4;
}

/** Feeds whole 32-byte blocks; `n` is a multiple of 32. */
static void lanes_blocks(struct lanes *s, const uint8_t *p, size_t n) {
  uint64_t a = s->a, b = s->b, c = s->c, d = s->d;
  for (const uint8_t *end = p + n; p < end; p += 32) {
    a = round64(a, load64(p));
    b = round64(b, load64(p + 8));
    c = round64(c, load64(p + 16));
    d = round64(d, load64(p + 24));
  }
  s->a = a;
  s->b = b;
  s->c = c;
  s->d = d;
}

/** Merges the lanes, mixes in the tail (`rest` < 32 bytes) and the length, and folds to 32. */
static uint32_t lanes_final(const struct lanes *s, const uint8_t *tail, size_t rest,
                            uint64_t total) {
  uint64_t h = s->a + rotl(s->b, 19) + rotl(s->c, 38) + rotl(s->d, 51);
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
  struct lanes s;
  lanes_init(&s);
  size_t whole = n & ~(size_t)31;
  lanes_blocks(&s, src, whole);
  return lanes_final(&s, src + whole, n - whole, n);
}

/** Like lanes_blocks, copying each block to `dst` as it goes (what is stored is what is hashed). */
static void lanes_copy_blocks(struct lanes *s, uint8_t *dst, const uint8_t *src, size_t n) {
  uint64_t a = s->a, b = s->b, c = s->c, d = s->d;
  for (size_t i = 0; i < n; i += 32) {
    uint64_t w0 = load64(src + i), w1 = load64(src + i + 8);
    uint64_t w2 = load64(src + i + 16), w3 = load64(src + i + 24);
    memcpy(dst + i, &w0, 8);
    memcpy(dst + i + 8, &w1, 8);
    memcpy(dst + i + 16, &w2, 8);
    memcpy(dst + i + 24, &w3, 8);
    a = round64(a, w0);
    b = round64(b, w1);
    c = round64(c, w2);
    d = round64(d, w3);
  }
  s->a = a;
  s->b = b;
  s->c = c;
  s->d = d;
}

/**
 * Copies `n` bytes from `src` to `dst` (not overlapping) in one pass and returns the hash of
 * the bytes written, as vfu_hash(dst, n) would right after: each word is hashed as it was
 * loaded and stored, so a concurrent writer of `src` cannot make the hash disagree with the
 * copy.
 */
uint32_t vfu_copy_hash(uint8_t *dst, const uint8_t *src, size_t n) {
  struct lanes s;
  lanes_init(&s);
  size_t whole = n & ~(size_t)31;
  lanes_copy_blocks(&s, dst, src, whole);
  memcpy(dst + whole, src + whole, n - whole);
  return lanes_final(&s, dst + whole, n - whole, n);
}
