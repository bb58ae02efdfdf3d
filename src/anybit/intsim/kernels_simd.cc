// The x86 instruction sets of kernels_simd.h: the operations kernels_simd.inc is written in,
// once for AVX2 and once for AVX-512, the choice between them at run time, and the
// packing of the direct convolution's weights.
#include "anybit/intsim/kernels_simd.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>

// ANYBIT_INTSIM_NO_CLONES (kernels.h) builds the baseline only: no SIMD kernels either.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && \
    !defined(ANYBIT_INTSIM_NO_CLONES)
#define ANYBIT_INTSIM_X86 1
#include <immintrin.h>
#endif

namespace anybit {
namespace intsim {
namespace simd {

Requantizer::Requantizer(DyadicMultiplier m, int32_t z, int32_t qmin, int32_t qmax)
    : m0(m.m0),
      rounding(m),
      lo(saturate_int32(int64_t{qmin} - z)),
      hi(saturate_int32(int64_t{qmax} - z)),
      zero_point(z) {}

namespace {

Level detect() {
  Level best = Level::kNone;
#ifdef ANYBIT_INTSIM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) best = Level::kAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("popcnt"))
    best = Level::kAvx512;
#endif
  if (const char* cap = std::getenv("ANYBIT_INTSIM_SIMD")) {
    const Level want = std::strcmp(cap, "none") == 0   ? Level::kNone
                       : std::strcmp(cap, "avx2") == 0 ? Level::kAvx2
                                                       : Level::kAvx512;
    best = std::min(best, want);
  }
  return best;
}

// (a, b) as one int32 lane: a in the low 16 bits, b in the high, as pmaddwd pairs them.
inline int32_t pack_pair(int32_t a, int32_t b) {
  return static_cast<int32_t>((static_cast<uint32_t>(b) << 16) |
                              (static_cast<uint32_t>(a) & 0xffffu));
}

}  // namespace

Level level() {
  static const Level l = detect();
  return l;
}

bool conv2d_direct_supports(const Conv2dGeometry& g) {
  return level() != Level::kNone && g.stride_h * g.stride_w <= 64;
}

std::vector<int32_t> pack_conv2d_direct(const Conv2dGeometry& g, const int16_t* w) {
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t pairs = (Cg + 1) / 2, row_blocks = (Og + kConvRows - 1) / kConvRows;
  const int64_t taps = g.kernel_h * g.kernel_w;
  // [groups][row_blocks][pairs][taps][kConvRows]; rows past Og and the odd channel past Cg are 0
  std::vector<int32_t> p(static_cast<size_t>(g.groups * row_blocks * pairs * taps * kConvRows), 0);
  for (int64_t o = 0; o < g.out_channels; ++o) {
    const int64_t grp = o / Og, rb = (o % Og) / kConvRows, r = o % Og % kConvRows;
    for (int64_t cp = 0; cp < pairs; ++cp) {
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t c0 = 2 * cp, c1 = 2 * cp + 1;
        const int32_t w0 = w[(o * Cg + c0) * taps + t];
        const int32_t w1 = c1 < Cg ? w[(o * Cg + c1) * taps + t] : 0;
        p[static_cast<size_t>((((grp * row_blocks + rb) * pairs + cp) * taps + t) * kConvRows +
                              r)] = pack_pair(w0, w1);
      }
    }
  }
  return p;
}

#ifdef ANYBIT_INTSIM_X86

#define ANYBIT_SIMD_INLINE inline __attribute__((always_inline))

// Everything between ANYBIT_SIMD_BEGIN(isa) and ANYBIT_SIMD_END is compiled for that
// instruction set, templates and lambdas included; functions defined elsewhere (the standard
// library's) stay baseline and are inlined into it as usual.
#if defined(__clang__)
#define ANYBIT_SIMD_PRAGMA(x) _Pragma(#x)
#define ANYBIT_SIMD_BEGIN(isa) \
  ANYBIT_SIMD_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define ANYBIT_SIMD_END _Pragma("clang attribute pop")
#else
#define ANYBIT_SIMD_PRAGMA(x) _Pragma(#x)
#define ANYBIT_SIMD_BEGIN(isa) _Pragma("GCC push_options") ANYBIT_SIMD_PRAGMA(GCC target(isa))
#define ANYBIT_SIMD_END _Pragma("GCC pop_options")
#endif

// --- AVX2: 8 int32 or 16 int16 lanes, comparisons give vectors of all-ones lanes --------

ANYBIT_SIMD_BEGIN("avx2")
namespace avx2 {

using V = __m256i;
using M = __m256i;

struct Isa {
  static constexpr int64_t kLanes = 8, kLanes16 = 16;
  static ANYBIT_SIMD_INLINE V zero() { return _mm256_setzero_si256(); }
  static ANYBIT_SIMD_INLINE V load(const void* p) {
    return _mm256_loadu_si256(static_cast<const V*>(p));
  }
  static ANYBIT_SIMD_INLINE void store(void* p, V v) { _mm256_storeu_si256(static_cast<V*>(p), v); }
  static ANYBIT_SIMD_INLINE V set1(int32_t v) { return _mm256_set1_epi32(v); }
  static ANYBIT_SIMD_INLINE V set1_64(int64_t v) { return _mm256_set1_epi64x(v); }
  static ANYBIT_SIMD_INLINE V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V sub(V a, V b) { return _mm256_sub_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V and_(V a, V b) { return _mm256_and_si256(a, b); }
  static ANYBIT_SIMD_INLINE V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static ANYBIT_SIMD_INLINE V min(V a, V b) { return _mm256_min_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V max(V a, V b) { return _mm256_max_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V sign(V a) { return _mm256_srai_epi32(a, 31); }
  static ANYBIT_SIMD_INLINE V shift_left(V a, int n) {
    return _mm256_sll_epi32(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE V shift_right(V a, int n) {
    return _mm256_sra_epi32(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE M greater(V a, V b) { return _mm256_cmpgt_epi32(a, b); }
  static ANYBIT_SIMD_INLINE M negative(V a) { return _mm256_srai_epi32(a, 31); }
  static ANYBIT_SIMD_INLINE M or_(M a, M b) { return _mm256_or_si256(a, b); }
  static ANYBIT_SIMD_INLINE V select(M m, V yes, V no) { return _mm256_blendv_epi8(no, yes, m); }
  static ANYBIT_SIMD_INLINE V increment_where(V a, M m) { return _mm256_sub_epi32(a, m); }
  static ANYBIT_SIMD_INLINE V add64(V a, V b) { return _mm256_add_epi64(a, b); }
  static ANYBIT_SIMD_INLINE V sub64(V a, V b) { return _mm256_sub_epi64(a, b); }
  static ANYBIT_SIMD_INLINE V mul_even(V a, V b) { return _mm256_mul_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V odd_to_even(V a) { return _mm256_srli_epi64(a, 32); }
  static ANYBIT_SIMD_INLINE V even_to_odd(V a) { return _mm256_slli_epi64(a, 32); }
  static ANYBIT_SIMD_INLINE V srl64(V a, int n) { return _mm256_srl_epi64(a, _mm_cvtsi32_si128(n)); }
  // signed 64-bit lanes clamped to [lo, hi]
  static ANYBIT_SIMD_INLINE V clamp64(V a, V lo, V hi) {
    a = _mm256_blendv_epi8(a, hi, _mm256_cmpgt_epi64(a, hi));
    return _mm256_blendv_epi8(a, lo, _mm256_cmpgt_epi64(lo, a));
  }
  static ANYBIT_SIMD_INLINE V blend_odd(V even, V odd) {
    return _mm256_blend_epi32(even, odd, 0xaa);
  }
  // Masked loads read and masked stores write only the lanes of their mask (lanes i with
  // a <= i < b; the first n; those whose bit is set). A masked load gives 0 elsewhere.
  static ANYBIT_SIMD_INLINE M lanes_between(int64_t a, int64_t b) {
    const V i = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const V lo = _mm256_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(a, -1, 8)));
    const V hi = _mm256_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(b, -1, 8)));
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(lo, i), _mm256_cmpgt_epi32(hi, i));
  }
  static ANYBIT_SIMD_INLINE V load_masked(const int32_t* p, M m) {
    return _mm256_maskload_epi32(p, m);
  }
  static ANYBIT_SIMD_INLINE void store_masked(int32_t* p, V v, M m) {
    _mm256_maskstore_epi32(p, m, v);
  }
  static ANYBIT_SIMD_INLINE V zero_outside(M m, V v) { return _mm256_and_si256(m, v); }
  static ANYBIT_SIMD_INLINE M mask_of(uint32_t bits) {  // lane i where bit i is set
    const V bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int32_t>(bits)), bit),
                              bit);
  }
  static ANYBIT_SIMD_INLINE V load_first(const int32_t* p, int64_t n) {
    return load_masked(p, lanes_between(0, n));
  }
  static ANYBIT_SIMD_INLINE void store_first(int32_t* p, V v, int64_t n) {
    store_masked(p, v, lanes_between(0, n));
  }
  // 16-bit a[i] in the low half of each 32-bit lane, b[i] in the high half
  static ANYBIT_SIMD_INLINE V pack_pairs(V a, V b) {
    return _mm256_blend_epi16(a, _mm256_slli_epi32(b, 16), 0xaa);
  }
  // No compressing store: whole vectors, which the caller compacts.
  static constexpr bool kCompress = false;
  using Keep = uint32_t;
  static ANYBIT_SIMD_INLINE Keep keep_lanes(uint32_t bits) { return bits; }
  static ANYBIT_SIMD_INLINE void store_kept(int32_t* p, V v, Keep) { store(p, v); }
  // lanes 2i + phase of the 16 lanes of a then b (phase 0: the even ones, 1: the odd ones)
  static ANYBIT_SIMD_INLINE V deinterleave(V a, V b, int64_t phase) {
    const __m256 fa = _mm256_castsi256_ps(a), fb = _mm256_castsi256_ps(b);
    const __m256 s = phase == 0 ? _mm256_shuffle_ps(fa, fb, 0x88) : _mm256_shuffle_ps(fa, fb, 0xdd);
    return _mm256_permute4x64_epi64(_mm256_castps_si256(s), 0xd8);
  }
  // acc + x[2i] * w[2i] + x[2i+1] * w[2i+1] in each 32-bit lane
  static ANYBIT_SIMD_INLINE V dot_pairs(V acc, V x, V w) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w));
  }
  // 16-bit lanes
  static ANYBIT_SIMD_INLINE V set1_16(int16_t v) { return _mm256_set1_epi16(v); }
  static ANYBIT_SIMD_INLINE V mullo16(V a, V b) { return _mm256_mullo_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V add16(V a, V b) { return _mm256_add_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V adds16(V a, V b) { return _mm256_adds_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V min16(V a, V b) { return _mm256_min_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V max16(V a, V b) { return _mm256_max_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V shift_left16(V a, int n) {
    return _mm256_sll_epi16(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE V shift_right16(V a, int n) {
    return _mm256_sra_epi16(a, _mm_cvtsi32_si128(n));
  }
  // count + 1 in the lanes where a == b (cmpeq gives -1 there)
  using Count = V;
  static ANYBIT_SIMD_INLINE Count count_zero() { return zero(); }
  static ANYBIT_SIMD_INLINE V count_equal16(V count, V a, V b) {
    return _mm256_sub_epi16(count, _mm256_cmpeq_epi16(a, b));
  }
  static ANYBIT_SIMD_INLINE int64_t sum16(V count) {
    alignas(32) int32_t s[8];
    _mm256_store_si256(reinterpret_cast<V*>(s), _mm256_madd_epi16(count, _mm256_set1_epi16(1)));
    int64_t t = 0;
    for (int32_t v : s) t += v;
    return t;
  }
};

// 4 output channels x 2 vectors of positions: 8 accumulators, 2 image vectors, a weight
// and the product in the 16 registers.
constexpr int kConvBlockRows = 4, kConvVectors = 2;
// 2 rows x 2 vectors of 16 lanes for the stepwise accumulation.
constexpr int kStepRows = 2, kStepVectors = 2;

#include "anybit/intsim/kernels_simd.inc"

}  // namespace avx2
ANYBIT_SIMD_END

// --- AVX-512 (F, BW, VNNI): 16 int32 or 32 int16 lanes, comparisons give mask registers ---

// GCC 12 warns that _mm512_set1_* and friends read their own uninitialized placeholder
// (GCC bug 105593, fixed in GCC 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

ANYBIT_SIMD_BEGIN("avx512f,avx512bw,avx512vnni,popcnt")
namespace avx512 {

using V = __m512i;
using M = __mmask16;

struct Isa {
  static constexpr int64_t kLanes = 16, kLanes16 = 32;
  static ANYBIT_SIMD_INLINE V zero() { return _mm512_setzero_si512(); }
  static ANYBIT_SIMD_INLINE V load(const void* p) { return _mm512_loadu_si512(p); }
  static ANYBIT_SIMD_INLINE void store(void* p, V v) { _mm512_storeu_si512(p, v); }
  static ANYBIT_SIMD_INLINE V set1(int32_t v) { return _mm512_set1_epi32(v); }
  static ANYBIT_SIMD_INLINE V set1_64(int64_t v) { return _mm512_set1_epi64(v); }
  static ANYBIT_SIMD_INLINE V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V sub(V a, V b) { return _mm512_sub_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V and_(V a, V b) { return _mm512_and_si512(a, b); }
  static ANYBIT_SIMD_INLINE V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  static ANYBIT_SIMD_INLINE V min(V a, V b) { return _mm512_min_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V max(V a, V b) { return _mm512_max_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V sign(V a) { return _mm512_srai_epi32(a, 31); }
  static ANYBIT_SIMD_INLINE V shift_left(V a, int n) {
    return _mm512_sll_epi32(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE V shift_right(V a, int n) {
    return _mm512_sra_epi32(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE M greater(V a, V b) { return _mm512_cmpgt_epi32_mask(a, b); }
  static ANYBIT_SIMD_INLINE M negative(V a) {
    return _mm512_cmplt_epi32_mask(a, _mm512_setzero_si512());
  }
  static ANYBIT_SIMD_INLINE M or_(M a, M b) { return _kor_mask16(a, b); }
  static ANYBIT_SIMD_INLINE V select(M m, V yes, V no) {
    return _mm512_mask_blend_epi32(m, no, yes);
  }
  static ANYBIT_SIMD_INLINE V increment_where(V a, M m) {
    return _mm512_mask_add_epi32(a, m, a, _mm512_set1_epi32(1));
  }
  static ANYBIT_SIMD_INLINE V add64(V a, V b) { return _mm512_add_epi64(a, b); }
  static ANYBIT_SIMD_INLINE V sub64(V a, V b) { return _mm512_sub_epi64(a, b); }
  static ANYBIT_SIMD_INLINE V mul_even(V a, V b) { return _mm512_mul_epi32(a, b); }
  static ANYBIT_SIMD_INLINE V odd_to_even(V a) { return _mm512_srli_epi64(a, 32); }
  static ANYBIT_SIMD_INLINE V even_to_odd(V a) { return _mm512_slli_epi64(a, 32); }
  static ANYBIT_SIMD_INLINE V srl64(V a, int n) { return _mm512_srl_epi64(a, _mm_cvtsi32_si128(n)); }
  static ANYBIT_SIMD_INLINE V clamp64(V a, V lo, V hi) {
    return _mm512_max_epi64(_mm512_min_epi64(a, hi), lo);
  }
  static ANYBIT_SIMD_INLINE V blend_odd(V even, V odd) {
    return _mm512_mask_blend_epi32(0xaaaa, even, odd);
  }
  // Masked loads and stores as in AVX2, the masks in mask registers.
  static ANYBIT_SIMD_INLINE M first(int64_t n) {
    return static_cast<M>(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
  }
  static ANYBIT_SIMD_INLINE M lanes_between(int64_t a, int64_t b) {
    return static_cast<M>(first(b) & ~first(a));
  }
  static ANYBIT_SIMD_INLINE V load_masked(const int32_t* p, M m) {
    return _mm512_maskz_loadu_epi32(m, p);
  }
  static ANYBIT_SIMD_INLINE void store_masked(int32_t* p, V v, M m) {
    _mm512_mask_storeu_epi32(p, m, v);
  }
  static ANYBIT_SIMD_INLINE V zero_outside(M m, V v) { return _mm512_maskz_mov_epi32(m, v); }
  static ANYBIT_SIMD_INLINE M mask_of(uint32_t bits) { return static_cast<M>(bits); }
  static ANYBIT_SIMD_INLINE V load_first(const int32_t* p, int64_t n) {
    return load_masked(p, first(n));
  }
  static ANYBIT_SIMD_INLINE void store_first(int32_t* p, V v, int64_t n) {
    store_masked(p, v, first(n));
  }
  static ANYBIT_SIMD_INLINE V pack_pairs(V a, V b) {
    return _mm512_mask_blend_epi16(0xaaaaaaaa, a, _mm512_slli_epi32(b, 16));
  }
  // The lanes of v in `keep`, side by side from p (vpcompressd into a register, then a
  // masked store of as many lanes).
  static constexpr bool kCompress = true;
  using Keep = __mmask16;
  static ANYBIT_SIMD_INLINE Keep keep_lanes(uint32_t bits) { return static_cast<__mmask16>(bits); }
  static ANYBIT_SIMD_INLINE void store_kept(int32_t* p, V v, Keep keep) {
    _mm512_mask_storeu_epi32(p, first(__builtin_popcount(keep)),
                             _mm512_maskz_compress_epi32(keep, v));
  }
  static ANYBIT_SIMD_INLINE V deinterleave(V a, V b, int64_t phase) {
    const V even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_epi32(
        a, phase == 0 ? even : _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
  }
  // acc + x[2i] * w[2i] + x[2i+1] * w[2i+1] in each 32-bit lane, in one instruction (VNNI)
  static ANYBIT_SIMD_INLINE V dot_pairs(V acc, V x, V w) { return _mm512_dpwssd_epi32(acc, x, w); }
  // 16-bit lanes
  static ANYBIT_SIMD_INLINE V set1_16(int16_t v) { return _mm512_set1_epi16(v); }
  static ANYBIT_SIMD_INLINE V mullo16(V a, V b) { return _mm512_mullo_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V add16(V a, V b) { return _mm512_add_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V adds16(V a, V b) { return _mm512_adds_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V min16(V a, V b) { return _mm512_min_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V max16(V a, V b) { return _mm512_max_epi16(a, b); }
  static ANYBIT_SIMD_INLINE V shift_left16(V a, int n) {
    return _mm512_sll_epi16(a, _mm_cvtsi32_si128(n));
  }
  static ANYBIT_SIMD_INLINE V shift_right16(V a, int n) {
    return _mm512_sra_epi16(a, _mm_cvtsi32_si128(n));
  }
  // counted in a general register (popcnt), off the vector ports the additions need
  using Count = int64_t;
  static ANYBIT_SIMD_INLINE Count count_zero() { return 0; }
  static ANYBIT_SIMD_INLINE Count count_equal16(Count count, V a, V b) {
    return count + __builtin_popcount(_cvtmask32_u32(_mm512_cmpeq_epi16_mask(a, b)));
  }
  static ANYBIT_SIMD_INLINE int64_t sum16(Count count) { return count; }
};

// 8 output channels x 3 vectors: 24 accumulators, 3 image vectors and a weight in the 32
// registers (vpdpwssd needs none for the product). 4 vectors would spill.
constexpr int kConvBlockRows = 8, kConvVectors = 3;
constexpr int kStepRows = 4, kStepVectors = 2;

#include "anybit/intsim/kernels_simd.inc"

}  // namespace avx512
ANYBIT_SIMD_END
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#define ANYBIT_SIMD_DISPATCH(call) \
  switch (level()) {               \
    case Level::kAvx512:           \
      return avx512::call;         \
    case Level::kAvx2:             \
      return avx2::call;           \
    case Level::kNone:             \
      break;                       \
  }                                \
  throw Error("intsim: SIMD kernel called without AVX2")

void conv2d_direct(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                   const std::vector<int32_t>& w, const int32_t* bias, const Requantizer* rq,
                   int32_t* out, KernelScratch& scratch, const int32_t* add) {
  ANYBIT_SIMD_DISPATCH(conv2d_direct(g, x, x_zero_point, w, bias, rq, out, scratch, add));
}

int64_t conv2d_direct_grid(const Conv2dGeometry& g, int64_t* row) { ANYBIT_SIMD_DISPATCH(direct_grid(g, row)); }

int64_t stepwise_int16(const int16_t* w, int64_t rows, const int16_t* col, int64_t depth,
                       int64_t ld, const AccumulatorSpec& spec, int16_t* out) {
  ANYBIT_SIMD_DISPATCH(stepwise_int16(w, rows, col, depth, ld, spec, out));
}

void requantize(const int32_t* x, int64_t n, int32_t x_offset, const Requantizer& rq, int32_t* y) {
  ANYBIT_SIMD_DISPATCH(requantize(x, n, x_offset, rq, y));
}

void add(const AddParams& p, const int32_t* a, const int32_t* b, int64_t n, int32_t* y) {
  ANYBIT_SIMD_DISPATCH(add(p, a, b, n, y));
}

#else  // not x86-64 with GCC or Clang: level() is kNone and nothing calls these

void conv2d_direct(const Conv2dGeometry&, const int32_t*, int32_t, const std::vector<int32_t>&,
                   const int32_t*, const Requantizer*, int32_t*, KernelScratch&, const int32_t*) {
  throw Error("intsim: no SIMD kernels in this build");
}
int64_t conv2d_direct_grid(const Conv2dGeometry&, int64_t*) { throw Error("intsim: no SIMD kernels in this build"); }
int64_t stepwise_int16(const int16_t*, int64_t, const int16_t*, int64_t, int64_t,
                       const AccumulatorSpec&, int16_t*) {
  throw Error("intsim: no SIMD kernels in this build");
}
void requantize(const int32_t*, int64_t, int32_t, const Requantizer&, int32_t*) {
  throw Error("intsim: no SIMD kernels in this build");
}
void add(const AddParams&, const int32_t*, const int32_t*, int64_t, int32_t*) {
  throw Error("intsim: no SIMD kernels in this build");
}

#endif

#ifdef ANYBIT_INTSIM_X86
namespace {

__attribute__((target("avx2"))) inline void mulhilo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2"))) void philox_groups_avx2(uint32_t block0, int64_t groups, uint32_t c1,
                                                        uint32_t c2, uint32_t c3, uint32_t k0,
                                                        uint32_t k1, uint32_t* words) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t g = 0; g < groups; ++g) {
    __m256i a = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(block0 + 8 * static_cast<uint32_t>(g))), lanes);
    __m256i b = _mm256_set1_epi32(static_cast<int>(c1));
    __m256i c = _mm256_set1_epi32(static_cast<int>(c2));
    __m256i d = _mm256_set1_epi32(static_cast<int>(c3));
    uint32_t ka = k0, kb = k1;
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo(a, m0, hi0, lo0);
      mulhilo(c, m1, hi1, lo1);
      a = _mm256_xor_si256(_mm256_xor_si256(hi1, b), _mm256_set1_epi32(static_cast<int>(ka)));
      c = _mm256_xor_si256(_mm256_xor_si256(hi0, d), _mm256_set1_epi32(static_cast<int>(kb)));
      b = lo1;
      d = lo0;
      ka += 0x9E3779B9u;
      kb += 0xBB67AE85u;
    }
    uint32_t* out = words + 32 * g;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), c);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), d);
  }
}

__attribute__((target("avx512f"))) inline void mulhilo512(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

// philox_groups_avx2 two groups at a time: lanes 0-7 are group g, lanes 8-15 group g + 1.
__attribute__((target("avx512f"))) void philox_groups_avx512(uint32_t block0, int64_t groups, uint32_t c1,
                                                            uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                                                            uint32_t* words) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    __m512i a = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(block0 + 8 * static_cast<uint32_t>(g))), lanes);
    __m512i b = _mm512_set1_epi32(static_cast<int>(c1));
    __m512i c = _mm512_set1_epi32(static_cast<int>(c2));
    __m512i d = _mm512_set1_epi32(static_cast<int>(c3));
    uint32_t ka = k0, kb = k1;
    for (int r = 0; r < 10; ++r) {
      __m512i hi0, lo0, hi1, lo1;
      mulhilo512(a, m0, hi0, lo0);
      mulhilo512(c, m1, hi1, lo1);
      a = _mm512_xor_si512(_mm512_xor_si512(hi1, b), _mm512_set1_epi32(static_cast<int>(ka)));
      c = _mm512_xor_si512(_mm512_xor_si512(hi0, d), _mm512_set1_epi32(static_cast<int>(kb)));
      b = lo1;
      d = lo0;
      ka += 0x9E3779B9u;
      kb += 0xBB67AE85u;
    }
    uint32_t* out = words + 32 * g;
    const __m512i v[4] = {a, b, c, d};
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * j), _mm512_castsi512_si256(v[j]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 + 8 * j), _mm512_extracti64x4_epi64(v[j], 1));
    }
  }
  if (g < groups) philox_groups_avx2(block0 + 8 * static_cast<uint32_t>(g), groups - g, c1, c2, c3, k0, k1, words + 32 * g);
}

// The interpolated inverse normal of normals_from_words (kernels_simd.h), eight words at a
// time: out.vector(i, v) gets the floats of words i .. i + 7, out.scalar(i, v) one of the
// tail; the edge words' indices go to edges, their count is returned.
template <typename Out>
__attribute__((target("avx2"))) int64_t interpolate_avx2(const uint32_t* words, int64_t n, const float* pairs,
                                                         int32_t* edges, const Out& out) {
  // edge words (cells < 16 or >= 4080): (w + 16 * 2^20) mod 2^32 < 32 * 2^20, as a signed
  // comparison after flipping the sign bit
  const __m256i shift = _mm256_set1_epi32(16 << 20), flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i bound = _mm256_set1_epi32(static_cast<int>((32u << 20) ^ 0x80000000u));
  int64_t count = 0;
  const __m256i one = _mm256_set1_epi32(1), top = _mm256_set1_epi32(4094);
  const __m256i low_mask = _mm256_set1_epi32(0xfffff);
  const __m256 half = _mm256_set1_ps(0.5f), inv = _mm256_set1_ps(1.0f / 1048576.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i));
    const __m256i c = _mm256_min_epi32(_mm256_max_epi32(_mm256_srli_epi32(w, 20), one), top);
    // each cell's (t0, t1) side by side in one 64-bit load (scalar loads: cheaper than
    // gathers on x86 cores without fast gathers), then t0 of lanes 0-7 and t1 apart, in order
    alignas(32) int32_t cell[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(cell), c);
    double pair[8];
    for (int l = 0; l < 8; ++l) std::memcpy(&pair[l], pairs + 2 * cell[l], sizeof(double));
    const __m256 p0 = _mm256_castpd_ps(_mm256_setr_pd(pair[0], pair[1], pair[2], pair[3]));
    const __m256 p1 = _mm256_castpd_ps(_mm256_setr_pd(pair[4], pair[5], pair[6], pair[7]));
    const __m256 t0 = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256 t1 = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256 f = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w, low_mask)), half), inv);
    out.vector(i, _mm256_add_ps(t0, _mm256_mul_ps(f, _mm256_sub_ps(t1, t0))));
    const __m256i e = _mm256_cmpgt_epi32(bound, _mm256_xor_si256(_mm256_add_epi32(w, shift), flip));
    int mask = _mm256_movemask_ps(_mm256_castsi256_ps(e));
    while (mask) {
      const int l = __builtin_ctz(static_cast<unsigned>(mask));
      edges[count++] = static_cast<int32_t>(i + l);
      mask &= mask - 1;
    }
  }
  for (; i < n; ++i) {
    const uint32_t w = words[i];
    uint32_t c = w >> 20;
    if (c < 16 || c >= 4080) edges[count++] = static_cast<int32_t>(i);
    c = c < 1 ? 1 : c > 4094 ? 4094 : c;
    const float f = (static_cast<float>(w & 0xfffff) + 0.5f) * (1.0f / 1048576.0f);
    const float t0 = pairs[2 * c], t1 = pairs[2 * c + 1];
    out.scalar(i, t0 + f * (t1 - t0));
  }
  return count;
}

