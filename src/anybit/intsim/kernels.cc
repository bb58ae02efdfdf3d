// The fast, stepwise and plug-in (MAC) variants of the integer kernels, pooling, add and
// requantization. The reference twins live in kernels_reference.cc; see kernels.h for the
// contract.
#include "anybit/intsim/kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "anybit/intsim/clones.h"
#include "anybit/intsim/kernels_simd.h"

namespace anybit {
namespace intsim {
namespace {

int64_t round_up(int64_t v, int64_t multiple) { return (v + multiple - 1) / multiple * multiple; }

// Elementwise loops run over blocks of this many elements with a constant trip count, then
// a scalar tail: GCC's -O2 cost model ("very cheap") only vectorizes loops whose vector
// code replaces the scalar code entirely, which a constant multiple of the vector width
// guarantees.
constexpr int64_t kBlock = 16;

// --- the int32 GEMM of the fast path ---------------------------------------------------

// The micro-kernel computes kRows output channels x kCols patches at once: its 12 sums stay
// in vector registers while the depth loop streams through kRows + kCols rows.
constexpr int64_t kRows = 4, kCols = 3;
// The depth (K) is zero-padded to whole AVX2 vectors of int16. The depth loop then runs a
// visible multiple of the vector width, which the -O2 cost model needs.
constexpr int64_t kDepthAlign = 16;

// out[r * row_stride + c * col_stride] = bias[r] + sum_k w[r][k] * x[c][k] for r < rows,
// c < cols. w holds round_up(rows, kRows) rows and x round_up(cols, kCols), each
// depth_blocks * kDepthAlign long and zero-padded. The depth loop is a dot product per
// (r, c), which GCC vectorizes as pmaddwd (int16 pairs into int32 lanes) plus one
// horizontal sum at the end. Any order of the additions is exact: every partial sum is
// bounded by |bias| + sum |w x|, which the caller keeps inside int32.
template <typename T>
ANYBIT_INLINE void gemm_acc32(const T* w, int64_t rows, const T* x, int64_t cols,
                              int64_t depth_blocks, const int32_t* bias, int32_t* out,
                              int64_t row_stride, int64_t col_stride) {
  const int64_t depth = depth_blocks * kDepthAlign;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const T* wb = w + r0 * depth;
    const int64_t nr = std::min(kRows, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += kCols) {
      const T* xb = x + c0 * depth;
      int32_t s[kRows][kCols] = {};
      for (int64_t k = 0; k < depth; ++k) {
#pragma GCC unroll 4
        for (int64_t r = 0; r < kRows; ++r)
#pragma GCC unroll 3
          for (int64_t c = 0; c < kCols; ++c)
            s[r][c] += static_cast<int32_t>(wb[r * depth + k]) * static_cast<int32_t>(xb[c * depth + k]);
      }
      const int64_t nc = std::min(kCols, cols - c0);
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t c = 0; c < nc; ++c)
          out[(r0 + r) * row_stride + (c0 + c) * col_stride] = (bias ? bias[r0 + r] : 0) + s[r][c];
    }
  }
}

ANYBIT_CLONES void gemm_int16_acc32(const int16_t* w, int64_t rows, const int16_t* x, int64_t cols,
                                    int64_t depth_blocks, const int32_t* bias, int32_t* out,
                                    int64_t row_stride, int64_t col_stride) {
  gemm_acc32(w, rows, x, cols, depth_blocks, bias, out, row_stride, col_stride);
}

ANYBIT_CLONES void gemm_int32_acc32(const int32_t* w, int64_t rows, const int32_t* x, int64_t cols,
                                    int64_t depth_blocks, const int32_t* bias, int32_t* out,
                                    int64_t row_stride, int64_t col_stride) {
  gemm_acc32(w, rows, x, cols, depth_blocks, bias, out, row_stride, col_stride);
}

// The GEMM of one group of a packed layer: rows [group * rows, (group + 1) * rows).
template <typename T>
void gemm_group(const PackedWeights<T>& w, int64_t group, const T* x, int64_t cols,
                const int32_t* bias, int32_t* out, int64_t row_stride, int64_t col_stride) {
  const T* wg = w.data.data() + group * w.rows_padded * w.depth_padded;
  const int32_t* bg = bias ? bias + group * w.rows : nullptr;
  const int64_t blocks = w.depth_padded / kDepthAlign;
  if constexpr (std::is_same_v<T, int16_t>)
    gemm_int16_acc32(wg, w.rows, x, cols, blocks, bg, out, row_stride, col_stride);
  else
    gemm_int32_acc32(wg, w.rows, x, cols, blocks, bg, out, row_stride, col_stride);
}

// x - z_x of one image as a zero-padded channels-last image:
// hwc[(iy * Wp + ix) * C + c], iy and ix counted in the padded image. Padding is z_x - z_x.
template <typename T>
void image_to_hwc(const Conv2dGeometry& g, const int32_t* image, int32_t x_zero_point, T* hwc) {
  const int64_t C = g.in_channels, Wp = g.in_w + 2 * g.pad_w;
  std::fill(hwc, hwc + (g.in_h + 2 * g.pad_h) * Wp * C, T{0});
  for (int64_t iy = 0; iy < g.in_h; ++iy) {
    T* row = hwc + ((iy + g.pad_h) * Wp + g.pad_w) * C;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t* src = image + (c * g.in_h + iy) * g.in_w;
      for (int64_t ix = 0; ix < g.in_w; ++ix) row[ix * C + c] = static_cast<T>(src[ix] - x_zero_point);
    }
  }
}

// dst[0, n) = src[0, n) for the short runs of a patch: whole 16-byte moves inline, where
// std::copy_n would call memmove for every run.
template <typename T>
ANYBIT_INLINE T* copy_run(const T* src, int64_t n, T* dst) {
  constexpr int64_t kChunk = 16 / sizeof(T);
  int64_t i = 0;
  for (; i + kChunk <= n; i += kChunk) std::memcpy(dst + i, src + i, 16);
  for (; i < n; ++i) dst[i] = src[i];
  return dst + n;
}

// The GEMM's patch matrix of one group: patches[p][(ky, kx, c)], p = (oy, ox), the window of
// output position p, depth zero-padded to depth_padded and rows to a multiple of kCols.
// Each kernel row is one contiguous run of the channels-last image (kW runs with groups or
// horizontal dilation).
template <typename T>
void hwc_to_patches(const Conv2dGeometry& g, const T* hwc, int64_t group, int64_t depth_padded,
                    T* patches) {
  const int64_t OH = g.out_h(), OW = g.out_w(), C = g.in_channels, Cg = C / g.groups;
  const int64_t Wp = g.in_w + 2 * g.pad_w;
  const bool row_is_one_run = g.groups == 1 && g.dilation_w == 1;
  T* dst = patches;
  for (int64_t oy = 0; oy < OH; ++oy) {
    for (int64_t ox = 0; ox < OW; ++ox, dst += depth_padded) {
      T* d = dst;
      for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
        const T* src =
            hwc + ((oy * g.stride_h + ky * g.dilation_h) * Wp + ox * g.stride_w) * C + group * Cg;
        if (row_is_one_run) {
          d = copy_run(src, g.kernel_w * C, d);
          continue;
        }
        for (int64_t kx = 0; kx < g.kernel_w; ++kx) d = copy_run(src + kx * g.dilation_w * C, Cg, d);
      }
      std::fill(d, dst + depth_padded, T{0});
    }
  }
  std::fill(dst, patches + round_up(OH * OW, kCols) * depth_padded, T{0});
}

