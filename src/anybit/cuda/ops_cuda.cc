// libanybit_cuda: the CUDA kernels of the ops quant/ops.cc defines with device forms,
// registered for the CUDA dispatch key. Loaded by the CLI on --device cuda and by the Python
// package on import (quant/device.h); C++ programs may link it instead.
//
// Numerics: the element math is quant/fake_quant_elem.h, the functions the CPU kernels are
// tested against, compiled with --fmad=false: x^ and dx equal the CPU kernels' bit for bit.
// The LSQ sums (ds, dz) are ATen's reductions of the per-element terms, in double as on the
// CPU; they differ from the CPU's only in the order of the additions.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "anybit/base/error.h"
#include "anybit/cuda/fake_quant_cuda.h"
#include "anybit/quant/fake_quant.h"
#include "anybit/quant/fake_quant_elem.h"

namespace anybit {
namespace {

struct Affine {
  cuda::AffineLaunch launch;
  at::Tensor scale, zero_point;  // float32 on x's device, kept alive for the launch
};

Affine affine_launch(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis,
                     int64_t group_size, int64_t qmin, int64_t qmax) {
  if (qmin > qmax) throw Error("fake_quant_affine: quant_min must not exceed quant_max");
  const ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_affine");
  if (zero_point.numel() != 1 && zero_point.numel() != L.channels)
    throw Error("fake_quant_affine: expected 1 or " + std::to_string(L.channels) + " zero points, got " +
                std::to_string(zero_point.numel()));
  Affine a;
  a.scale = scale.detach().to(x.device(), at::kFloat).contiguous();
  a.zero_point = zero_point.detach().to(x.device(), at::kFloat).contiguous();
  a.launch.n = x.numel();
  a.launch.channels = L.channels;
  a.launch.inner = L.inner;
  a.launch.scale = a.scale.data_ptr<float>();
  a.launch.zero_point = a.zero_point.data_ptr<float>();
  a.launch.scale_stride = a.scale.numel() == 1 ? 0 : 1;
  a.launch.zero_point_stride = a.zero_point.numel() == 1 ? 0 : 1;
  a.launch.qmin = static_cast<float>(qmin);
  a.launch.qmax = static_cast<float>(qmax);
  return a;
}

void check_float(const at::Tensor& x, const char* what) {
  if (x.scalar_type() != at::kFloat)
    throw Error(std::string(what) + ": the CUDA kernel takes float32, got " + std::string(c10::toString(x.scalar_type())));
}

at::Tensor cuda_affine_forward(const at::Tensor& x_in, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis,
                          int64_t group_size, int64_t qmin, int64_t qmax, int64_t rounding) {
  check_float(x_in, "fake_quant_affine");
  if (rounding < elem::kHalfEven || rounding > elem::kFloor)
    throw Error("fake_quant_affine: the CUDA kernel takes rounding 0, 1 or 2 (stochastic rounding is an ATen-op "
                "composition), got " + std::to_string(rounding));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const Affine a = affine_launch(x, scale, zero_point, axis, group_size, qmin, qmax);
  at::Tensor y = at::empty_like(x);
  C10_CUDA_CHECK(cuda::affine_forward(a.launch, x.data_ptr<float>(), y.data_ptr<float>(), static_cast<int>(rounding),
                                      c10::cuda::getCurrentCUDAStream()));
  return y;
}

// the per-element terms summed per channel: [outer, channels, inner] over outer and inner
at::Tensor per_channel_sum(const at::Tensor& terms, const cuda::AffineLaunch& a, const at::Tensor& like,
                           double grad_factor) {
  const at::Tensor s = terms.view({-1, a.channels, a.inner}).sum({0, 2}, false, at::kDouble);
  return (s * grad_factor).to(like.scalar_type()).reshape(like.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_affine_backward(const at::Tensor& grad, const at::Tensor& x_in,
                                                               const at::Tensor& scale, const at::Tensor& zero_point,
                                                               int64_t axis, int64_t group_size, int64_t qmin,
                                                               int64_t qmax, double grad_factor, bool need_scale_grad,
                                                               bool need_zero_point_grad) {
  check_float(x_in, "fake_quant_affine");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = grad.to(x.device(), at::kFloat).contiguous();
  if (g.sizes() != x.sizes()) throw Error("fake_quant_affine backward: the gradient's shape differs from x's");
  const Affine a = affine_launch(x, scale, zero_point, axis, group_size, qmin, qmax);
  at::Tensor dx = at::empty_like(x), ds, dz;
  if (need_scale_grad) ds = at::empty_like(x);
  if (need_zero_point_grad) dz = at::empty_like(x);
  C10_CUDA_CHECK(cuda::affine_backward(a.launch, g.data_ptr<float>(), x.data_ptr<float>(), dx.data_ptr<float>(),
                                       ds.defined() ? ds.data_ptr<float>() : nullptr,
                                       dz.defined() ? dz.data_ptr<float>() : nullptr,
                                       c10::cuda::getCurrentCUDAStream()));
  if (ds.defined()) ds = per_channel_sum(ds, a.launch, scale, grad_factor);
  if (dz.defined()) dz = per_channel_sum(dz, a.launch, zero_point, grad_factor);
  return {dx, ds, dz};
}

at::Tensor cuda_qdrop_mask(const at::Tensor& like, double p, int64_t seed, int64_t stream) {
  if (!(p >= 0 && p <= 1)) throw Error("fake_quant_affine_drop: p must lie in [0, 1]");
  if (like.numel() > (int64_t{1} << 32)) throw Error("fake_quant_affine_drop: more than 2^32 elements");
  const c10::cuda::CUDAGuard guard(like.device());
  at::Tensor m = at::empty(like.sizes(), like.options().dtype(at::kBool));
  const elem::DropKey k = elem::drop_key(p, seed, stream);
  C10_CUDA_CHECK(cuda::qdrop_mask(m.data_ptr<bool>(), m.numel(), k.k1, k.k2, k.threshold,
                                  c10::cuda::getCurrentCUDAStream()));
  return m;
}

}  // namespace
}  // namespace anybit

TORCH_LIBRARY_IMPL(anybit, CUDA, m) {
  m.impl("_fake_quant_affine_forward", &anybit::cuda_affine_forward);
  m.impl("_fake_quant_affine_backward", &anybit::cuda_affine_backward);
  m.impl("_qdrop_mask", &anybit::cuda_qdrop_mask);
}
