// Fake-quantization kernels: the float-in, float-out form of every quantizer of
// docs/design.md, with their straight-through / LSQ / PACT gradients.
//
// Three implementations of the uniform quantizer live side by side:
//   *_reference   plain loops over elements, written to be obviously right (the spec);
//   *_forward     the optimized CPU float32 kernel (vectorizable, multi-threaded);
//   *_torchops    a composition of ATen ops, the fallback for other devices and dtypes.
// Tests hold the three together and compare them with ATen's fake_quantize_* ops.
//
// Parameter layout. `scale` (and `zero_point`, `alpha`, `hi`) hold one value per
// channel: per tensor (numel 1), per channel along `axis`, or per group of
// `group_size` consecutive elements of the contiguous tensor (group_size > 0; a
// weight [O, I] with I % g == 0 then has scales [O, I/g], groups never cross rows).
//
// x / s is computed as x * (1.0f / s) in float32, as ATen does, so that every
// spec ATen can express gives bit-identical results to torch.fake_quantize_*.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "anybit/quant/fake_quant_elem.h"

namespace anybit {

struct ChannelLayout {
  int64_t channels = 1;  // number of parameter values
  int64_t inner = 1;     // contiguous elements sharing one parameter value
};
// Validates and returns the layout; throws anybit::Error naming `what` on mismatch.
ChannelLayout channel_layout(const at::Tensor& x, int64_t num_params, int64_t axis,
                             int64_t group_size, const char* what);

// --- uniform affine: q = clamp(round(x/s) + z, qmin, qmax), x^ = (q - z) * s ---------
// The float constants of that formula for one channel, as every uniform kernel uses them:
//   x^ = round_half_even(clamp(x * inv, lo, hi)) * scale,
//   inv = 1.0f / scale, z = clamp(round(zero_point), qmin, qmax), lo = qmin - z, hi = qmax - z.
// clamp(round(v) + z, qmin, qmax) - z == round(clamp(v, qmin - z, qmax - z)) because the
// bounds are integers and rounding is monotonic.
// One channel's constants are elem::grid's (fake_quant_elem.h), which the CUDA kernels compute too.
using AffineGrid = elem::Grid;
std::vector<AffineGrid> affine_grid(const at::Tensor& scale, const at::Tensor& zero_point,
                                    int64_t channels, int64_t qmin, int64_t qmax);
at::Tensor fake_quant_affine_forward(const at::Tensor& x, const at::Tensor& scale,
                                     const at::Tensor& zero_point, int64_t axis,
                                     int64_t group_size, int64_t qmin, int64_t qmax,
                                     int64_t rounding);
// Writes into a preallocated contiguous float32 y (no allocation: for training loops
// that reuse buffers, and to measure the kernel apart from the allocator).
void fake_quant_affine_forward_out(const at::Tensor& x, const at::Tensor& scale,
                                   const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                                   int64_t qmin, int64_t qmax, int64_t rounding, at::Tensor& y);
at::Tensor fake_quant_affine_reference(const at::Tensor& x, const at::Tensor& scale,
                                       const at::Tensor& zero_point, int64_t axis,
                                       int64_t group_size, int64_t qmin, int64_t qmax,
                                       int64_t rounding);
at::Tensor fake_quant_affine_torchops(const at::Tensor& x, const at::Tensor& scale,
                                      const at::Tensor& zero_point, int64_t axis,
                                      int64_t group_size, int64_t qmin, int64_t qmax,
                                      int64_t rounding);

// Gradients (as in ATen's _fake_quantize_learnable_*_backward, which follows LSQ,
// Esser et al. 2020, eq. 3, and LSQ+ for the zero point), with v = x/s, q = round(v)+z:
//   dx = dy                          if qmin <= q <= qmax, else 0      (STE)
//   ds = dy * (x^ - x)/s * g          inside;  dy * (qmin - z) * g below; dy * (qmax - z) * g above
//   dz = 0                           inside;  -dy * s * g outside
// summed per channel; g is the LSQ gradient scale (1/sqrt(numel * qmax) in the paper).
// Returns (dx, ds, dz); ds/dz are undefined tensors unless requested.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_affine_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax,
    double grad_factor, bool need_scale_grad, bool need_zero_point_grad);
