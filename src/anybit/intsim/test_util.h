// Test helpers for the integer engine: a builder of random but well-scaled integer models
// (weights, zero points, biases and multipliers chosen so that outputs use their range
// instead of saturating), and small utilities shared by the *_test.cc files.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "anybit/base/test_temp_dir.h"
#include "anybit/intsim/kernels.h"
#include "anybit/intsim/model.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {
namespace testing {

inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
inline double uniform_real(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

using anybit::testing::TempDir;

// Random activation quantization: unsigned (uint8-like, free zero point) or signed
// (int8-like, zero point 0), at 8 bits unless told otherwise.
inline QuantParams random_quant(std::mt19937_64& rng, int bits = 8) {
  QuantParams q;
  q.scale = uniform_real(rng, 0.01, 0.1);
  if (uniform_int(rng, 0, 1)) {
    q.qmin = 0;
    q.qmax = (1 << bits) - 1;
    q.zero_point = static_cast<int32_t>(uniform_int(rng, 0, q.qmax / 2));
  } else {
    q.qmin = -(1 << (bits - 1));
    q.qmax = (1 << (bits - 1)) - 1;
    q.zero_point = 0;
  }
  return q;
}

// Builds a model op by op, keeping every tensor's shape and quantization at hand.
class ModelBuilder {
 public:
  explicit ModelBuilder(uint64_t seed) : rng(seed) {}

  std::string input(const std::string& name, std::vector<int64_t> shape, QuantParams q) {
    model.inputs.push_back({name, shape, q});
    return name;
  }

  // conv2d with random weights (int8 storage, `weight_bits` wide), optional per-channel
  // scales/zero points, a bias, and an output scale chosen from the accumulator's spread.
  std::string conv2d(const std::string& x, int64_t out_channels, int64_t k, int64_t stride = 1,
                     int64_t pad = 0, int64_t dilation = 1, int64_t groups = 1, bool relu = false,
                     bool per_channel = true, int weight_bits = 8) {
    const TensorInfo in = info(x);
    Op op;
    op.kind = OpKind::kConv2d;
    op.out_channels = out_channels;
    op.kernel = {{k, k}};
    op.stride = {{stride, stride}};
    op.padding = {{pad, pad}};
    op.dilation = {{dilation, dilation}};
    op.groups = groups;
    fill_dot_op(op, x, in, {out_channels, in.shape[0] / groups, k, k}, relu, per_channel,
                weight_bits);
    return add_op(op, "conv");
  }

  std::string linear(const std::string& x, int64_t out_features, bool relu = false,
                     bool per_channel = false, int weight_bits = 8) {
    const TensorInfo in = info(x);
    Op op;
    op.kind = OpKind::kLinear;
    op.out_channels = out_features;
    fill_dot_op(op, x, in, {out_features, in.shape[0]}, relu, per_channel, weight_bits);
    return add_op(op, "fc");
  }

  // TFLite's ADD parameters for the two inputs' scales and a fresh output scale.
  std::string add(const std::string& a, const std::string& b) {
    const TensorInfo ia = info(a), ib = info(b);
    Op op;
    op.kind = OpKind::kAdd;
    op.inputs = {a, b};
    op.left_shift = 20;
    op.out = random_quant(rng);
    op.out.scale = (ia.q.scale + ib.q.scale) * uniform_real(rng, 0.8, 1.6);
    const double twice_max = 2 * std::max(ia.q.scale, ib.q.scale);
    op.input_multipliers = {quantize_multiplier(ia.q.scale / twice_max),
                            quantize_multiplier(ib.q.scale / twice_max)};
    op.multiplier = {quantize_multiplier(twice_max / ((1 << op.left_shift) * op.out.scale))};
    return add_op(op, "add");
  }

  std::string relu(const std::string& x) { return simple(OpKind::kRelu, x, "relu"); }
  std::string flatten(const std::string& x) { return simple(OpKind::kFlatten, x, "flatten"); }

  std::string clamp(const std::string& x, int32_t lo, int32_t hi) {
    Op op;
    op.kind = OpKind::kClamp;
    op.inputs = {x};
    op.out.qmin = lo;
    op.out.qmax = hi;
    return add_op(op, "clamp");
  }

  std::string maxpool(const std::string& x, int64_t k, int64_t s, int64_t p = 0, int64_t d = 1,
                      bool ceil_mode = false) {
    Op op;
    op.kind = OpKind::kMaxPool2d;
    op.inputs = {x};
    op.kernel = {{k, k}};
    op.stride = {{s, s}};
    op.padding = {{p, p}};
    op.dilation = {{d, d}};
    op.ceil_mode = ceil_mode;
    return add_op(op, "maxpool");
  }

  std::string avgpool(const std::string& x, int64_t k, int64_t s, int64_t p = 0) {
    const TensorInfo in = info(x);
    Op op;
    op.kind = OpKind::kAvgPool2d;
    op.inputs = {x};
    op.kernel = {{k, k}};
    op.stride = {{s, s}};
    op.padding = {{p, p}};
    op.out = random_quant(rng);
    op.out.scale = in.q.scale * uniform_real(rng, 0.5, 1.5);
    op.multiplier = {quantize_multiplier(in.q.scale / (op.out.scale * k * k))};
    return add_op(op, "avgpool");
  }

  std::string global_avgpool(const std::string& x) {
    const TensorInfo in = info(x);
    Op op;
    op.kind = OpKind::kGlobalAvgPool;
    op.inputs = {x};
    op.out = random_quant(rng);
    op.out.scale = in.q.scale * uniform_real(rng, 0.5, 1.5);
    const double count = static_cast<double>(in.shape[1] * in.shape[2]);
    op.multiplier = {quantize_multiplier(in.q.scale / (op.out.scale * count))};
    return add_op(op, "gap");
  }

  // One multiplier per output position, s_x / (count * s_y) of its window.
  std::string adaptive_avgpool(const std::string& x, int64_t out_h, int64_t out_w) {
    const TensorInfo in = info(x);
    Op op;
    op.kind = OpKind::kAdaptiveAvgPool2d;
    op.inputs = {x};
    op.output_size = {{out_h, out_w}};
    op.out = random_quant(rng);
    op.out.scale = in.q.scale * uniform_real(rng, 0.5, 1.5);
    for (int64_t count : adaptive_window_counts(in.shape[1], in.shape[2], out_h, out_w))
      op.multiplier.push_back(quantize_multiplier(in.q.scale / (op.out.scale * static_cast<double>(count))));
    return add_op(op, "adaptive");
  }

  std::string concat(const std::vector<std::string>& xs, int64_t axis = 1) {
    Op op;
    op.kind = OpKind::kConcat;
    op.inputs = xs;
    op.axis = axis;
    op.out = random_quant(rng);
    double s = 0;
    for (const auto& x : xs) s = std::max(s, info(x).q.scale);
    op.out.scale = s * uniform_real(rng, 0.8, 1.5);
    for (const auto& x : xs) op.input_multipliers.push_back(quantize_multiplier(info(x).q.scale / op.out.scale));
    return add_op(op, "cat");
  }

  void output(const std::string& name) { model.outputs.push_back({name, {}, {}}); }

  // Shape and quantization of a tensor built so far.
  TensorInfo info(const std::string& name) {
    Model m = model;
    m.outputs = {{name, {}, {}}};
    return validate_model(m, "builder").at(name);
  }

  // A random batch for input `i`, uniformly over its integer range.
  std::vector<int32_t> random_input(size_t i, int64_t batch) {
    const TensorSpec& s = model.inputs[i];
    int64_t n = batch;
    for (int64_t d : s.shape) n *= d;
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& e : v) e = static_cast<int32_t>(uniform_int(rng, s.q.qmin, s.q.qmax));
    return v;
  }

  Model model;
  std::mt19937_64 rng;

 private:
  std::string simple(OpKind kind, const std::string& x, const char* stem) {
    Op op;
    op.kind = kind;
    op.inputs = {x};
    return add_op(op, stem);
  }

  std::string add_op(Op op, const char* stem) {
    const std::string id = std::to_string(model.ops.size());
    op.name = std::string("layer") + id + "." + stem;
    op.output = op.name + ":out";
    model.ops.push_back(op);
    return op.output;
  }

  void fill_dot_op(Op& op, const std::string& x, const TensorInfo& in, std::vector<int64_t> wshape,
                   bool relu, bool per_channel, int weight_bits) {
    op.inputs = {x};
    const int64_t O = wshape[0];
    int64_t K = 1;
    for (size_t i = 1; i < wshape.size(); ++i) K *= wshape[i];
    op.weight_qmin = -(1 << (weight_bits - 1));
    op.weight_qmax = (1 << (weight_bits - 1)) - 1;
    op.weight.dtype = weight_bits <= 8 ? DType::kInt8 : (weight_bits <= 16 ? DType::kInt16 : DType::kInt32);
    op.weight.shape = wshape;
    op.weight.data.resize(static_cast<size_t>(O * K));
    for (auto& w : op.weight.data) w = static_cast<int32_t>(uniform_int(rng, op.weight_qmin, op.weight_qmax));
    const int64_t channels = per_channel ? O : 1;
    const bool asym_weights = uniform_int(rng, 0, 3) == 0;
    for (int64_t c = 0; c < channels; ++c) {
      op.weight_scale.push_back(uniform_real(rng, 0.002, 0.02));
      op.weight_zero_point.push_back(
          asym_weights ? static_cast<int32_t>(uniform_int(rng, op.weight_qmin / 4, op.weight_qmax / 4)) : 0);
    }
    // The accumulator's spread: sqrt(K) * typical |x - z| * typical |w - z_w|.
    const double x_typ = (in.q.qmax - in.q.qmin) / 3.5;
    const double w_typ = (op.weight_qmax - op.weight_qmin) / 3.5;
    const double acc_typ = std::sqrt(static_cast<double>(K)) * x_typ * w_typ;
    op.bias.dtype = DType::kInt32;
    op.bias.shape = {O};
    for (int64_t o = 0; o < O; ++o)
      op.bias.data.push_back(static_cast<int32_t>(uniform_int(rng, -static_cast<int64_t>(acc_typ / 2), static_cast<int64_t>(acc_typ / 2))));
    op.out = random_quant(rng);
    if (relu) op.out.qmin = std::max(op.out.qmin, op.out.zero_point);  // fused relu
    // Aim for about 30 output steps per accumulator spread.
    const double target_m = 30.0 / acc_typ * uniform_real(rng, 0.5, 2.0);
    op.out.scale = in.q.scale * op.weight_scale[0] / target_m;
    for (int64_t c = 0; c < channels; ++c)
      op.multiplier.push_back(quantize_multiplier(in.q.scale * op.weight_scale[c] / op.out.scale));
  }
};

}  // namespace testing
}  // namespace intsim
}  // namespace anybit
