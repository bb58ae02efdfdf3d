// The LibTorch twin of the integer engine (export.h): the integer model run with int64
// ATen ops, an independent implementation of requantize.h's arithmetic that the tests hold
// the engine against, and the conversions between ATen tensors and the engine's.
#include <ATen/ATen.h>
#include <torch/utils.h>

#include <limits>

#include "anybit/export/export.h"
#include "anybit/intsim/kernels.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
using intsim::DyadicMultiplier;
using intsim::IntArray;
using intsim::Op;
using intsim::OpKind;
using intsim::QuantParams;

namespace {

at::Tensor pow2(const at::Tensor& e) { return at::exp2(e.to(at::kDouble)).to(at::kLong); }

// multiply_by_dyadic on int64 tensors whose values lie in int32; m0/shift broadcast:
// round_half_even(x * m0 / 2^(31 + shift)), saturated to int32 (requantize.h), written as
// floor division and a remainder test.
at::Tensor mul_dyadic(const at::Tensor& x, const at::Tensor& m0, const at::Tensor& shift) {
  const at::Tensor p = x * m0;
  const at::Tensor d = pow2(shift + 31);
  const at::Tensor q = at::div(p, d, "floor");
  const at::Tensor twice_rem = (p - q * d) * 2;
  const at::Tensor up = (twice_rem > d).logical_or((twice_rem == d).logical_and(at::bitwise_and(q, 1) == 1));
  return (q + up.to(at::kLong)).clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
}

// Multipliers as tensors shaped to broadcast over [N, C, ...] (channel axis 1).
std::pair<at::Tensor, at::Tensor> multiplier_tensors(const std::vector<DyadicMultiplier>& ms, int64_t dims) {
  std::vector<int64_t> m0, sh;
  for (const auto& m : ms) {
    m0.push_back(m.m0);
    sh.push_back(m.shift);
  }
  std::vector<int64_t> shape(std::max<int64_t>(dims, 2), 1);
  shape[1] = static_cast<int64_t>(ms.size());
  if (ms.size() == 1) shape.assign(1, 1);
  return {at::tensor(m0, at::kLong).reshape(shape), at::tensor(sh, at::kLong).reshape(shape)};
}

at::Tensor requant(const at::Tensor& acc, const std::vector<DyadicMultiplier>& ms, const QuantParams& q) {
  auto [m0, sh] = multiplier_tensors(ms, acc.dim());
  const at::Tensor a = acc.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
  return (mul_dyadic(a, m0, sh) + q.zero_point).clamp(q.qmin, q.qmax);
}

at::Tensor int_array(const IntArray& a) {
  return at::tensor(std::vector<int64_t>(a.data.begin(), a.data.end()), at::kLong).reshape(a.shape);
}

at::Tensor per_channel(const std::vector<int32_t>& v, int64_t dims) {
  std::vector<int64_t> shape(dims, 1);
  shape[0] = static_cast<int64_t>(v.size());
  return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).reshape(v.size() == 1 ? std::vector<int64_t>{1} : shape);
}

}  // namespace