template <typename T>
void conv2d_acc32_impl(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                       const PackedWeights<T>& w, const int32_t* bias, int32_t* acc,
                       std::vector<T>& image, std::vector<T>& patches) {
  const int64_t P = g.out_h() * g.out_w(), Og = g.out_channels / g.groups;
  image.resize(static_cast<size_t>((g.in_h + 2 * g.pad_h) * (g.in_w + 2 * g.pad_w) * g.in_channels));
  patches.resize(static_cast<size_t>(round_up(P, kCols) * w.depth_padded));
  for (int64_t n = 0; n < g.batch; ++n) {
    image_to_hwc(g, x + n * g.in_channels * g.in_h * g.in_w, x_zero_point, image.data());
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      hwc_to_patches(g, image.data(), grp, w.depth_padded, patches.data());
      gemm_group(w, grp, patches.data(), P, bias, acc + (n * g.out_channels + grp * Og) * P, P, 1);
    }
  }
}

template <typename T>
void linear_acc32_impl(int64_t batch, const int32_t* x, int32_t x_zero_point,
                       const PackedWeights<T>& w, const int32_t* bias, int32_t* acc,
                       std::vector<T>& rows) {
  rows.assign(static_cast<size_t>(round_up(batch, kCols) * w.depth_padded), T{0});
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t i = 0; i < w.depth; ++i)
      rows[n * w.depth_padded + i] = static_cast<T>(x[n * w.depth + i] - x_zero_point);
  // acc[n][o]: output channels are the GEMM's rows, images its columns.
  gemm_group(w, 0, rows.data(), batch, bias, acc, 1, w.rows);
}

// --- stepwise accumulation -------------------------------------------------------------

// Output elements computed side by side, one per vector lane.
constexpr int64_t kLanes = 16;

// dst[i] = src[i] - z for i < n: a row of a zero-padded image.
template <typename T>
ANYBIT_INLINE void offset_row(const int32_t* __restrict src, int64_t n, int32_t z,
                              T* __restrict dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i] - z);
}
ANYBIT_CLONES void offset_row_int16(const int32_t* src, int64_t n, int32_t z, int16_t* dst) {
  offset_row(src, n, z, dst);
}
ANYBIT_CLONES void offset_row_int32(const int32_t* src, int64_t n, int32_t z, int32_t* dst) {
  offset_row(src, n, z, dst);
}

// Slack the patch matrix needs after its last row: im2col_offset copies whole 16-byte
// chunks, which may run past a row's end (into what is written next).
template <typename T>
constexpr int64_t kIm2colSlack = 16 / sizeof(T);

// im2col of one group of one image: col[k][p] = x - z_x (0 for padding), k = (c, ky, kx)
// (the reference's order), p = (oy, ox); rows are ld long, zero beyond P, and col has
// kIm2colSlack<T> elements after its last row. The group is first copied into `padded`
// as x - z_x with its zero padding, so that every output row of a patch row is one run of
// a padded image row (every stride_w-th value): no test per value, and with stride 1 a copy
// of whole chunks, which overwrites the start of the next row before that row is written.
template <typename T>
void im2col_offset(const Conv2dGeometry& g, const int32_t* x_group, int32_t x_zero_point, T* col,
                   int64_t ld, std::vector<T>& padded) {
  const int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW;
  const int64_t Cg = g.in_channels / g.groups;
  const int64_t Hp = g.in_h + 2 * g.pad_h, Wp = g.in_w + 2 * g.pad_w;
  constexpr int64_t kChunk = 16 / sizeof(T);
  padded.assign(static_cast<size_t>(Cg * Hp * Wp + kChunk), T{0});  // + the over-read of a chunk
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t iy = 0; iy < g.in_h; ++iy) {
      T* dst = padded.data() + (c * Hp + iy + g.pad_h) * Wp + g.pad_w;
      const int32_t* src = x_group + (c * g.in_h + iy) * g.in_w;
      if constexpr (std::is_same_v<T, int16_t>)
        offset_row_int16(src, g.in_w, x_zero_point, dst);
      else
        offset_row_int32(src, g.in_w, x_zero_point, dst);
    }
  T* dst = col;
  for (int64_t c = 0; c < Cg; ++c) {
    for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
      for (int64_t kx = 0; kx < g.kernel_w; ++kx, dst += ld) {
        const T* src = padded.data() + (c * Hp + ky * g.dilation_h) * Wp + kx * g.dilation_w;
        for (int64_t oy = 0; oy < OH; ++oy) {
          const T* s = src + oy * g.stride_h * Wp;
          T* row = dst + oy * OW;
          if (g.stride_w == 1) {
            for (int64_t i = 0; i < OW; i += kChunk) std::memcpy(row + i, s + i, 16);
          } else {
            for (int64_t ox = 0; ox < OW; ++ox) row[ox] = s[ox * g.stride_w];
          }
        }
        std::fill(dst + P, dst + ld, T{0});
      }
    }
  }
}

// v brought into the accumulator, in a lane of type A: wrapped (the low `bits` bits,
// sign-extended: shift = width of A - bits) or saturated to [lo, hi].
template <Overflow kMode, typename A>
ANYBIT_INLINE A fit_lane(A v, int shift, A lo, A hi) {
  if constexpr (kMode == Overflow::kWrap) {
    using U = std::make_unsigned_t<A>;
    return static_cast<A>(static_cast<U>(v) << shift) >> shift;
  } else {
    return v < lo ? lo : (v > hi ? hi : v);
  }
}

// out[r * row_stride + c * col_stride] for r < rows, c < cols, exactly as
// conv2d_int_reference adds: acc = 0, acc = fit(acc + w[r][k] * col[k][c]) for k in order,
// then acc = fit(acc + bias[r]). Returns the additions that overflowed. col is [depth][ld]
// with ld = lane_blocks * kLanes; lanes beyond cols hold zeros, which never overflow (only
// their bias additions could, and those are not made). A: the lane type, which must hold
// any accumulator value plus any product (int32 for int16 operands and at most 31 bits,
// int64 otherwise). sums: ld lanes of scratch, one row of accumulators; the loop over them
// is what vectorizes, while k runs in order outside it.
template <typename T, typename A, Overflow kMode>
ANYBIT_INLINE int64_t stepwise(const T* __restrict w, int64_t rows, const T* __restrict col,
                               int64_t cols, int64_t depth, int64_t lane_blocks,
                               const int32_t* bias, const AccumulatorSpec& spec,
                               A* __restrict sums, int32_t* out, int64_t row_stride,
                               int64_t col_stride) {
  const int64_t ld = lane_blocks * kLanes;  // a visible multiple of the vector width
  const int shift = static_cast<int>(8 * sizeof(A)) - spec.bits;
  const A hi = static_cast<A>((int64_t{1} << (spec.bits - 1)) - 1), lo = -hi - 1;
  int64_t overflows = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* wr = w + r * depth;
    for (int64_t p = 0; p < ld; ++p) sums[p] = 0;
    for (int64_t k = 0; k < depth; ++k) {
      const T wk = wr[k];
      const T* __restrict ck = col + k * ld;
      A count = 0;
      for (int64_t p = 0; p < ld; ++p) {
        const A t = sums[p] + static_cast<A>(wk) * static_cast<A>(ck[p]);
        const A f = fit_lane<kMode>(t, shift, lo, hi);
        count += f != t;
        sums[p] = f;
      }
      overflows += count;
    }
    // The bias, once per output: in 64 bits, as it may not fit a lane next to the sum.
    for (int64_t c = 0; c < cols; ++c) {
      bool overflowed = false;
      const int64_t v = fit_accumulator(int64_t{sums[c]} + (bias ? bias[r] : 0), spec, &overflowed);
      overflows += overflowed ? 1 : 0;
      out[r * row_stride + c * col_stride] = static_cast<int32_t>(v);
    }
  }
  return overflows;
}

