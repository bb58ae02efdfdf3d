// The quantizers computed as compositions of ATen ops on every device (the same operations on
// the CPU and a GPU, so no kernel of their own): logarithmic, binary, ternary, and PACT's
// backward (its forward is the uniform kernel). See fake_quant.h for the math.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/fake_quant_internal.h"
#include "anybit/quant/spec.h"

namespace anybit {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace fq;  // NOLINT: the kernels' shared helpers

// ---------------------------------------------------------------------------------
// Logarithmic
// ---------------------------------------------------------------------------------

at::Tensor fake_quant_log_reference(const at::Tensor& x_in, const at::Tensor& hi_t,
                                    int64_t num_exponents, int64_t axis) {
  if (num_exponents < 1) throw Error("fake_quant_log: need at least one exponent");
  at::Tensor x = x_in.detach().to(at::kFloat).contiguous();
  ChannelLayout L = channel_layout(x, hi_t.numel(), axis, 0, "fake_quant_log");
  std::vector<float> hi = float_params(hi_t, L.channels);
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / L.inner) % L.channels;
    if (px[i] == 0.0f) {
      py[i] = 0.0f;
      continue;
    }
    const float h = std::nearbyint(hi[c]);
    const float lo = h - static_cast<float>(num_exponents - 1);
    const float e = std::min(std::max(std::nearbyint(std::log2(std::fabs(px[i]))), lo), h);
    py[i] = std::copysign(std::exp2(e), px[i]);
  }
  return y.to(x_in.scalar_type());
}