intsim::Tensor to_engine_tensor(const at::Tensor& q) {
  const at::Tensor c = q.to(at::kInt).contiguous();
  intsim::Tensor t;
  t.shape = c.sizes().vec();
  t.data.assign(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
  return t;
}

at::Tensor quantize_input(const at::Tensor& x, const QuantParams& q) {
  const float inv = 1.0f / static_cast<float>(q.scale);
  return (x.to(at::kFloat) * inv).round().to(at::kLong).add(q.zero_point).clamp(q.qmin, q.qmax);
}

std::vector<at::Tensor> run_integer_reference(const intsim::Model& model, const std::vector<at::Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  if (inputs.size() != model.inputs.size())
    throw Error("run_integer_reference: " + std::to_string(inputs.size()) + " inputs for a model with " +
                std::to_string(model.inputs.size()));
  std::map<std::string, std::pair<at::Tensor, QuantParams>> t;
  for (size_t i = 0; i < inputs.size(); ++i) t[model.inputs[i].name] = {inputs[i].to(at::kLong), model.inputs[i].q};
  const double kLimit = 2147483647.0;
  for (const Op& op : model.ops) {
    const auto& [x, xq] = t.at(op.inputs.at(0));
    at::Tensor y;
    switch (op.kind) {
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        const at::Tensor xd = (x - xq.zero_point).to(at::kDouble);
        const at::Tensor w = (int_array(op.weight) - per_channel(op.weight_zero_point, static_cast<int64_t>(op.weight.shape.size()))).to(at::kDouble);
        at::Tensor acc = op.kind == OpKind::kConv2d
                             ? at::conv2d(xd, w, {}, {op.stride[0], op.stride[1]}, {op.padding[0], op.padding[1]},
                                          {op.dilation[0], op.dilation[1]}, op.groups)
                             : at::linear(xd, w);
        if (!op.bias.empty()) {
          std::vector<int64_t> shape(acc.dim(), 1);
          shape[1] = op.out_channels;
          acc = acc + int_array(op.bias).to(at::kDouble).reshape(shape);
        }
        if (acc.numel() && acc.abs().max().item<double>() > kLimit)
          throw Error(op.name + ": the accumulator leaves int32 (the reference models no overflow)");
        y = requant(acc.to(at::kLong), op.multiplier, op.out);
        break;
      }
      case OpKind::kAdd: {
        const auto& [b, bq] = t.at(op.inputs.at(1));
        auto [ma0, mash] = multiplier_tensors({op.input_multipliers[0]}, 1);
        auto [mb0, mbsh] = multiplier_tensors({op.input_multipliers[1]}, 1);
        const int64_t up = int64_t{1} << op.left_shift;
        const auto sat = [](const at::Tensor& v) { return v.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()); };
        const at::Tensor a2 = mul_dyadic(sat((x - xq.zero_point) * up), ma0, mash);
        const at::Tensor b2 = mul_dyadic(sat((b - bq.zero_point) * up), mb0, mbsh);
        y = requant(sat(a2 + b2), op.multiplier, op.out);
        break;
      }
      case OpKind::kRelu:
        y = x.clamp_min(xq.zero_point);
        break;
      case OpKind::kClamp:
        y = x.clamp(op.out.qmin, op.out.qmax);
        break;
      case OpKind::kMaxPool2d:
        y = at::max_pool2d(x.to(at::kDouble), {op.kernel[0], op.kernel[1]}, {op.stride[0], op.stride[1]},
                           {op.padding[0], op.padding[1]}, {op.dilation[0], op.dilation[1]}, op.ceil_mode)
                .to(at::kLong);
        break;
      case OpKind::kAvgPool2d: {
        const at::Tensor s = at::avg_pool2d((x - xq.zero_point).to(at::kDouble), {op.kernel[0], op.kernel[1]},
                                            {op.stride[0], op.stride[1]}, {op.padding[0], op.padding[1]}, false, true, 1);
        y = requant(s.round().to(at::kLong), op.multiplier, op.out);
        break;
      }
      case OpKind::kGlobalAvgPool:
        y = requant((x - xq.zero_point).sum({2, 3}, /*keepdim=*/true), op.multiplier, op.out);
        break;
      case OpKind::kAdaptiveAvgPool2d: {
        // The windows are ATen's own: its average times each window's count is the sum
        // (exact after rounding: sums of integers far below 2^53).
        const int64_t oh = op.output_size[0], ow = op.output_size[1], ih = x.size(2), iw = x.size(3);
        const std::vector<int64_t> counts = intsim::adaptive_window_counts(ih, iw, oh, ow);
        const at::Tensor mean = at::adaptive_avg_pool2d((x - xq.zero_point).to(at::kDouble), {oh, ow});
        const at::Tensor sum = (mean * at::tensor(counts, at::kDouble).reshape({1, 1, oh, ow})).round().to(at::kLong);
        // one multiplier per output position: broadcast over [N, C, oh, ow]
        std::vector<int64_t> m0, sh;
        for (const auto& m : op.multiplier) m0.push_back(m.m0), sh.push_back(m.shift);
        const std::vector<int64_t> mshape = op.multiplier.size() == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 1, oh, ow};
        const at::Tensor a = sum.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
        y = (mul_dyadic(a, at::tensor(m0, at::kLong).reshape(mshape), at::tensor(sh, at::kLong).reshape(mshape)) + op.out.zero_point)
                .clamp(op.out.qmin, op.out.qmax);
        break;
      }
      case OpKind::kFlatten:
        y = x.reshape({x.size(0), -1});
        break;
      case OpKind::kConcat: {
        std::vector<at::Tensor> parts;
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          const auto& [v, vq] = t.at(op.inputs[i]);
          parts.push_back(requant(v - vq.zero_point, {op.input_multipliers[i]}, op.out));
        }
        y = at::cat(parts, op.axis);
        break;
      }
    }
    QuantParams yq = op.out;
    if (op.kind == OpKind::kRelu) yq = xq, yq.qmin = std::max(xq.qmin, xq.zero_point);
    if (op.kind == OpKind::kMaxPool2d || op.kind == OpKind::kFlatten) yq = xq;
    t[op.output] = {y, yq};
  }
  std::vector<at::Tensor> out;
  for (const auto& o : model.outputs) out.push_back(t.at(o.name).first.to(at::kInt));
  return out;
}

}  // namespace anybit
