// Integer kernels of the engine, in the layout of PyTorch (NCHW activations, OIHW weights),
// each op in up to four variants that the tests hold together:
//
//   *_acc32          fast: int16 or int32 operands (zero points already subtracted), int32
//                    accumulation, a blocked GEMM whose inner loop GCC vectorizes (int16
//                    pairs: SSE2 pmaddwd) even at -O2. Only valid when the caller has proven
//                    that no partial sum leaves int32 (the engine checks a bound per layer):
//                    then the order of the additions does not matter.
//   *_stepwise       the exact dot product with every addition through the declared
//                    accumulator, in the reference's order, vectorized across output
//                    positions: what the plug-in path computes with the exact MAC, without
//                    a call per dot product.
//   *_reference      the specification: plain loops in int64, every addition through the
//                    declared accumulator (wrap or saturate), bias added last.
//   *_mac            one MacModel::dot call per output element (the plug-in path).
//
// The accumulator of a conv2d/linear output element (docs/design.md, "Integer arithmetic"):
//   acc = sum_k (x_k - z_x) * (w_ok - z_w[o])  (+ bias[o]),  k = (c, ky, kx) row-major
// with padding contributing x = z_x (a real zero). Requantization is separate
// (requantize.h; requantize_int32 below is its vectorized form), so every variant can be
// compared on raw accumulators.
//
// On x86-64 with glibc the hot loops are compiled twice, for AVX2 and for the x86-64
// baseline (SSE2), and the dynamic loader picks one per machine (GNU ifunc). On x86-64 with
// GCC or Clang, hand-vectorized AVX2 and AVX-512 kernels (kernels_simd.h) take over where
// the CPU has them: the int16 conv2d_acc32 as a direct convolution without a patch matrix
// (with conv2d_acc32_requantize, its requantization fused), the stepwise kernels in 16-bit
// lanes for accumulators of at most 16 bits, requantize_int32 and add_int. Defining
// ANYBIT_INTSIM_NO_CLONES builds the baseline only. All give the same integers.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "anybit/intsim/accumulator.h"
#include "anybit/intsim/mac.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {

struct Conv2dGeometry {
  int64_t batch = 1, in_channels = 1, in_h = 1, in_w = 1;
  int64_t out_channels = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  int64_t out_h() const { return (in_h + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (in_w + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
  // K: length of one dot product (input channels of a group times the kernel window).
  int64_t patch_size() const { return in_channels / groups * kernel_h * kernel_w; }
};

struct Pool2dGeometry {
  int64_t batch = 1, channels = 1, in_h = 1, in_w = 1;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 1, out_w = 1;  // given: ceil_mode is decided by the caller
};

// The window of output index i of adaptive average pooling along an axis of input length
// `in` pooled to `out` (PyTorch's start_index/end_index in AdaptiveAveragePooling.cpp):
//   [floor(i * in / out), ceil((i + 1) * in / out))
// Neighbouring windows overlap where in / out is not an integer, and their sizes differ
// (13 -> 6: windows of 3; 8 -> 6: of 2 and 3; 1 -> 6: the one element, six times).
// in, out < 2^31 and i < out, so the products fit int64.
inline int64_t adaptive_window_begin(int64_t i, int64_t in, int64_t out) { return i * in / out; }
inline int64_t adaptive_window_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}
// The elements each output position of an in_h x in_w -> out_h x out_w adaptive pool sums
// (its window's rows times columns), row-major: what its per-position multipliers divide by.
inline std::vector<int64_t> adaptive_window_counts(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
  std::vector<int64_t> counts;
  counts.reserve(static_cast<size_t>(out_h * out_w));
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const int64_t rows = adaptive_window_end(oy, in_h, out_h) - adaptive_window_begin(oy, in_h, out_h);
    for (int64_t ox = 0; ox < out_w; ++ox)
      counts.push_back(rows * (adaptive_window_end(ox, in_w, out_w) - adaptive_window_begin(ox, in_w, out_w)));
  }
  return counts;
}

// --- reusable memory and packed weights ----------------------------------------------

// Scratch memory of the kernels (padded images, patch matrices, the direct convolution's
// planes and grid, 16-bit stepwise sums). Kernels that take one keep its buffers between
// calls instead of allocating; one per thread.
struct KernelScratch {
  std::vector<int16_t> image16, patches16, sums16;
  std::vector<int32_t> image32, patches32, planes, grid, acc32;
  std::vector<int64_t> row_sums;  // adaptive_avgpool2d_sum_int: one plane's window rows
  std::vector<uint32_t> squares;  // *_square_sums: (x - z_x)^2 of the patches
  std::vector<double> squares_f64;  // the same as doubles (conv2d_square_sums on AVX2 with FMA)
  std::vector<uint64_t> square_acc;
};

// w - z_w of a conv2d or linear layer laid out for the *_acc32 GEMM: per group, one row per
// output channel, the dot-product axis in the order the patches use it ((ky, kx, c) for
// conv2d: a patch is then a few contiguous runs of a channels-last image; (i) for linear),
// zero-padded to whole vectors (depth_padded) and the rows to whole micro-kernel blocks.
template <typename T>
struct PackedWeights {
  int64_t groups = 1, rows = 0, rows_padded = 0;  // rows: output channels per group
  int64_t depth = 0, depth_padded = 0;            // K and K rounded up
  std::vector<T> data;                            // [groups][rows_padded][depth_padded]
  // conv2d with int16 operands on a CPU with AVX2 or AVX-512 (kernels_simd.h): the same
  // weights for the direct convolution, which reads the image in place of a patch matrix
  // and then runs instead of the GEMM; as int32 pairs (w[c], w[c+1]) of int16,
  // [groups][rows / 8][channel pairs][kH * kW][8]. Empty otherwise.
  std::vector<int32_t> direct;
};

// From w - z_w in PyTorch's layout, [O][C/groups][kH][kW] or [O][I]. T: int16_t or int32_t.
template <typename T>
PackedWeights<T> pack_conv2d_weights(const Conv2dGeometry& g, const T* w);
template <typename T>
PackedWeights<T> pack_linear_weights(int64_t out_features, int64_t in_features, const T* w);

// --- conv2d ------------------------------------------------------------------------------

// acc[n][o][oy][ox] = bias[o] + sum_k (x - x_zero_point) * w[o][k]; w = q_w - z_w packed as
// above. bias may be null. Precondition: |bias[o]| + max|x - z_x| * sum_k |w[o][k]| < 2^31,
// and for int16 weights x - z_x fits int16.
void conv2d_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int16_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch);
void conv2d_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int32_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch);
// conv2d_acc32 with each output channel requantized as requantize_int32 does (offset 0,
// m[o], or m[0] for every channel when m has one entry): y is the layer's output. Where the
// direct convolution runs, the accumulators are requantized while still in registers.
// `add` (null: none) is added to each biased sum before its requantization (a MAC model's
// additive noise; every such total must fit int32), laid out as conv2d_add_layout says.
void conv2d_acc32_requantize(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                             const PackedWeights<int16_t>& w, const int32_t* bias,
                             const std::vector<DyadicMultiplier>& m, int32_t zero_point,
                             int32_t qmin, int32_t qmax, int32_t* y, KernelScratch& scratch,
                             const int32_t* add = nullptr);
// Where conv2d_acc32_requantize reads `add` from: [n][o][plane], output (oy, ox) at
// oy * row + ox (the direct convolution's grid, or [n][o][oy][ox]).
struct AddLayout {
  int64_t row = 0, plane = 0;
};
AddLayout conv2d_add_layout(const Conv2dGeometry& g, const PackedWeights<int16_t>& w,
                            const std::vector<DyadicMultiplier>& m);
// The same from w - z_w in [O][K] (packed on every call).
void conv2d_int16_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int16_t* w, const int32_t* bias, int32_t* acc);
void conv2d_int32_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int32_t* w, const int32_t* bias, int32_t* acc);

// The exact dot products of conv2d_int_reference, from w = q_w - z_w in [O][K]: every
// addition through an accumulator of spec.bits (wrap or saturate), k in order, then the
// bias. acc values lie in the accumulator range; *overflows gains one per addition that
// left it. For int16 weights x - z_x must fit int16.
void conv2d_int16_stepwise(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                           const int16_t* w, const int32_t* bias, const AccumulatorSpec& spec,
                           int32_t* acc, int64_t* overflows, KernelScratch& scratch);