std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_affine_backward_reference(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax,
    double grad_factor);

// Autograd-aware entry points (what the registered anybit:: ops call).
at::Tensor fake_quant_affine(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                             int64_t qmin, int64_t qmax, int64_t rounding, double grad_factor);

// QDrop (Wei et al. 2022): y = x where u < p, else fake_quant_affine(x), element-wise, with
// u ~ U[0, 1) drawn from a counter-based hash of (seed, stream, flat element index), so the
// forward and backward passes see the same mask without storing it, whatever the thread
// count. The gradient is the identity where dropped and fake_quant_affine's elsewhere (the
// step's gradient sums only the kept elements). p = 0 is fake_quant_affine.
at::Tensor fake_quant_affine_drop(const at::Tensor& x, const at::Tensor& scale,
                                  const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                                  int64_t qmin, int64_t qmax, double p, int64_t seed, int64_t stream,
                                  int64_t rounding, double grad_factor);
// The mask of fake_quant_affine_drop for n elements: true where x passes unquantized.
at::Tensor qdrop_mask(int64_t n, double p, int64_t seed, int64_t stream);

// --- logarithmic: x^ = sign(x) 2^clamp(round(log2|x|), hi-L+1, hi), x^(0) = 0 ---------
// STE: dx = dy where 2^(lo) <= |x| <= 2^hi (the clamp range), else 0.
at::Tensor fake_quant_log(const at::Tensor& x, const at::Tensor& hi, int64_t num_exponents,
                          int64_t axis);
at::Tensor fake_quant_log_reference(const at::Tensor& x, const at::Tensor& hi,
                                    int64_t num_exponents, int64_t axis);

// --- binary: x^ = alpha * sign(x), sign(0) = +1 (BinaryConnect / XNOR-Net) ------------
// STE: dx = dy where |x| <= ste_clip (Hubara et al. 2016 "hardtanh" STE), dalpha =
// sum dy * sign(x) per channel; alpha is typically mean|x| computed by the caller.
// grad_factor scales dalpha (and ternary's ddelta): LSQ's 1/sqrt(N) for learned ones.
at::Tensor fake_quant_binary(const at::Tensor& x, const at::Tensor& alpha, int64_t axis,
                             double ste_clip, double grad_factor = 1.0);
// --- ternary: x^ = alpha * t, t = sign(x) if |x| > delta else 0 (TWN, Li et al. 2016) --
// STE for x as binary; dalpha as binary. A delta that requires grad (ternary:lsq) gets a
// kernel estimate of the derivative of the loss through the jump at |x| = delta: with the
// band h = kTernaryThresholdBand * delta,
//   ddelta = -1/h * sum over delta - h/2 < |x| <= delta + h/2 of dy * alpha * sign(x)
// per channel, which equals a central finite difference of step h for a loss linear in x^.
constexpr double kTernaryThresholdBand = 0.2;
at::Tensor fake_quant_ternary(const at::Tensor& x, const at::Tensor& alpha,
                              const at::Tensor& delta, int64_t axis, double ste_clip,
                              double grad_factor = 1.0);

// --- PACT (Choi et al. 2018): y = round(clamp(x, 0, a) / s) * s, s = a / (2^b - 1) ----
// dx = dy for 0 <= x <= a; da = sum dy over x >= a (the clipped part).
at::Tensor fake_quant_pact(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                           int64_t rounding);

// --- minifloat eXmY (quant/spec.h): x^ = s * cast(x * (1/s)) ------------------------
// cast rounds to the nearest value of the format, ties to the even code (the even
// mantissa, as IEEE 754's roundTiesToEven), and saturates at +-minifloat_max (inf too,
// the OCP "saturating" conversion); NaN stays NaN. x * (1/s) and the product with s are
// float32, as in the uniform kernel. Gradients: dx = dy where |x * (1/s)| <= max (STE);
// a scale that requires grad (fpN:eXmY:lsq) gets LSQ's
//   ds = grad_factor * sum dy * ((x^ - x) / s inside, sign(x) * max outside)
// per channel or group. The float32 CPU kernel reads the float's exponent bits; other
// devices and dtypes use an ATen-op composition; the reference enumerates the format.
at::Tensor fake_quant_minifloat(const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                                int64_t group_size, int64_t exp_bits, int64_t man_bits,
                                double grad_factor = 1.0);
