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
struct AffineGrid {
  float inv, scale, lo, hi;
};
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

}  // namespace anybit