// One clone per operand type, lane type and overflow mode. (With both modes inlined into
// one function GCC no longer sees that ld is a multiple of the vector width.)
#define ANYBIT_STEPWISE(name, T, A, mode)                                                    \
  ANYBIT_CLONES int64_t name(const T* w, int64_t rows, const T* col, int64_t cols,           \
                             int64_t depth, int64_t lane_blocks, const int32_t* bias,        \
                             const AccumulatorSpec& spec, A* sums, int32_t* out,             \
                             int64_t row_stride, int64_t col_stride) {                       \
    return stepwise<T, A, mode>(w, rows, col, cols, depth, lane_blocks, bias, spec, sums,    \
                                out, row_stride, col_stride);                                \
  }
ANYBIT_STEPWISE(stepwise_int16_lanes32_wrap, int16_t, int32_t, Overflow::kWrap)
ANYBIT_STEPWISE(stepwise_int16_lanes32_saturate, int16_t, int32_t, Overflow::kSaturate)
ANYBIT_STEPWISE(stepwise_int16_lanes64_wrap, int16_t, int64_t, Overflow::kWrap)
ANYBIT_STEPWISE(stepwise_int16_lanes64_saturate, int16_t, int64_t, Overflow::kSaturate)
ANYBIT_STEPWISE(stepwise_int32_lanes64_wrap, int32_t, int64_t, Overflow::kWrap)
ANYBIT_STEPWISE(stepwise_int32_lanes64_saturate, int32_t, int64_t, Overflow::kSaturate)
#undef ANYBIT_STEPWISE

template <typename T>
int64_t stepwise_dispatch(const T* w, int64_t rows, const T* col, int64_t cols, int64_t depth,
                          int64_t ld, const int32_t* bias, const AccumulatorSpec& spec,
                          int32_t* out, int64_t row_stride, int64_t col_stride) {
  check_accumulator_spec(spec);
  const bool wrap = spec.overflow == Overflow::kWrap;
  const int64_t blocks = ld / kLanes;
  std::vector<int64_t> sums64;
  if constexpr (std::is_same_v<T, int16_t>) {
    // |product| <= 2^30 and |acc| <= 2^30 at 31 bits: every sum fits an int32 lane.
    if (spec.bits <= 31) {
      std::vector<int32_t> sums32(static_cast<size_t>(ld));
      return (wrap ? stepwise_int16_lanes32_wrap : stepwise_int16_lanes32_saturate)(
          w, rows, col, cols, depth, blocks, bias, spec, sums32.data(), out, row_stride,
          col_stride);
    }
    sums64.resize(static_cast<size_t>(ld));
    return (wrap ? stepwise_int16_lanes64_wrap : stepwise_int16_lanes64_saturate)(
        w, rows, col, cols, depth, blocks, bias, spec, sums64.data(), out, row_stride,
        col_stride);
  } else {
    sums64.resize(static_cast<size_t>(ld));
    return (wrap ? stepwise_int32_lanes64_wrap : stepwise_int32_lanes64_saturate)(
        w, rows, col, cols, depth, blocks, bias, spec, sums64.data(), out, row_stride,
        col_stride);
  }
}

// The least and the greatest of v[0, n), n >= 1: kBlock running minima and maxima, which
// vectorize (elementwise, no reduction in the loop), then reduced.
template <typename T>
ANYBIT_INLINE void min_max(const T* v, int64_t n, int64_t* lo, int64_t* hi) {
  T a[kBlock], b[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) a[j] = b[j] = v[0];
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (int64_t j = 0; j < kBlock; ++j) {
      const T x = v[i + j];
      a[j] = x < a[j] ? x : a[j];
      b[j] = x > b[j] ? x : b[j];
    }
  }
  for (; i < n; ++i) a[0] = std::min(a[0], v[i]), b[0] = std::max(b[0], v[i]);
  *lo = *std::min_element(a, a + kBlock);
  *hi = *std::max_element(b, b + kBlock);
}
ANYBIT_CLONES void min_max_int16(const int16_t* v, int64_t n, int64_t* lo, int64_t* hi) {
  min_max(v, n, lo, hi);
}
ANYBIT_CLONES void min_max_int32(const int32_t* v, int64_t n, int64_t* lo, int64_t* hi) {
  min_max(v, n, lo, hi);
}

// max |v[i] - z| over v[0, n) (0 for n = 0)
template <typename T>
int64_t max_abs_offset(const T* v, int64_t n, int64_t z) {
  if (n <= 0) return 0;
  int64_t lo = 0, hi = 0;
  if constexpr (std::is_same_v<T, int16_t>)
    min_max_int16(v, n, &lo, &hi);
  else
    min_max_int32(v, n, &lo, &hi);
  return std::max(std::abs(lo - z), std::abs(hi - z));
}

// The stepwise accumulation runs in 16-bit lanes (simd::stepwise_int16) for an accumulator
// of at most 16 bits, on a CPU with the kernels, when every product of int16 operands fits
// int16: then an addition costs a few 16-bit lane operations instead of int32 ones (W8A8:
// |x - z_x| <= 255, |w| <= 128, products within 32640). 0 when it cannot: otherwise the
// largest |x - z_x| it allows.
template <typename T>
int64_t int16_lanes_x_limit(const AccumulatorSpec& spec, const T* w, int64_t w_size) {
  if (!std::is_same_v<T, int16_t> || spec.bits > 16 || simd::level() == simd::Level::kNone)
    return 0;
  return 32767 / std::max<int64_t>(1, max_abs_offset(w, w_size, 0));
}

// out[i] = fit(sums[i] + bias) for i < n, counting the additions that overflow: the bias
// added to a row of 16-bit accumulators, in int32 lanes (|bias| <= 2^30 keeps the sum in
// int32). shift, lo, hi: fit_lane's for int32 lanes.
template <Overflow kMode>
ANYBIT_INLINE int64_t add_bias_lanes(const int16_t* __restrict sums, int64_t n, int32_t bias,
                                     int shift, int32_t lo, int32_t hi, int32_t* __restrict out) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = sums[i] + bias;
    const int32_t f = fit_lane<kMode>(t, shift, lo, hi);
    count += f != t;
    out[i] = f;
  }
  return count;
}
ANYBIT_CLONES int64_t add_bias_lanes_wrap(const int16_t* sums, int64_t n, int32_t bias, int shift,
                                          int32_t lo, int32_t hi, int32_t* out) {
  return add_bias_lanes<Overflow::kWrap>(sums, n, bias, shift, lo, hi, out);
}
ANYBIT_CLONES int64_t add_bias_lanes_saturate(const int16_t* sums, int64_t n, int32_t bias,
                                              int shift, int32_t lo, int32_t hi, int32_t* out) {
  return add_bias_lanes<Overflow::kSaturate>(sums, n, bias, shift, lo, hi, out);
}