// The normals as doubles.
struct NormalsOut {
  double* z;
  __attribute__((target("avx2"))) void vector(int64_t i, __m256 v) const {
    _mm256_storeu_pd(z + i, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    _mm256_storeu_pd(z + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  void scalar(int64_t i, float v) const { z[i] = static_cast<double>(v); }
};

// round_half_even(sd * z) clamped to +-(2^31 - 1) (NaN: the lower bound, as max_pd gives it).
struct NoiseOut {
  int32_t* noise;
  double sd;
  __attribute__((target("avx2"))) static __m128i lanes(__m128 z, double sd) {
    __m256d r = _mm256_round_pd(_mm256_mul_pd(_mm256_cvtps_pd(z), _mm256_set1_pd(sd)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_pd(_mm256_max_pd(r, _mm256_set1_pd(-2147483647.0)), _mm256_set1_pd(2147483647.0));
    return _mm256_cvtpd_epi32(r);
  }
  __attribute__((target("avx2"))) void vector(int64_t i, __m256 v) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(noise + i), lanes(_mm256_castps256_ps128(v), sd));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(noise + i + 4), lanes(_mm256_extractf128_ps(v, 1), sd));
  }
  __attribute__((target("avx2"))) void scalar(int64_t i, float v) const {
    noise[i] = _mm_cvtsi128_si32(lanes(_mm_set_ss(v), sd));
  }
};

__attribute__((target("avx2"))) int64_t normals_avx2(const uint32_t* words, int64_t n, const float* pairs,
                                                     double* z, int32_t* edges) {
  return interpolate_avx2(words, n, pairs, edges, NormalsOut{z});
}

__attribute__((target("avx2"))) int64_t noise_avx2(const uint32_t* words, int64_t n, const float* pairs, double sd,
                                                   int32_t* noise, int32_t* edges) {
  return interpolate_avx2(words, n, pairs, edges, NoiseOut{noise, sd});
}

__attribute__((target("avx2"))) void square_block_avx2(const uint32_t* const w[4], const uint32_t* x, int64_t ld,
                                                       int64_t depth, uint64_t* out) {
  __m256i s[4][2];
  for (auto& row : s) row[0] = row[1] = _mm256_setzero_si256();
  for (int64_t k = 0; k < depth; ++k) {
    const uint32_t* xr = x + k * ld;
    const __m256i x0 = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xr)));
    const __m256i x1 = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xr + 4)));
    for (int r = 0; r < 4; ++r) {
      const __m256i a = _mm256_set1_epi64x(static_cast<int64_t>(w[r][k]));
      s[r][0] = _mm256_add_epi64(s[r][0], _mm256_mul_epu32(a, x0));
      s[r][1] = _mm256_add_epi64(s[r][1], _mm256_mul_epu32(a, x1));
    }
  }
  for (int r = 0; r < 4; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * r), s[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * r + 4), s[r][1]);
  }
}