namespace {
class FakeQuantLogFn : public torch::autograd::Function<FakeQuantLogFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& hi,
                            int64_t num_exponents, int64_t axis) {
    ctx->save_for_backward({x, hi});
    ctx->saved_data["n"] = num_exponents;
    ctx->saved_data["axis"] = axis;
    if (!x.device().is_cpu()) {
      at::Tensor h = hi.detach().round();
      ChannelLayout L = channel_layout(x, hi.numel(), axis, 0, "fake_quant_log");
      h = per_channel_view(h, x, axis, 0, L.channels);
      at::Tensor e = at::log2(x.abs()).round().clamp_min(h - (num_exponents - 1));
      e = at::minimum(e, h);
      return at::where(x == 0, at::zeros_like(x), at::exp2(e) * at::where(x < 0, -1.0, 1.0).to(x.options()));
    }
    return fake_quant_log_reference(x, hi, num_exponents, axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    ChannelLayout L = channel_layout(x, saved[1].numel(), ctx->saved_data["axis"].toInt(), 0,
                                     "fake_quant_log");
    at::Tensor h = per_channel_view(saved[1].detach().round().to(x.options()), x,
                                    ctx->saved_data["axis"].toInt(), 0, L.channels);
    const int64_t n = ctx->saved_data["n"].toInt();
    at::Tensor a = x.abs();
    at::Tensor mask = (a >= at::exp2(h - (n - 1))) & (a <= at::exp2(h));
    return {grads[0] * mask, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor fake_quant_log(const at::Tensor& x, const at::Tensor& hi, int64_t num_exponents,
                          int64_t axis) {
  return FakeQuantLogFn::apply(x, hi, num_exponents, axis);
}

// ---------------------------------------------------------------------------------
// Binary and ternary
// ---------------------------------------------------------------------------------

namespace {
class FakeQuantTernaryFn : public torch::autograd::Function<FakeQuantTernaryFn> {
 public:
  // binary: sign with sign(0) = +1, delta unused
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            const at::Tensor& delta, int64_t axis, double ste_clip, bool binary,
                            double grad_factor) {
    ChannelLayout L = channel_layout(x, alpha.numel(), axis, 0, binary ? "fake_quant_binary"
                                                                       : "fake_quant_ternary");
    at::Tensor a = per_channel_view(alpha.detach().to(x.options()), x, axis, 0, L.channels);
    at::Tensor t;
    if (binary) {
      t = at::where(x >= 0, 1.0, -1.0).to(x.options());
    } else {
      at::Tensor d = per_channel_view(delta.detach().to(x.options()), x, axis, 0, L.channels);
      t = (x > d).to(x.options()) - (x < -d).to(x.options());
    }
    ctx->save_for_backward({x, t, alpha, delta});
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["binary"] = binary;
    ctx->saved_data["grad_factor"] = grad_factor;
    ctx->saved_data["clip"] = ste_clip;
    ctx->saved_data["channels"] = L.channels;
    return a * t;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &t = saved[1], &alpha = saved[2], &delta = saved[3];
    const double clip = ctx->saved_data["clip"].toDouble();
    const int64_t axis = ctx->saved_data["axis"].toInt();
    const int64_t channels = ctx->saved_data["channels"].toInt();
    at::Tensor dx = grads[0] * (x.abs() <= clip);
    auto per_channel_sum = [&](const at::Tensor& v, const at::Tensor& like) {
      if (like.numel() == 1) return v.sum().reshape(like.sizes());
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < x.dim(); ++d)
        if (d != axis) dims.push_back(d);
      return v.sum(dims).reshape(like.sizes());
    };
    at::Tensor da, dd;
    const double gf = ctx->saved_data["grad_factor"].toDouble();
    if (alpha.requires_grad()) da = (per_channel_sum(grads[0] * t, alpha) * gf).to(alpha.options());
    if (!ctx->saved_data["binary"].toBool() && delta.requires_grad()) {
      // dL/d(delta), a kernel estimate of the jump: raising the threshold by h zeroes the
      // outputs alpha * sign(x) with delta < |x| <= delta + h, so over a band of width
      // h = kTernaryThresholdBand * delta centred on delta
      //   dL/d(delta) ~= -1/h * sum_{|x| in (delta - h/2, delta + h/2]} dy * alpha * sign(x),
      // which a central finite difference of step h reproduces exactly for a loss linear in x^.
      at::Tensor a = per_channel_view(alpha.detach().to(x.options()), x, axis, 0, channels);
      at::Tensor d = per_channel_view(delta.detach().to(x.options()), x, axis, 0, channels);
      at::Tensor h = (d * kTernaryThresholdBand).clamp_min(1e-12);
      at::Tensor ax = x.abs();
      at::Tensor band = (ax > d - h / 2) & (ax <= d + h / 2);
      at::Tensor sgn = at::where(x >= 0, 1.0, -1.0).to(x.options());
      dd = (per_channel_sum(grads[0] * band * sgn * a / h, delta) * -gf).to(delta.options());
    }
    return {dx, da, dd, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor fake_quant_binary(const at::Tensor& x, const at::Tensor& alpha, int64_t axis,
                             double ste_clip, double grad_factor) {
  return FakeQuantTernaryFn::apply(x, alpha, at::zeros({1}), axis, ste_clip, true, grad_factor);
}

at::Tensor fake_quant_ternary(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& delta,
                              int64_t axis, double ste_clip, double grad_factor) {
  if (!delta.defined()) throw Error("fake_quant_ternary: threshold tensor is undefined");
  return FakeQuantTernaryFn::apply(x, alpha, delta, axis, ste_clip, false, grad_factor);
}

// ---------------------------------------------------------------------------------
// PACT
// ---------------------------------------------------------------------------------

namespace {
class FakeQuantPactFn : public torch::autograd::Function<FakeQuantPactFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            int64_t bits, int64_t rounding) {
    if (bits < 1 || bits > 16) throw Error("fake_quant_pact: bits must be in 1..16");
    if (alpha.numel() != 1) throw Error("fake_quant_pact: alpha must hold one value");
    ctx->save_for_backward({x, alpha});
    const int64_t qmax = (int64_t{1} << bits) - 1;
    at::Tensor a = alpha.detach().to(at::kFloat).reshape({1}).clamp_min(1e-8);
    at::Tensor s = a / static_cast<double>(qmax);
    return fake_quant_affine_forward(x, s, at::zeros({1}), -1, 0, 0, qmax, rounding);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &alpha = saved[1];
    at::Tensor a = alpha.detach().to(x.options()).reshape({});
    at::Tensor dx = grads[0] * ((x >= 0) & (x <= a));
    at::Tensor da;
    if (alpha.requires_grad()) da = (grads[0] * (x >= a)).sum().reshape(alpha.sizes()).to(alpha.options());
    return {dx, da, at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor fake_quant_pact(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                           int64_t rounding) {
  return FakeQuantPactFn::apply(x, alpha, bits, rounding);
}

}  // namespace anybit