// stepwise() through simd::stepwise_int16: the 16-bit accumulators of every row into sums,
// then the bias through the accumulator as there (in 64 bits where it is large or the
// outputs are strided).
int64_t stepwise_lanes16(const int16_t* w, int64_t rows, const int16_t* col, int64_t cols,
                         int64_t depth, int64_t ld, const int32_t* bias,
                         const AccumulatorSpec& spec, int32_t* out, int64_t row_stride,
                         int64_t col_stride, std::vector<int16_t>& sums) {
  check_accumulator_spec(spec);
  sums.resize(static_cast<size_t>(rows * ld));
  int64_t overflows = simd::stepwise_int16(w, rows, col, depth, ld, spec, sums.data());
  const int32_t hi = static_cast<int32_t>((int64_t{1} << (spec.bits - 1)) - 1), lo = -hi - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t b = bias ? bias[r] : 0;
    if (col_stride == 1 && b >= -(1 << 30) && b <= (1 << 30)) {
      const auto add_bias = spec.overflow == Overflow::kWrap ? add_bias_lanes_wrap
                                                             : add_bias_lanes_saturate;
      overflows += add_bias(sums.data() + r * ld, cols, b, 32 - spec.bits, lo, hi,
                            out + r * row_stride);
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) {
      bool overflowed = false;
      const int64_t v =
          fit_accumulator(int64_t{sums[r * ld + c]} + (bias ? bias[r] : 0), spec, &overflowed);
      overflows += overflowed ? 1 : 0;
      out[r * row_stride + c * col_stride] = static_cast<int32_t>(v);
    }
  }
  return overflows;
}

template <typename T>
void conv2d_stepwise_impl(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                          const T* w, const int32_t* bias, const AccumulatorSpec& spec,
                          int32_t* acc, int64_t* overflows, std::vector<T>& col,
                          std::vector<T>& padded, std::vector<int16_t>& sums16) {
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t K = g.patch_size();
  // 16-bit lanes are decided per image and group, from its own values (which are then in
  // cache for the patch matrix); rows fit either kernel.
  const int64_t x_limit = int16_lanes_x_limit(spec, w, g.out_channels * K);
  const int64_t P = g.out_h() * g.out_w();
  const int64_t ld = round_up(P, x_limit > 0 ? simd::kStepwiseLanes : kLanes);
  col.resize(static_cast<size_t>(K * ld + kIm2colSlack<T>));
  int64_t count = 0;
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int32_t* xg = x + (n * g.in_channels + grp * Cg) * g.in_h * g.in_w;
      const bool lanes16 =
          x_limit > 0 && max_abs_offset(xg, Cg * g.in_h * g.in_w, x_zero_point) <= x_limit;
      im2col_offset(g, xg, x_zero_point, col.data(), ld, padded);
      const int32_t* bg = bias ? bias + grp * Og : nullptr;
      int32_t* out = acc + (n * g.out_channels + grp * Og) * P;
      if constexpr (std::is_same_v<T, int16_t>) {
        if (lanes16) {
          count += stepwise_lanes16(w + grp * Og * K, Og, col.data(), P, K, ld, bg, spec, out, P, 1,
                                    sums16);
          continue;
        }
      }
      count += stepwise_dispatch(w + grp * Og * K, Og, col.data(), P, K, ld, bg, spec, out, P, 1);
    }
  }
  if (overflows) *overflows += count;
}

template <typename T>
void linear_stepwise_impl(int64_t batch, int64_t in_features, int64_t out_features,
                          const int32_t* x, int32_t x_zero_point, const T* w, const int32_t* bias,
                          const AccumulatorSpec& spec, int32_t* acc, int64_t* overflows,
                          std::vector<T>& col, std::vector<int16_t>& sums16) {
  const int64_t x_limit = int16_lanes_x_limit(spec, w, out_features * in_features);
  const bool lanes16 =
      x_limit > 0 && max_abs_offset(x, batch * in_features, x_zero_point) <= x_limit;
  // The images are the lanes: col[i][n] = x[n][i] - z_x.
  const int64_t ld = round_up(batch, lanes16 ? simd::kStepwiseLanes : kLanes);
  col.assign(static_cast<size_t>(in_features * ld), T{0});
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t i = 0; i < in_features; ++i)
      col[i * ld + n] = static_cast<T>(x[n * in_features + i] - x_zero_point);
  int64_t count = 0;
  if constexpr (std::is_same_v<T, int16_t>) {
    if (lanes16)
      count = stepwise_lanes16(w, out_features, col.data(), batch, in_features, ld, bias, spec, acc,
                               1, out_features, sums16);
  }
  if (!lanes16)
    count = stepwise_dispatch(w, out_features, col.data(), batch, in_features, ld, bias, spec, acc,
                              1, out_features);
  if (overflows) *overflows += count;
}

// --- the plug-in path ------------------------------------------------------------------

// One dot product through the MAC, with the bookkeeping both layer kinds share.
struct MacDriver {
  MacModel& mac;
  Accumulator& acc;
  MacStats* stats;
  Accumulator exact_acc;  // a second register: the exact result must not count overflows twice
  MacContext ctx;

  int64_t first_image = 0;

  MacDriver(MacModel& m, Accumulator& a, MacStats* s, std::string_view layer, const char* op,
            const MacContext* base)
      : mac(m), acc(a), stats(s), exact_acc(a.spec()) {
    if (base) {
      ctx.info = base->info;
      first_image = base->image;
    }
    ctx.layer = layer;
    ctx.op = op;
    ctx.acc = &acc;
    if (s) ctx.clipped = &s->clipped;
  }

  int64_t run(const int32_t* xv, const int32_t* wv, size_t n, const int32_t* bias, int64_t oc) {
    int64_t r = acc.fit(mac.dot(xv, wv, n, ctx));
    if (stats) {
      ++stats->dot_products;
      if (!mac.is_exact()) {
        const int64_t e = dot_exact(xv, wv, n, exact_acc);
        const int64_t err = std::llabs(r - e);
        stats->sum_abs_error += static_cast<double>(err);
        stats->max_abs_error = std::max(stats->max_abs_error, err);
      }
    }
    if (bias) r = acc.add(r, bias[oc]);
    return r;
  }
};

// --- requantization in 32-bit lanes ----------------------------------------------------
//
// requantize.h's functions restated without 64-bit lanes except one unsigned 32 x 32 -> 64
// product (SSE2 pmuludq), so that loops over them vectorize. Bit-identical; kernels_test
// holds them to requantize.h.

constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int32_t kInt32Min = std::numeric_limits<int32_t>::min();

// The int32 bound on v's side of zero: kInt32Min for a negative v, kInt32Max otherwise.
ANYBIT_INLINE int32_t bound_of_sign(int32_t v) { return (v >> 31) ^ kInt32Max; }

// saturate_int32(int64{a} - b): the wrapped difference, or the bound on a's side when the
// signs show that it wrapped.
ANYBIT_INLINE int32_t saturating_sub(int32_t a, int32_t b) {
  const int32_t d = static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
  return ((a ^ b) & (a ^ d)) < 0 ? bound_of_sign(a) : d;
}