void conv2d_int32_stepwise(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                           const int32_t* w, const int32_t* bias, const AccumulatorSpec& spec,
                           int32_t* acc, int64_t* overflows, KernelScratch& scratch);

// The specification, from raw weights and per-tensor (1) or per-channel (O) zero points.
// acc values lie in the accumulator range; *overflows (if not null) gains one per
// addition that left it.
void conv2d_int_reference(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                          const int32_t* w, const std::vector<int32_t>& w_zero_point,
                          const int32_t* bias, const AccumulatorSpec& spec, int64_t* acc,
                          int64_t* overflows);

// What the plug-in path reports besides the accumulators.
struct MacStats {
  int64_t dot_products = 0;
  double sum_abs_error = 0;   // sum |mac - exact| over dot products (non-exact MACs only)
  int64_t max_abs_error = 0;
  int64_t clipped = 0;        // results the model clipped (MacContext::clipped)
};

// One mac.dot() per output element, in the order n, o, oy, ox; w = q_w - z_w, [O][K].
// The result is brought into `acc`'s range, then the bias is added through it. For a
// non-exact MAC the exact dot product is computed too, for the error statistics.
// `base` (optional) gives the layer's MacLayer and the run's first image (MacContext::info,
// MacContext::image = base->image + n).
void conv2d_int_mac(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                    const int32_t* w, const int32_t* bias, MacModel& mac, std::string_view layer,
                    Accumulator& acc, int64_t* out, MacStats* stats,
                    const MacContext* base = nullptr);

// --- linear: x [N][I], w [O][I], acc [N][O] ----------------------------------------------

void linear_acc32(int64_t batch, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int16_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch);
void linear_acc32(int64_t batch, const int32_t* x, int32_t x_zero_point,
                  const PackedWeights<int32_t>& w, const int32_t* bias, int32_t* acc,
                  KernelScratch& scratch);
void linear_int16_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int16_t* w,
                        const int32_t* bias, int32_t* acc);
void linear_int32_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int32_t* w,
                        const int32_t* bias, int32_t* acc);
void linear_int16_stepwise(int64_t batch, int64_t in_features, int64_t out_features,
                           const int32_t* x, int32_t x_zero_point, const int16_t* w,
                           const int32_t* bias, const AccumulatorSpec& spec, int32_t* acc,
                           int64_t* overflows, KernelScratch& scratch);
void linear_int32_stepwise(int64_t batch, int64_t in_features, int64_t out_features,
                           const int32_t* x, int32_t x_zero_point, const int32_t* w,
                           const int32_t* bias, const AccumulatorSpec& spec, int32_t* acc,
                           int64_t* overflows, KernelScratch& scratch);
void linear_int_reference(int64_t batch, int64_t in_features, int64_t out_features,
                          const int32_t* x, int32_t x_zero_point, const int32_t* w,
                          const std::vector<int32_t>& w_zero_point, const int32_t* bias,
                          const AccumulatorSpec& spec, int64_t* acc, int64_t* overflows);
void linear_int_mac(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                    int32_t x_zero_point, const int32_t* w, const int32_t* bias, MacModel& mac,
                    std::string_view layer, Accumulator& acc, int64_t* out, MacStats* stats,
                    const MacContext* base = nullptr);

// --- sums of squared products (the per-product noise of MAC models) ---------------------

// out[n][o][p] = sum_k ((x_k - z_x) * w_ok)^2 for conv2d, out[n][o] likewise for linear, from
// w_sq = w^2 ([O][K] for conv2d, [I][O] (transposed) for linear). Exact (uint64 sums, then
// converted to double) under the caller's precondition: |x - z_x| < 2^16, |w| < 2^16 and
// max (x - z_x)^2 * sum_k w_ok^2 < 2^64 for every o.
// w_sq_f64 (optional): the same weights as doubles, for the AVX-512 or AVX2-FMA kernel; only where
// max (x - z_x)^2 * sum_k w_ok^2 < 2^53 (then its double sums are exact too).
void conv2d_square_sums(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const uint32_t* w_sq, double* out, KernelScratch& scratch,
                        const double* w_sq_f64 = nullptr);