// square_block16_avx512 on AVX2 with FMA: 8 positions in two vectors of 4 doubles, the
// squares already doubles.
__attribute__((target("avx2,fma"))) void square_block8_fma(const double* const w[4], const double* x,
                                                          int64_t ld, int64_t depth, double* out) {
  __m256d s[4][2];
  for (auto& row : s) row[0] = row[1] = _mm256_setzero_pd();
  for (int64_t k = 0; k < depth; ++k) {
    const __m256d x0 = _mm256_loadu_pd(x + k * ld), x1 = _mm256_loadu_pd(x + k * ld + 4);
    for (int r = 0; r < 4; ++r) {
      const __m256d a = _mm256_set1_pd(w[r][k]);
      s[r][0] = _mm256_fmadd_pd(a, x0, s[r][0]);
      s[r][1] = _mm256_fmadd_pd(a, x1, s[r][1]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    _mm256_storeu_pd(out + 8 * r, s[r][0]);
    _mm256_storeu_pd(out + 8 * r + 4, s[r][1]);
  }
}

__attribute__((target("avx512f"))) void square_block16_avx512(const double* const w[4], const uint32_t* x,
                                                              int64_t ld, int64_t depth, double* out) {
  __m512d s[4][2];
  for (auto& row : s) row[0] = row[1] = _mm512_setzero_pd();
  for (int64_t k = 0; k < depth; ++k) {
    const uint32_t* xr = x + k * ld;
    const __m512d x0 = _mm512_cvtepu32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr)));
    const __m512d x1 = _mm512_cvtepu32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 8)));
    for (int r = 0; r < 4; ++r) {
      const __m512d a = _mm512_set1_pd(w[r][k]);
      s[r][0] = _mm512_fmadd_pd(a, x0, s[r][0]);
      s[r][1] = _mm512_fmadd_pd(a, x1, s[r][1]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    _mm512_storeu_pd(out + 16 * r, s[r][0]);
    _mm512_storeu_pd(out + 16 * r + 8, s[r][1]);
  }
}

}  // namespace
#endif