// saturate_int32(int64{a} + b)
ANYBIT_INLINE int32_t saturating_add(int32_t a, int32_t b) {
  const int32_t s = static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  return ((a ^ s) & (b ^ s)) < 0 ? bound_of_sign(a) : s;
}

// saturate_int32(int64{v} * 2^shift), shift in [0, 31].
struct SaturatingShift {
  int shift;
  int32_t max_in, min_in;  // the inputs whose product still fits

  explicit SaturatingShift(int s) : shift(s), max_in(kInt32Max >> s), min_in(kInt32Min >> s) {}
  ANYBIT_INLINE int32_t operator()(int32_t v) const {
    const int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(v) << shift);
    return (v > max_in || v < min_in) ? bound_of_sign(v) : shifted;
  }
};

// multiply_by_dyadic(v, m) for m.m0 >= 0 (validate_model guarantees it), as DyadicRounding
// (requantize.h) computes it, written so that loops over it vectorize.
struct LaneMultiplier {
  int64_t m0;
  DyadicRounding r;

  explicit LaneMultiplier(DyadicMultiplier m) : m0(m.m0), r(m) {}
  ANYBIT_INLINE int32_t operator()(int32_t v) const {
    const uint64_t u = static_cast<uint64_t>(int64_t{v} * m0) ^ (uint64_t{1} << 63);
    const uint64_t t = (u + r.half_minus_one + ((u >> r.e) & r.lsb)) >> r.e;
    const int64_t q = static_cast<int64_t>(t - r.offset);
    return q > kInt32Max ? kInt32Max : (q < kInt32Min ? kInt32Min : static_cast<int32_t>(q));
  }
};

// requantize_dyadic(v, m, zero_point, qmin, qmax) for an int32 v. The zero point is added
// after clamping to [qmin - z, qmax - z] (taken in 64 bits, then clamped to int32), which
// is the same clamp without a 64-bit sum.
struct LaneRequantizer {
  LaneMultiplier multiplier;
  int32_t zero_point, lo, hi;

  LaneRequantizer(DyadicMultiplier m, int32_t z, int32_t qmin, int32_t qmax)
      : multiplier(m),
        zero_point(z),
        lo(saturate_int32(int64_t{qmin} - z)),
        hi(saturate_int32(int64_t{qmax} - z)) {}
  ANYBIT_INLINE int32_t operator()(int32_t v) const {
    const int32_t q = multiplier(v);
    return (q < lo ? lo : (q > hi ? hi : q)) + zero_point;
  }
};

ANYBIT_CLONES void requantize_lanes(const int32_t* __restrict x, int64_t n, int32_t x_offset,
                                    const LaneRequantizer& rq, int32_t* __restrict y) {
  const LaneRequantizer r = rq;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) y[i + j] = r(saturating_sub(x[i + j], x_offset));
  for (; i < n; ++i) y[i] = r(saturating_sub(x[i], x_offset));
}

// add_int's arithmetic for one element.
struct LaneAdder {
  SaturatingShift up;
  LaneMultiplier a_multiplier, b_multiplier;
  LaneRequantizer out;
  int32_t a_zero_point, b_zero_point;

  explicit LaneAdder(const AddParams& p)
      : up(p.left_shift),
        a_multiplier(p.a_multiplier),
        b_multiplier(p.b_multiplier),
        out(p.out_multiplier, p.out_zero_point, p.qmin, p.qmax),
        a_zero_point(p.a_zero_point),
        b_zero_point(p.b_zero_point) {}
  ANYBIT_INLINE int32_t operator()(int32_t a, int32_t b) const {
    const int32_t a_scaled = a_multiplier(up(saturating_sub(a, a_zero_point)));
    const int32_t b_scaled = b_multiplier(up(saturating_sub(b, b_zero_point)));
    return out(saturating_add(a_scaled, b_scaled));
  }
};

ANYBIT_CLONES void add_lanes(const LaneAdder& adder, const int32_t* __restrict a,
                             const int32_t* __restrict b, int64_t n, int32_t* __restrict y) {
  const LaneAdder f = adder;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) y[i + j] = f(a[i + j], b[i + j]);
  for (; i < n; ++i) y[i] = f(a[i], b[i]);
}

}  // namespace

template <typename T>
PackedWeights<T> pack_conv2d_weights(const Conv2dGeometry& g, const T* w) {
  PackedWeights<T> p;
  const int64_t Cg = g.in_channels / g.groups;
  p.groups = g.groups;
  p.rows = g.out_channels / g.groups;
  p.rows_padded = round_up(p.rows, kRows);
  p.depth = g.patch_size();
  p.depth_padded = round_up(p.depth, kDepthAlign);
  p.data.assign(static_cast<size_t>(p.groups * p.rows_padded * p.depth_padded), T{0});
  for (int64_t o = 0; o < g.out_channels; ++o) {
    T* dst = p.data.data() + ((o / p.rows) * p.rows_padded + o % p.rows) * p.depth_padded;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t ky = 0; ky < g.kernel_h; ++ky)
        for (int64_t kx = 0; kx < g.kernel_w; ++kx)
          dst[(ky * g.kernel_w + kx) * Cg + c] = w[((o * Cg + c) * g.kernel_h + ky) * g.kernel_w + kx];
  }
  if constexpr (std::is_same_v<T, int16_t>)
    if (simd::conv2d_direct_supports(g)) p.direct = simd::pack_conv2d_direct(g, w);
  return p;
}

template <typename T>
PackedWeights<T> pack_linear_weights(int64_t out_features, int64_t in_features, const T* w) {
  PackedWeights<T> p;
  p.rows = out_features;
  p.rows_padded = round_up(out_features, kRows);
  p.depth = in_features;
  p.depth_padded = round_up(in_features, kDepthAlign);
  p.data.assign(static_cast<size_t>(p.rows_padded * p.depth_padded), T{0});
  for (int64_t o = 0; o < out_features; ++o)
    std::copy_n(w + o * in_features, in_features, p.data.data() + o * p.depth_padded);
  return p;
}

template PackedWeights<int16_t> pack_conv2d_weights(const Conv2dGeometry&, const int16_t*);
template PackedWeights<int32_t> pack_conv2d_weights(const Conv2dGeometry&, const int32_t*);
template PackedWeights<int16_t> pack_linear_weights(int64_t, int64_t, const int16_t*);
template PackedWeights<int32_t> pack_linear_weights(int64_t, int64_t, const int32_t*);

void conv2d_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int16_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch) {
  if (!w.direct.empty())
    simd::conv2d_direct(g, x, x_zero_point, w.direct, bias, nullptr, acc, scratch);
  else
    conv2d_acc32_impl(g, x, x_zero_point, w, bias, acc, scratch.image16, scratch.patches16);
}

namespace {
bool direct_requantizes(const PackedWeights<int16_t>& w, const std::vector<DyadicMultiplier>& m) {
  bool in_format = true;  // the lanes need m0 >= 0, as validate_model guarantees
  for (const DyadicMultiplier& mo : m) in_format = in_format && mo.m0 >= 0;
  return !w.direct.empty() && in_format;
}
}  // namespace

AddLayout conv2d_add_layout(const Conv2dGeometry& g, const PackedWeights<int16_t>& w,
                            const std::vector<DyadicMultiplier>& m) {
  AddLayout a;
  if (direct_requantizes(w, m)) {
    a.plane = simd::conv2d_direct_grid(g, &a.row);
  } else {
    a.row = g.out_w();
    a.plane = g.out_h() * g.out_w();
  }
  return a;
}

