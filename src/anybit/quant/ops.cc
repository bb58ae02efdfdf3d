// Registers anybit's quantizer ops with the dispatcher: TORCH_LIBRARY(anybit, m).
// Each op is a CompositeImplicitAutograd kernel that calls a custom autograd Function,
// so one registration serves TorchScript graphs, C++, Python and every device (the
// fast CPU kernels fall back to ATen-op compositions elsewhere).
//
// The kernels that have a device form are ops of their own, `_fake_quant_affine_forward`,
// `_fake_quant_affine_backward` and `_qdrop_mask`: CPU kernels here, CUDA kernels in
// libanybit_cuda (cuda/ops_cuda.cc) when it is loaded (quant/device.h). The autograd
// functions call them through the dispatcher for tensors on a device that has them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/spec.h"

namespace {

at::Tensor op_fake_quant_affine(const at::Tensor& x, const at::Tensor& scale,
                                const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                                int64_t quant_min, int64_t quant_max, int64_t rounding,
                                double grad_factor) {
  return anybit::fake_quant_affine(x, scale, zero_point, axis, group_size, quant_min, quant_max,
                                   rounding, grad_factor);
}

at::Tensor op_fake_quant_affine_drop(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                     int64_t axis, int64_t group_size, int64_t quant_min, int64_t quant_max, double p,
                                     int64_t seed, int64_t stream, int64_t rounding, double grad_factor) {
  return anybit::fake_quant_affine_drop(x, scale, zero_point, axis, group_size, quant_min, quant_max, p, seed,
                                        stream, rounding, grad_factor);
}

at::Tensor op_fake_quant_log(const at::Tensor& x, const at::Tensor& hi, int64_t num_exponents,
                             int64_t axis) {
  return anybit::fake_quant_log(x, hi, num_exponents, axis);
}

at::Tensor op_fake_quant_binary(const at::Tensor& x, const at::Tensor& alpha, int64_t axis,
                                double ste_clip, double grad_factor) {
  return anybit::fake_quant_binary(x, alpha, axis, ste_clip, grad_factor);
}

at::Tensor op_fake_quant_ternary(const at::Tensor& x, const at::Tensor& alpha,
                                 const at::Tensor& delta, int64_t axis, double ste_clip,
                                 double grad_factor) {
  return anybit::fake_quant_ternary(x, alpha, delta, axis, ste_clip, grad_factor);
}

at::Tensor op_fake_quant_pact(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                              int64_t rounding) {
  return anybit::fake_quant_pact(x, alpha, bits, rounding);
}

at::Tensor op_fake_quant_minifloat(const at::Tensor& x, const at::Tensor& scale, int64_t axis, int64_t group_size,
                                   int64_t exp_bits, int64_t man_bits, double grad_factor) {
  return anybit::fake_quant_minifloat(x, scale, axis, group_size, exp_bits, man_bits, grad_factor);
}

// format: [block, exp_bits, man_bits] (the point's attribute, see quant/scheme.cc)
at::Tensor op_fake_quant_mx(const at::Tensor& x, const at::Tensor& format, int64_t axis) {
  if (format.numel() != 3) throw anybit::Error("fake_quant_mx: format must hold [block, exp_bits, man_bits]");
  const at::Tensor f = format.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = f.data_ptr<int64_t>();
  return anybit::fake_quant_mx(x, axis, p[0], p[1], p[2]);
}

at::Tensor op_fake_quant_nvfp4(const at::Tensor& x, const at::Tensor& scale, int64_t axis, int64_t block) {
  return anybit::fake_quant_nvfp4(x, scale, axis, block);
}

at::Tensor op_fake_quant_lut(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& levels, int64_t axis,
                             int64_t group_size, double grad_factor) {
  return anybit::fake_quant_lut(x, scale, levels, axis, group_size, grad_factor);
}

at::Tensor op_affine_forward(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                             int64_t axis, int64_t group_size, int64_t quant_min, int64_t quant_max,
                             int64_t rounding) {
  return anybit::fake_quant_affine_forward(x, scale, zero_point, axis, group_size, quant_min, quant_max, rounding);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> op_affine_backward(const at::Tensor& grad, const at::Tensor& x,
                                                                  const at::Tensor& scale, const at::Tensor& zero_point,
                                                                  int64_t axis, int64_t group_size, int64_t quant_min,
                                                                  int64_t quant_max, double grad_factor,
                                                                  bool need_scale_grad, bool need_zero_point_grad) {
  return anybit::fake_quant_affine_backward(grad, x, scale, zero_point, axis, group_size, quant_min, quant_max,
                                            grad_factor, need_scale_grad, need_zero_point_grad);
}

at::Tensor op_qdrop_mask(const at::Tensor& like, double p, int64_t seed, int64_t stream) {
  return anybit::qdrop_mask(like.numel(), p, seed, stream).reshape(like.sizes());
}

}  // namespace

TORCH_LIBRARY(anybit, m) {
  m.def("fake_quant_affine(Tensor x, Tensor scale, Tensor zero_point, int axis, int group_size, "
        "int quant_min, int quant_max, int rounding=0, float grad_factor=1.0) -> Tensor",
        &op_fake_quant_affine);
  m.def("fake_quant_affine_drop(Tensor x, Tensor scale, Tensor zero_point, int axis, int group_size, "
        "int quant_min, int quant_max, float p, int seed, int stream, int rounding=0, float grad_factor=1.0) "
        "-> Tensor",
        &op_fake_quant_affine_drop);
  m.def("fake_quant_log(Tensor x, Tensor hi, int num_exponents, int axis=-1) -> Tensor",
        &op_fake_quant_log);
  m.def("fake_quant_binary(Tensor x, Tensor alpha, int axis=-1, float ste_clip=1.0, "
        "float grad_factor=1.0) -> Tensor",
        &op_fake_quant_binary);
  m.def("fake_quant_ternary(Tensor x, Tensor alpha, Tensor delta, int axis=-1, "
        "float ste_clip=1.0, float grad_factor=1.0) -> Tensor",
        &op_fake_quant_ternary);
  m.def("fake_quant_pact(Tensor x, Tensor alpha, int bits, int rounding=0) -> Tensor",
        &op_fake_quant_pact);
  m.def("fake_quant_minifloat(Tensor x, Tensor scale, int axis, int group_size, int exp_bits, int man_bits, "
        "float grad_factor=1.0) -> Tensor",
        &op_fake_quant_minifloat);
  m.def("fake_quant_mx(Tensor x, Tensor format, int axis=-1) -> Tensor", &op_fake_quant_mx);
  m.def("fake_quant_nvfp4(Tensor x, Tensor scale, int axis, int block=16) -> Tensor", &op_fake_quant_nvfp4);
  m.def("fake_quant_lut(Tensor x, Tensor scale, Tensor levels, int axis, int group_size, float grad_factor=1.0) "
        "-> Tensor",
        &op_fake_quant_lut);
  // the kernels with device forms (see the top of this file); their CPU kernels follow
  m.def("_fake_quant_affine_forward(Tensor x, Tensor scale, Tensor zero_point, int axis, int group_size, "
        "int quant_min, int quant_max, int rounding) -> Tensor");
  m.def("_fake_quant_affine_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, int axis, "
        "int group_size, int quant_min, int quant_max, float grad_factor, bool need_scale_grad, "
        "bool need_zero_point_grad) -> (Tensor, Tensor, Tensor)");
  m.def("_qdrop_mask(Tensor like, float p, int seed, int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(anybit, CPU, m) {
  m.impl("_fake_quant_affine_forward", &op_affine_forward);
  m.impl("_fake_quant_affine_backward", &op_affine_backward);
  m.impl("_qdrop_mask", &op_qdrop_mask);
}