bool square_block8_f64_runs() {
#ifdef ANYBIT_INTSIM_X86
  static const bool fma = __builtin_cpu_supports("fma");
  return level() >= Level::kAvx2 && fma;
#else
  return false;
#endif
}

void square_block8_f64(const double* const w[4], const double* x, int64_t ld, int64_t depth, double* out) {
#ifdef ANYBIT_INTSIM_X86
  square_block8_fma(w, x, ld, depth, out);
#else
  (void)w, (void)x, (void)ld, (void)depth, (void)out;
#endif
}

bool square_block16_f64(const double* const w[4], const uint32_t* x, int64_t ld, int64_t depth, double* out) {
#ifdef ANYBIT_INTSIM_X86
  if (level() >= Level::kAvx512) {
    square_block16_avx512(w, x, ld, depth, out);
    return true;
  }
#endif
  (void)w, (void)x, (void)ld, (void)depth, (void)out;
  return false;
}

bool square_block(const uint32_t* const w[4], const uint32_t* x, int64_t ld, int64_t depth, uint64_t* out) {
#ifdef ANYBIT_INTSIM_X86
  if (level() >= Level::kAvx2) {
    square_block_avx2(w, x, ld, depth, out);
    return true;
  }
#endif
  (void)w, (void)x, (void)ld, (void)depth, (void)out;
  return false;
}