void conv2d_acc32_requantize(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                             const PackedWeights<int16_t>& w, const int32_t* bias,
                             const std::vector<DyadicMultiplier>& m, int32_t zero_point,
                             int32_t qmin, int32_t qmax, int32_t* y, KernelScratch& scratch,
                             const int32_t* add) {
  const auto channel_m = [&](int64_t o) {
    return m.size() == 1 ? m[0] : m[static_cast<size_t>(o)];
  };
  if (direct_requantizes(w, m)) {
    std::vector<simd::Requantizer> rq(static_cast<size_t>(g.out_channels));
    for (int64_t o = 0; o < g.out_channels; ++o)
      rq[static_cast<size_t>(o)] = simd::Requantizer(channel_m(o), zero_point, qmin, qmax);
    simd::conv2d_direct(g, x, x_zero_point, w.direct, bias, rq.data(), y, scratch, add);
    return;
  }
  const int64_t P = g.out_h() * g.out_w();
  scratch.acc32.resize(static_cast<size_t>(g.batch * g.out_channels * P));
  conv2d_acc32_impl(g, x, x_zero_point, w, bias, scratch.acc32.data(), scratch.image16,
                    scratch.patches16);
  if (add)
    for (size_t i = 0; i < scratch.acc32.size(); ++i)
      scratch.acc32[i] = static_cast<int32_t>(static_cast<uint32_t>(scratch.acc32[i]) + static_cast<uint32_t>(add[i]));
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t o = 0; o < g.out_channels; ++o) {
      const int64_t base = (n * g.out_channels + o) * P;
      requantize_int32(scratch.acc32.data() + base, P, 0, channel_m(o), zero_point, qmin, qmax,
                       y + base);
    }
  }
}

void conv2d_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int32_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch) {
  conv2d_acc32_impl(g, x, x_zero_point, w, bias, acc, scratch.image32, scratch.patches32);
}

void conv2d_int16_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int16_t* w, const int32_t* bias, int32_t* acc) {
  KernelScratch scratch;
  conv2d_acc32(g, x, x_zero_point, pack_conv2d_weights(g, w), bias, acc, scratch);
}

void conv2d_int32_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int32_t* w, const int32_t* bias, int32_t* acc) {
  KernelScratch scratch;
  conv2d_acc32(g, x, x_zero_point, pack_conv2d_weights(g, w), bias, acc, scratch);
}

void conv2d_int16_stepwise(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                           const int16_t* w, const int32_t* bias, const AccumulatorSpec& spec,
                           int32_t* acc, int64_t* overflows, KernelScratch& scratch) {
  conv2d_stepwise_impl(g, x, x_zero_point, w, bias, spec, acc, overflows, scratch.patches16,
                       scratch.image16, scratch.sums16);
}

void conv2d_int32_stepwise(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                           const int32_t* w, const int32_t* bias, const AccumulatorSpec& spec,
                           int32_t* acc, int64_t* overflows, KernelScratch& scratch) {
  conv2d_stepwise_impl(g, x, x_zero_point, w, bias, spec, acc, overflows, scratch.patches32,
                       scratch.image32, scratch.sums16);
}

void linear_acc32(int64_t batch, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int16_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch) {
  linear_acc32_impl(batch, x, x_zero_point, w, bias, acc, scratch.patches16);
}

void linear_acc32(int64_t batch, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int32_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch) {
  linear_acc32_impl(batch, x, x_zero_point, w, bias, acc, scratch.patches32);
}

void linear_int16_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int16_t* w,
                        const int32_t* bias, int32_t* acc) {
  KernelScratch scratch;
  linear_acc32(batch, x, x_zero_point, pack_linear_weights(out_features, in_features, w), bias,
               acc, scratch);
}

void linear_int32_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int32_t* w,
                        const int32_t* bias, int32_t* acc) {
  KernelScratch scratch;
  linear_acc32(batch, x, x_zero_point, pack_linear_weights(out_features, in_features, w), bias,
               acc, scratch);
}

void linear_int16_stepwise(int64_t batch, int64_t in_features, int64_t out_features,
                           const int32_t* x, int32_t x_zero_point, const int16_t* w,
                           const int32_t* bias, const AccumulatorSpec& spec, int32_t* acc,
                           int64_t* overflows, KernelScratch& scratch) {
  linear_stepwise_impl(batch, in_features, out_features, x, x_zero_point, w, bias, spec, acc,
                       overflows, scratch.patches16, scratch.sums16);
}

void linear_int32_stepwise(int64_t batch, int64_t in_features, int64_t out_features,
                           const int32_t* x, int32_t x_zero_point, const int32_t* w,
                           const int32_t* bias, const AccumulatorSpec& spec, int32_t* acc,
                           int64_t* overflows, KernelScratch& scratch) {
  linear_stepwise_impl(batch, in_features, out_features, x, x_zero_point, w, bias, spec, acc,
                       overflows, scratch.patches32, scratch.sums16);
}

void conv2d_int_mac(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                    const int32_t* w, const int32_t* bias, MacModel& mac, std::string_view layer,
                    Accumulator& acc, int64_t* out, MacStats* stats, const MacContext* base) {
  const int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW;
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t K = g.patch_size();
  // Patches laid out [P][K] so each dot product sees two contiguous vectors.
  std::vector<int32_t> col(static_cast<size_t>(K * P + kIm2colSlack<int32_t>)), padded;
  std::vector<int32_t> patches(static_cast<size_t>(K * P));
  MacDriver driver(mac, acc, stats, layer, "conv2d", base);
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int32_t* xg = x + (n * g.in_channels + grp * Cg) * g.in_h * g.in_w;
      im2col_offset(g, xg, x_zero_point, col.data(), P, padded);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t p = 0; p < P; ++p) patches[p * K + k] = col[k * P + p];
      for (int64_t o = 0; o < Og; ++o) {
        const int64_t oc = grp * Og + o;
        const int32_t* wr = w + oc * K;
        int64_t* dst = out + (n * g.out_channels + oc) * P;
        driver.ctx.batch = n;
        driver.ctx.image = driver.first_image + n;
        driver.ctx.channel = oc;
        for (int64_t p = 0; p < P; ++p) {
          driver.ctx.y = p / OW;
          driver.ctx.x = p % OW;
          driver.ctx.index = oc * P + p;
          dst[p] = driver.run(patches.data() + p * K, wr, static_cast<size_t>(K), bias, oc);
        }
      }
    }
  }
}

void linear_int_mac(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                    int32_t x_zero_point, const int32_t* w, const int32_t* bias, MacModel& mac,
                    std::string_view layer, Accumulator& acc, int64_t* out, MacStats* stats,
                    const MacContext* base) {
  std::vector<int32_t> row(static_cast<size_t>(in_features));
  MacDriver driver(mac, acc, stats, layer, "linear", base);
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t i = 0; i < in_features; ++i) row[i] = x[n * in_features + i] - x_zero_point;
    driver.ctx.batch = n;
    driver.ctx.image = driver.first_image + n;
    for (int64_t o = 0; o < out_features; ++o) {
      driver.ctx.channel = o;
      driver.ctx.index = o;
      out[n * out_features + o] =
          driver.run(row.data(), w + o * in_features, static_cast<size_t>(in_features), bias, o);
    }
  }
}