void linear_square_sums(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                        int32_t x_zero_point, const uint32_t* w_sq_t, double* out,
                        KernelScratch& scratch);

// A MAC model's results brought into the accumulator, with the bias: for each of `rows`
// rows of `inner` elements (one output channel each, bias[r] its bias; bias may be null),
// out[i] becomes acc.fit(out[i]) (an overflow counted where it was outside),
// |that - exact[i]| is summed into *sum_error and maxed into *max_error, and
// y[i] = acc.add(that, bias[r]). Where a whole row and its biased sums are in range (the
// usual case), in vector lanes; otherwise element by element.
void fit_and_add_bias(int64_t rows, int64_t inner, int64_t* out, const int32_t* exact, const int32_t* bias,
                      Accumulator& acc, int32_t* y, double* sum_error, int64_t* max_error);

// --- requantization ----------------------------------------------------------------------

// y[i] = requantize_dyadic(x[i] - x_offset, m, zero_point, qmin, qmax) (requantize.h; the
// difference is taken in 64 bits), in 32-bit lanes so that it vectorizes.
void requantize_int32(const int32_t* x, int64_t n, int32_t x_offset, DyadicMultiplier m,
                      int32_t zero_point, int32_t qmin, int32_t qmax, int32_t* y);

// --- pooling -----------------------------------------------------------------------------

// Max over each window; padding never wins (PyTorch pads with -inf). qmin: the input's
// lowest integer, the result of a window holding padding only.
void maxpool2d_int(const Pool2dGeometry& g, const int32_t* x, int32_t qmin, int32_t* y);

// sum[n][c][oy][ox] = sum over the window of (x - x_zero_point), each addition through
// `acc`; padding adds nothing (it is x = z_x, PyTorch's count_include_pad=True). The
// divisor is folded into the requantization multiplier. Global average pooling is the
// window H x W.
void avgpool2d_sum_int(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                       Accumulator& acc, int64_t* sum);

// Adaptive average pooling from in_h x in_w to out_h x out_w (the kernel, stride, padding
// and dilation of g are not used): sum[n][c][oy][ox] = sum of (x - x_zero_point) over the
// window rows adaptive_window_begin/end(oy, in_h, out_h) and columns (ox, in_w, out_w).
// The divisor, the window's size, differs between positions and is folded into a
// multiplier per output position (the model's adaptive_avgpool2d). Where a window's sum can
// leave `acc`, every addition goes through it in the reference's order (rows, then columns
// of the window); otherwise the sums are separable (first over each window's columns, row
// by row, then over its rows), which gives the same numbers.
void adaptive_avgpool2d_sum_int(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                                Accumulator& acc, int64_t* sum, KernelScratch& scratch);
// The specification: plain loops over each window, every addition through `acc`.
void adaptive_avgpool2d_sum_reference(const Pool2dGeometry& g, const int32_t* x,
                                      int32_t x_zero_point, Accumulator& acc, int64_t* sum);

// --- add (TFLite's quantized ADD) --------------------------------------------------------

// Both inputs are moved into a common high-precision domain, summed, and requantized:
//   a' = multiply_by_dyadic((q_a - z_a) * 2^left_shift, M_a)
//   b' = multiply_by_dyadic((q_b - z_b) * 2^left_shift, M_b)
//   y  = requantize_dyadic(a' + b', M_out, z_out, qmin, qmax)
// with M_a = s_a / (2 max(s_a, s_b)), M_b likewise, M_out = 2 max(s_a, s_b) /
// (2^left_shift s_out) (TFLite's PrepareGeneralSubOp; left_shift 20 for 8-bit inputs).
struct AddParams {
  int32_t a_zero_point = 0, b_zero_point = 0;
  DyadicMultiplier a_multiplier, b_multiplier;
  int left_shift = 20;
  DyadicMultiplier out_multiplier;
  int32_t out_zero_point = 0, qmin = -128, qmax = 127;
};
void add_int(const AddParams& p, const int32_t* a, const int32_t* b, int64_t n, int32_t* y);
// The same value from the reference requantization functions and exact arithmetic.
int32_t add_int_reference(const AddParams& p, int32_t a, int32_t b);

}  // namespace intsim
}  // namespace anybit