bool philox_groups(uint32_t block0, int64_t groups, uint32_t c1, uint32_t c2, uint32_t c3,
                   uint32_t k0, uint32_t k1, uint32_t* words) {
#ifdef ANYBIT_INTSIM_X86
  if (level() >= Level::kAvx512) {
    philox_groups_avx512(block0, groups, c1, c2, c3, k0, k1, words);
    return true;
  }
  if (level() >= Level::kAvx2) {
    philox_groups_avx2(block0, groups, c1, c2, c3, k0, k1, words);
    return true;
  }
#endif
  (void)block0, (void)groups, (void)c1, (void)c2, (void)c3, (void)k0, (void)k1, (void)words;
  return false;
}

int64_t noise_from_words(const uint32_t* words, int64_t n, const float* pairs, double sd, int32_t* noise,
                         int32_t* edges) {
#ifdef ANYBIT_INTSIM_X86
  if (level() >= Level::kAvx2) return noise_avx2(words, n, pairs, sd, noise, edges);
#endif
  (void)words, (void)n, (void)pairs, (void)sd, (void)noise, (void)edges;
  return -1;
}

int64_t normals_from_words(const uint32_t* words, int64_t n, const float* pairs, double* z, int32_t* edges) {
#ifdef ANYBIT_INTSIM_X86
  if (level() >= Level::kAvx2) return normals_avx2(words, n, pairs, z, edges);
#endif
  (void)words, (void)n, (void)pairs, (void)z, (void)edges;
  return -1;
}

}  // namespace simd
}  // namespace intsim
}  // namespace anybit