namespace {

// y[i] += a * x[i] in 64 bits (32 x 32 -> 64 products: vpmuludq).
ANYBIT_CLONES void square_axpy(uint32_t a, const uint32_t* x, int64_t n, uint64_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += static_cast<uint64_t>(a) * x[i];
}

ANYBIT_CLONES void square_int32(const int32_t* x, int64_t n, uint32_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<uint32_t>(x[i]) * static_cast<uint32_t>(x[i]);
}

ANYBIT_CLONES void square_to_double(const int32_t* x, int64_t n, double* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<double>(static_cast<uint32_t>(x[i]) * static_cast<uint32_t>(x[i]));
}

}  // namespace

namespace {

// Over v[0, n): the least and greatest value, and the sum and greatest |v - e|.
ANYBIT_CLONES void range_and_error(const int64_t* v, const int32_t* e, int64_t n, int64_t* lo, int64_t* hi,
                                   int64_t* sum, int64_t* max) {
  int64_t l = INT64_MAX, h = INT64_MIN, s = 0, m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x = v[i];
    l = x < l ? x : l;
    h = x > h ? x : h;
    const int64_t d = x - e[i];
    const int64_t a = d < 0 ? -d : d;
    s += a;
    m = a > m ? a : m;
  }
  *lo = l, *hi = h, *sum = s, *max = m;
}

// y[i] = v[i] + b in int32 (the caller has checked the range).
ANYBIT_CLONES void add_bias_narrow(const int64_t* v, int64_t n, int64_t b, int32_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>(v[i] + b);
}

}  // namespace

void fit_and_add_bias(int64_t rows, int64_t inner, int64_t* out, const int32_t* exact, const int32_t* bias,
                      Accumulator& acc, int32_t* y, double* sum_error, int64_t* max_error) {
  const int64_t amin = acc.min(), amax = acc.max();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t* o = out + r * inner;
    const int32_t* e = exact + r * inner;
    int32_t* dst = y + r * inner;
    const int64_t b = bias ? bias[r] : 0;
    int64_t lo, hi, sum, max;
    range_and_error(o, e, inner, &lo, &hi, &sum, &max);
    if (lo >= amin && hi <= amax) {
      *sum_error += static_cast<double>(sum);
      *max_error = std::max(*max_error, max);
      if (lo + b >= amin && hi + b <= amax) {
        add_bias_narrow(o, inner, b, dst);
        continue;
      }
    } else {
      for (int64_t i = 0; i < inner; ++i) {
        o[i] = acc.fit(o[i]);
        const int64_t d = o[i] > e[i] ? o[i] - e[i] : e[i] - o[i];
        *sum_error += static_cast<double>(d);
        *max_error = std::max(*max_error, d);
      }
    }
    for (int64_t i = 0; i < inner; ++i) dst[i] = static_cast<int32_t>(bias ? acc.add(o[i], b) : o[i]);
  }
}

namespace {

// simd::square_block portably: out[r * 8 + c] += w_r[k] * x[k * ld + c] row by row.
void square_block_portable(const uint32_t* const w[4], const uint32_t* x, int64_t ld, int64_t depth, uint64_t* out) {
  std::fill(out, out + 32, uint64_t{0});
  for (int r = 0; r < 4; ++r)
    for (int64_t k = 0; k < depth; ++k)
      if (w[r][k] != 0) square_axpy(w[r][k], x + k * ld, 8, out + 8 * r);
}

}  // namespace

namespace {

// out[o][p] for the Og output channels of one group: blocks of 4 rows (w: [Og][K]) by kWidth
// positions, `block` computing one (kernels_simd.h's square_block layout, B its sums' type).
// A last block of fewer rows repeats the group's last row and drops its sums.
template <int kWidth, typename W, typename X, typename B, typename Block>
void square_sums_group(const W* w, int64_t Og, int64_t K, const X* squares, int64_t ld, int64_t P,
                       double* out, Block block) {
  B sums[4 * kWidth];
  // positions outside, so that their squares stay in the cache over the rows
  for (int64_t p0 = 0; p0 < P; p0 += kWidth) {
    for (int64_t o0 = 0; o0 < Og; o0 += 4) {
      const W* rows[4];
      for (int64_t r = 0; r < 4; ++r) rows[r] = w + std::min(o0 + r, Og - 1) * K;
      block(rows, squares + p0, ld, K, sums);
      for (int64_t r = 0; r < 4 && o0 + r < Og; ++r)
        for (int64_t c = 0; c < kWidth && p0 + c < P; ++c)
          out[(o0 + r) * P + p0 + c] = static_cast<double>(sums[r * kWidth + c]);
    }
  }
}

}  // namespace

void conv2d_square_sums(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const uint32_t* w_sq, double* out, KernelScratch& scratch, const double* w_sq_f64) {
  // doubles where their sums stay exact (w_sq_f64 given): AVX-512, or AVX2 with FMA
  const bool f64 = w_sq_f64 && simd::level() == simd::Level::kAvx512;
  const bool f64_fma = w_sq_f64 && !f64 && simd::square_block8_f64_runs();
  const int64_t P = g.out_h() * g.out_w(), K = g.patch_size(), ld = round_up(P, f64 ? 16 : 8);
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  scratch.patches32.resize(static_cast<size_t>(K * ld + kIm2colSlack<int32_t>));
  if (f64_fma)
    scratch.squares_f64.resize(static_cast<size_t>(K * ld));
  else
    scratch.squares.resize(static_cast<size_t>(K * ld));
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int32_t* xg = x + (n * g.in_channels + grp * Cg) * g.in_h * g.in_w;
      im2col_offset(g, xg, x_zero_point, scratch.patches32.data(), ld, scratch.image32);
      double* dst = out + (n * g.out_channels + grp * Og) * P;
      if (f64_fma) {
        square_to_double(scratch.patches32.data(), K * ld, scratch.squares_f64.data());
        square_sums_group<8, double, double, double>(w_sq_f64 + grp * Og * K, Og, K, scratch.squares_f64.data(),
                                                     ld, P, dst, simd::square_block8_f64);
        continue;
      }
      square_int32(scratch.patches32.data(), K * ld, scratch.squares.data());
      if (f64)
        square_sums_group<16, double, uint32_t, double>(w_sq_f64 + grp * Og * K, Og, K, scratch.squares.data(), ld,
                                                        P, dst, simd::square_block16_f64);
      else
        square_sums_group<8, uint32_t, uint32_t, uint64_t>(
            w_sq + grp * Og * K, Og, K, scratch.squares.data(), ld, P, dst,
            [](const uint32_t* const w[4], const uint32_t* xs, int64_t l, int64_t depth, uint64_t* sums) {
              if (!simd::square_block(w, xs, l, depth, sums)) square_block_portable(w, xs, l, depth, sums);
            });
    }
  }
}

void linear_square_sums(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                        int32_t x_zero_point, const uint32_t* w_sq_t, double* out,
                        KernelScratch& scratch) {
  scratch.square_acc.resize(static_cast<size_t>(out_features));
  uint64_t* acc = scratch.square_acc.data();
  for (int64_t n = 0; n < batch; ++n) {
    std::fill(acc, acc + out_features, uint64_t{0});
    for (int64_t i = 0; i < in_features; ++i) {
      const int64_t v = int64_t{x[n * in_features + i]} - x_zero_point;
      if (v != 0) square_axpy(static_cast<uint32_t>(v * v), w_sq_t + i * out_features, out_features, acc);
    }
    for (int64_t o = 0; o < out_features; ++o) out[n * out_features + o] = static_cast<double>(acc[o]);
  }
}