at::Tensor fake_quant_minifloat_forward(const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                                        int64_t group_size, int64_t exp_bits, int64_t man_bits);
at::Tensor fake_quant_minifloat_torchops(const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                                         int64_t group_size, int64_t exp_bits, int64_t man_bits);
at::Tensor fake_quant_minifloat_reference(const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                                          int64_t group_size, int64_t exp_bits, int64_t man_bits);
// Every non-negative number of the format in code order (increasing; inf and NaN codes left
// out): the reference's table.
std::vector<double> minifloat_values(int exp_bits, int man_bits);

// --- block formats: OCP Microscaling (MX v1.0) and NVFP4 --------------------------------
// Blocks of `block` consecutive elements along `axis` share a scale computed from the block
// itself, at every call (activations too: nothing to calibrate but NVFP4's tensor scale).
// axis < 0 is the reduction axis of the usual consumer: 1 (channels) for a 4-D tensor, the
// last dim otherwise. A last block shorter than `block` is its own block.
//   MX     X = 2^clamp(floor(log2 max|block|) - emax, -127, 127) (the E8M0 shared scale;
//          emax = floor(log2 of the element's largest value)), x^ = X * elem(x / X) with
//          elem the saturating minifloat cast eXmY (exp_bits > 0) or, for MXINT (exp_bits = 0,
//          man_bits = element bits b), k * 2^-(b-2), k = round_half_even(.) clamped to
//          +-(2^(b-1) - 1). A block holding inf or NaN gives NaN.
//   NVFP4  blocks of 16 by default: d = e4m3(max|block| / 6 * (1/ts)) * ts in float32 with the
//          saturating E4M3 cast, x^ = e2m1(x * (1/d)) * d; ts is the per-tensor scale
//          (max|x| / (6 * 448) for a weight); d = 0 gives 0.
// Gradients are straight through (dx = dy), as in the microxcaling reference library.
at::Tensor fake_quant_mx(const at::Tensor& x, int64_t axis, int64_t block, int64_t exp_bits, int64_t man_bits);
at::Tensor fake_quant_mx_reference(const at::Tensor& x, int64_t axis, int64_t block, int64_t exp_bits,
                                   int64_t man_bits);
at::Tensor fake_quant_nvfp4(const at::Tensor& x, const at::Tensor& tensor_scale, int64_t axis, int64_t block);
at::Tensor fake_quant_nvfp4_reference(const at::Tensor& x, const at::Tensor& tensor_scale, int64_t axis,
                                      int64_t block);

// --- codebooks: NF4 and learned levels (lutN) ---------------------------------------
// x^ = s * l[k], k the index of the level l[k] nearest to x * (1/s) (a tie goes to the even
// index), per channel or group like the uniform kernel; `levels` holds L sorted levels
// shared by every channel ([L]) or one row per channel ([C, L]). NF4 is the 16 QLoRA levels
// (nf4_levels()) with s = max|x| per block; lutN has 2^N levels from k-means.
// Gradients: dx = dy where l[0] <= x / s <= l[L-1] (STE), 0 outside; a scale that requires
// grad gets g * dy * (l[k] - x / s) inside and g * dy * l[k] outside; levels that require
// grad get g * dy * s summed over the elements that chose each level.
at::Tensor fake_quant_lut(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& levels, int64_t axis,
                          int64_t group_size, double grad_factor = 1.0);
at::Tensor fake_quant_lut_reference(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& levels,
                                    int64_t axis, int64_t group_size);
const std::vector<double>& nf4_levels();  // QLoRA's NormalFloat4 (Dettmers et al. 2023), -1..1

}  // namespace anybit
