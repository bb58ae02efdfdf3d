// Hand-vectorized x86 kernels of the engine (kernels_simd.cc), behind the portable ones of
// kernels.cc: the fast conv2d as a direct convolution with its requantization fused, the
// stepwise accumulation in 16-bit lanes, requantization and add. Each exists for AVX2 and
// for AVX-512 (F, BW, VNNI) and is picked at run time from what the CPU reports
// (__builtin_cpu_supports); elsewhere (another CPU, another architecture, another compiler)
// level() is kNone and kernels.cc keeps its portable loops. Every variant gives the
// integers of the portable code; the tests hold them to the reference twins.
//
// The environment variable ANYBIT_INTSIM_SIMD=none|avx2|avx512, read once, caps the level
// (tests and benchmarks run the lower levels on a machine that has the higher ones).
// Internal to the engine: kernels.h is the interface.
#pragma once

#include <cstdint>
#include <vector>

#include "anybit/intsim/accumulator.h"
#include "anybit/intsim/kernels.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {
namespace simd {

enum class Level { kNone, kAvx2, kAvx512 };
Level level();

// Output channels the direct convolution computes together (the packed weights' row block).
constexpr int64_t kConvRows = 8;

// requantize_dyadic(acc - offset, m, zero_point, qmin, qmax) for one channel, as the lanes
// apply it (valid for m.m0 >= 0, which validate_model guarantees; callers check).
struct Requantizer {
  int32_t m0 = 0;
  DyadicRounding rounding;      // the rounding right shift of the product (requantize.h)
  int32_t lo = 0, hi = 0;       // the clamp, applied before the zero point is added
  int32_t zero_point = 0;
  Requantizer() = default;
  Requantizer(DyadicMultiplier m, int32_t zero_point, int32_t qmin, int32_t qmax);
};

// Whether conv2d_direct runs on this CPU for this geometry (strides up to 64 phase planes).
bool conv2d_direct_supports(const Conv2dGeometry& g);
// The positions conv2d_direct computes per output channel (its grid: output rows of *row
// positions, the columns past out_w and the positions past out_h rows not outputs).
int64_t conv2d_direct_grid(const Conv2dGeometry& g, int64_t* row);
// The direct convolution's weights (PackedWeights::direct) from w - z_w in [O][C/groups][kH][kW].
std::vector<int32_t> pack_conv2d_direct(const Conv2dGeometry& g, const int16_t* w);

// conv2d_acc32 for int16 operands from PackedWeights::direct: `out` gets the accumulators
// (rq null) or their requantization (rq[o] for output channel o: the layer's output).
// `add` (null: none) is added to each biased sum first (wrapping: the caller makes sure it
// fits int32), laid out on the kernel's grid: [n][o][conv2d_direct_grid(g)], output (oy, ox)
// at oy * row + ox. Needs conv2d_direct_supports(g) and x - x_zero_point within int16.
void conv2d_direct(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                   const std::vector<int32_t>& w, const int32_t* bias, const Requantizer* rq,
                   int32_t* out, KernelScratch& scratch, const int32_t* add = nullptr);

// The stepwise accumulation of kernels.cc in 16-bit lanes, for accumulators of at most 16
// bits and products that fit int16 (the caller checks |w| * |x| <= 32767):
// out[r][p] = the accumulator after k = 0 .. depth-1 of acc = fit(acc + w[r][k] * col[k][p]),
// for p < ld (a multiple of kStepwiseLanes; lanes past the data hold zeros). Returns the
// additions that left the range. The bias is the caller's.
constexpr int64_t kStepwiseLanes = 32;
int64_t stepwise_int16(const int16_t* w, int64_t rows, const int16_t* col, int64_t depth,
                       int64_t ld, const AccumulatorSpec& spec, int16_t* out);

// Philox4x32-10 (mac.h) of `groups` groups of 8 consecutive blocks: block block0 + 8 g + l
// at counter (block, c1, c2, c3) and key (k0, k1) gives word j to words[32 g + 8 j + l].
// Returns false where no SIMD level runs it (the caller computes the same portably).
bool philox_groups(uint32_t block0, int64_t groups, uint32_t c1, uint32_t c2, uint32_t c3,
                   uint32_t k0, uint32_t k1, uint32_t* words);
// z[i] = t0 + f * (t1 - t0) in float32 (no fused multiply-add), c = clamp(words[i] >> 20, 1,
// 4094), t0 = pairs[2 c], t1 = pairs[2 c + 1] (cell c's two ends side by side),
// f = ((words[i] & 0xfffff) + 0.5) / 2^20: the interpolated inverse normal of mac.cc, bit
// for bit; the indices of the edge words (cells below 16 or from 4080, which mac.cc redoes)
// go to edges[0, count) in order. Returns the count, or -1 where it does not run.
int64_t normals_from_words(const uint32_t* words, int64_t n, const float* pairs, double* z, int32_t* edges);
// normals_from_words's z, then noise[i] = round_half_even(sd * z) (the product in double)
// clamped to +-(2^31 - 1), NaN to the lower bound; edges as there (mac.cc redoes them).
int64_t noise_from_words(const uint32_t* words, int64_t n, const float* pairs, double sd, int32_t* noise,
                         int32_t* edges);

// out[r * 8 + c] = sum_k w_r[k] * x[k * ld + c] for r < 4, c < 8 (32 x 32 -> 64-bit
// products, exact below 2^64): the sums of squared products of conv2d_square_sums.
// Returns false where no SIMD level runs it.
bool square_block(const uint32_t* const w[4], const uint32_t* x, int64_t ld, int64_t depth, uint64_t* out);
// The same in doubles for 16 positions, out[r * 16 + c] (exact while every sum stays below
// 2^53, which the caller checks): AVX-512 only (8 lanes, fused multiply-adds of integers,
// exact); false elsewhere.
bool square_block16_f64(const double* const w[4], const uint32_t* x, int64_t ld, int64_t depth, double* out);
// The same for 8 positions, out[r * 8 + c], of squares given as doubles, with AVX2's fused
// multiply-adds (4 lanes); only where square_block8_f64_runs().
bool square_block8_f64_runs();
void square_block8_f64(const double* const w[4], const double* x, int64_t ld, int64_t depth, double* out);

// requantize_int32 and add_int (kernels.h), for parameters in the model format.
void requantize(const int32_t* x, int64_t n, int32_t x_offset, const Requantizer& rq, int32_t* y);
void add(const AddParams& p, const int32_t* a, const int32_t* b, int64_t n, int32_t* y);

}  // namespace simd
}  // namespace intsim
}  // namespace anybit