void requantize_int32(const int32_t* x, int64_t n, int32_t x_offset, DyadicMultiplier m,
                      int32_t zero_point, int32_t qmin, int32_t qmax, int32_t* y) {
  if (m.m0 < 0) {  // outside the model format: the scalar definition
    for (int64_t i = 0; i < n; ++i)
      y[i] = requantize_dyadic(int64_t{x[i]} - x_offset, m, zero_point, qmin, qmax);
    return;
  }
  if (simd::level() != simd::Level::kNone)
    simd::requantize(x, n, x_offset, simd::Requantizer(m, zero_point, qmin, qmax), y);
  else
    requantize_lanes(x, n, x_offset, LaneRequantizer(m, zero_point, qmin, qmax), y);
}

void maxpool2d_int(const Pool2dGeometry& g, const int32_t* x, int32_t qmin, int32_t* y) {
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int32_t* yc = y + nc * g.out_h * g.out_w;
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        // Every value is >= qmin, so starting there is the max of the real elements; a
        // window of padding only (impossible after validation) gives qmin, as -inf would.
        int32_t m = qmin;
        for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) continue;
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
            if (ix >= 0 && ix < g.in_w) m = std::max(m, xc[iy * g.in_w + ix]);
          }
        }
        yc[oy * g.out_w + ox] = m;
      }
    }
  }
}

namespace {

// The window sums of avgpool2d_sum_int; kChecked: every addition through `acc`.
template <bool kChecked>
void avgpool2d_windows(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                       Accumulator& acc, int64_t* sum) {
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int64_t* sc = sum + nc * g.out_h * g.out_w;
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        int64_t s = 0;
        for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) continue;
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
            if (ix < 0 || ix >= g.in_w) continue;
            const int64_t v = static_cast<int64_t>(xc[iy * g.in_w + ix]) - x_zero_point;
            s = kChecked ? acc.add(s, v) : s + v;
          }
        }
        sc[oy * g.out_w + ox] = s;
      }
    }
  }
}

}  // namespace

void avgpool2d_sum_int(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                       Accumulator& acc, int64_t* sum) {
  // If no window's sum can leave the accumulator, whatever the order, the additions need no
  // checks: plain sums (for the global pool, of whole contiguous planes, which vectorize).
  const int64_t x_max = max_abs_offset(x, g.batch * g.channels * g.in_h * g.in_w, x_zero_point);
  if (x_max * g.kernel_h * g.kernel_w > acc.max()) {
    avgpool2d_windows<true>(g, x, x_zero_point, acc, sum);
    return;
  }
  const bool global = g.kernel_h == g.in_h && g.kernel_w == g.in_w && g.pad_h == 0 &&
                      g.pad_w == 0 && g.out_h == 1 && g.out_w == 1;
  if (!global) {
    avgpool2d_windows<false>(g, x, x_zero_point, acc, sum);
    return;
  }
  const int64_t plane = g.in_h * g.in_w;
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    int64_t s = 0;
    for (int64_t i = 0; i < plane; ++i) s += x[nc * plane + i];
    sum[nc] = s - plane * int64_t{x_zero_point};
  }
}

namespace {

// Every addition of each window's sum through `acc`, in the reference's order.
void adaptive_avgpool2d_checked(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                                Accumulator& acc, int64_t* sum) {
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int64_t* sc = sum + nc * g.out_h * g.out_w;
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      const int64_t y0 = adaptive_window_begin(oy, g.in_h, g.out_h), y1 = adaptive_window_end(oy, g.in_h, g.out_h);
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        const int64_t x0 = adaptive_window_begin(ox, g.in_w, g.out_w), x1 = adaptive_window_end(ox, g.in_w, g.out_w);
        int64_t s = 0;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) s = acc.add(s, static_cast<int64_t>(xc[iy * g.in_w + ix]) - x_zero_point);
        sc[oy * g.out_w + ox] = s;
      }
    }
  }
}

}  // namespace

void adaptive_avgpool2d_sum_int(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                                Accumulator& acc, int64_t* sum, KernelScratch& scratch) {
  int64_t rows_max = 0, cols_max = 0;  // the largest window
  for (int64_t oy = 0; oy < g.out_h; ++oy)
    rows_max = std::max(rows_max, adaptive_window_end(oy, g.in_h, g.out_h) - adaptive_window_begin(oy, g.in_h, g.out_h));
  for (int64_t ox = 0; ox < g.out_w; ++ox)
    cols_max = std::max(cols_max, adaptive_window_end(ox, g.in_w, g.out_w) - adaptive_window_begin(ox, g.in_w, g.out_w));
  // As for avgpool2d_sum_int: unless no window's sum can leave the accumulator, whatever
  // the order, every addition goes through it (the product is below 2^32 * 2^31).
  const int64_t x_max = max_abs_offset(x, g.batch * g.channels * g.in_h * g.in_w, x_zero_point);
  if (x_max * rows_max * cols_max > acc.max()) {
    adaptive_avgpool2d_checked(g, x, x_zero_point, acc, sum);
    return;
  }
  // Separable: each input row's sums over the column windows, then the rows of each window
  // added up row by row (a loop over ox, which vectorizes). Overlapping windows share the
  // row sums.
  std::vector<int64_t>& rows = scratch.row_sums;
  rows.resize(static_cast<size_t>(g.in_h * g.out_w));
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int64_t* sc = sum + nc * g.out_h * g.out_w;
    for (int64_t iy = 0; iy < g.in_h; ++iy) {
      const int32_t* xr = xc + iy * g.in_w;
      int64_t* r = rows.data() + iy * g.out_w;
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        const int64_t x0 = adaptive_window_begin(ox, g.in_w, g.out_w), x1 = adaptive_window_end(ox, g.in_w, g.out_w);
        int64_t s = 0;
        for (int64_t ix = x0; ix < x1; ++ix) s += xr[ix];
        r[ox] = s - (x1 - x0) * int64_t{x_zero_point};
      }
    }
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      const int64_t y0 = adaptive_window_begin(oy, g.in_h, g.out_h), y1 = adaptive_window_end(oy, g.in_h, g.out_h);
      int64_t* so = sc + oy * g.out_w;
      std::fill(so, so + g.out_w, int64_t{0});
      for (int64_t iy = y0; iy < y1; ++iy) {
        const int64_t* r = rows.data() + iy * g.out_w;
        for (int64_t ox = 0; ox < g.out_w; ++ox) so[ox] += r[ox];
      }
    }
  }
}

void add_int(const AddParams& p, const int32_t* a, const int32_t* b, int64_t n, int32_t* y) {
  const bool in_format = p.a_multiplier.m0 >= 0 && p.b_multiplier.m0 >= 0 &&
                         p.out_multiplier.m0 >= 0 && p.left_shift >= 0 && p.left_shift <= 31;
  if (!in_format) {  // parameters validate_model rejects: the scalar definition
    for (int64_t i = 0; i < n; ++i) y[i] = add_int_reference(p, a[i], b[i]);
    return;
  }
  if (simd::level() != simd::Level::kNone)
    simd::add(p, a, b, n, y);
  else
    add_lanes(LaneAdder(p), a, b, n, y);
}

}  // namespace intsim
}  // namespace anybit
