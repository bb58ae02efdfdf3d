// The integer engine: per-layer preparation (weight offsets, the overflow bound that
// decides the fast path) and the op-by-op run over a batch. See engine.h.
#include "anybit/intsim/engine.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "anybit/intsim/kernels.h"

namespace anybit {
namespace intsim {
namespace {

// A conv2d or linear layer ready to run.
struct PreparedLayer {
  bool fast = false;             // exact in int32 (bound proven) and exact MAC
  bool int16_operands = false;   // x - z_x and w - z_w both fit int16
  std::vector<int32_t> w_offset;  // w - z_w, [O][K]
  std::vector<int16_t> w_offset16;
  int64_t out_channels = 0, patch = 0;
};

struct PreparedOp {
  std::vector<int> inputs;  // tensor ids
  int output = -1;
  PreparedLayer layer;
};

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Largest |q - z| over a tensor's integer range.
int64_t max_abs_offset(const QuantParams& q) {
  return std::max(int64_t{q.qmax} - q.zero_point, int64_t{q.zero_point} - q.qmin);
}

PreparedLayer prepare_layer(const Op& op, const TensorInfo& in, const EngineOptions& options,
                            bool mac_exact) {
  PreparedLayer p;
  p.out_channels = op.out_channels;
  p.patch = numel_of(op.weight.shape) / op.out_channels;
  p.w_offset.resize(op.weight.data.size());
  bool w_fits_int16 = true;
  for (int64_t o = 0; o < p.out_channels; ++o) {
    const int64_t zw = op.weight_zero_point.size() == 1 ? op.weight_zero_point[0] : op.weight_zero_point[o];
    for (int64_t k = 0; k < p.patch; ++k) {
      const size_t i = static_cast<size_t>(o * p.patch + k);
      const int64_t v = op.weight.data[i] - zw;  // fits int32: checked by validate_model
      p.w_offset[i] = static_cast<int32_t>(v);
      w_fits_int16 = w_fits_int16 && v >= -32768 && v <= 32767;
    }
  }
  // The bound: no partial sum of any order can exceed |bias| + max|x - z| * sum|w - z_w|.
  // In 128 bits it cannot overflow (2^32 * 2^31 * 2^32 at most).
  const int64_t acc_max = (int64_t{1} << (options.accumulator.bits - 1)) - 1;
  const unsigned __int128 x_max = static_cast<unsigned __int128>(max_abs_offset(in.q));
  bool bounded = true;
  for (int64_t o = 0; o < p.out_channels && bounded; ++o) {
    unsigned __int128 w_sum = 0;
    for (int64_t k = 0; k < p.patch; ++k) {
      const int64_t v = p.w_offset[static_cast<size_t>(o * p.patch + k)];
      w_sum += static_cast<unsigned __int128>(v < 0 ? -v : v);
    }
    const int64_t b = op.bias.empty() ? 0 : op.bias.data[static_cast<size_t>(o)];
    const unsigned __int128 bound = static_cast<unsigned __int128>(b < 0 ? -b : b) + x_max * w_sum;
    bounded = bound <= static_cast<unsigned __int128>(acc_max);
  }
  const int64_t x_lo = int64_t{in.q.qmin} - in.q.zero_point;
  const int64_t x_hi = int64_t{in.q.qmax} - in.q.zero_point;
  p.fast = options.path == KernelPath::kAuto && mac_exact && bounded;
  p.int16_operands = w_fits_int16 && x_lo >= -32768 && x_hi <= 32767;
  if (p.fast && p.int16_operands)
    p.w_offset16.assign(p.w_offset.begin(), p.w_offset.end());
  return p;
}

// y = requantize_dyadic(acc, M[channel], ...) over [batch][channels][inner].
template <typename A>
void requantize_channels(const A* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y) {
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const DyadicMultiplier mc = m.size() == 1 ? m[0] : m[static_cast<size_t>(c)];
      const int64_t base = (n * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i)
        y[base + i] = requantize_dyadic(acc[base + i], mc, q.zero_point, q.qmin, q.qmax);
    }
  }
}

Conv2dGeometry conv_geometry(const Op& op, const std::vector<int64_t>& in_shape_nchw) {
  Conv2dGeometry g;
  g.batch = in_shape_nchw[0];
  g.in_channels = in_shape_nchw[1];
  g.in_h = in_shape_nchw[2];
  g.in_w = in_shape_nchw[3];
  g.out_channels = op.out_channels;
  g.kernel_h = op.kernel[0], g.kernel_w = op.kernel[1];
  g.stride_h = op.stride[0], g.stride_w = op.stride[1];
  g.pad_h = op.padding[0], g.pad_w = op.padding[1];
  g.dilation_h = op.dilation[0], g.dilation_w = op.dilation[1];
  g.groups = op.groups;
  return g;
}

Pool2dGeometry pool_geometry(const Op& op, const std::vector<int64_t>& in_nchw,
                             const std::vector<int64_t>& out_chw) {
  Pool2dGeometry g;
  g.batch = in_nchw[0];
  g.channels = in_nchw[1];
  g.in_h = in_nchw[2];
  g.in_w = in_nchw[3];
  g.out_h = out_chw[1];
  g.out_w = out_chw[2];
  if (op.kind == OpKind::kGlobalAvgPool) {
    g.kernel_h = g.in_h, g.kernel_w = g.in_w;  // one window: the whole plane
    return g;
  }
  g.kernel_h = op.kernel[0], g.kernel_w = op.kernel[1];
  g.stride_h = op.stride[0], g.stride_w = op.stride[1];
  g.pad_h = op.padding[0], g.pad_w = op.padding[1];
  g.dilation_h = op.dilation[0], g.dilation_w = op.dilation[1];
  return g;
}

}  // namespace

int64_t Tensor::numel() const { return numel_of(shape); }

Tensor Tensor::from_int8(std::vector<int64_t> shape, const std::vector<int8_t>& values) {
  Tensor t;
  t.shape = std::move(shape);
  t.data.assign(values.begin(), values.end());
  return t;
}

Tensor Tensor::from_int32(std::vector<int64_t> shape, std::vector<int32_t> values) {
  Tensor t;
  t.shape = std::move(shape);
  t.data = std::move(values);
  return t;
}

Tensor quantize_tensor(const float* x, std::vector<int64_t> shape, const QuantParams& q) {
  Tensor t;
  t.shape = std::move(shape);
  const int64_t n = t.numel();
  t.data.resize(static_cast<size_t>(n));
  const float s = static_cast<float>(q.scale);
  for (int64_t i = 0; i < n; ++i) t.data[i] = quantize_uniform(x[i], s, q.zero_point, q.qmin, q.qmax);
  return t;
}

std::vector<float> dequantize_tensor(const Tensor& t, const QuantParams& q) {
  std::vector<float> x(t.data.size());
  const float s = static_cast<float>(q.scale);
  for (size_t i = 0; i < x.size(); ++i) x[i] = dequantize_uniform(t.data[i], s, q.zero_point);
  return x;
}

struct Engine::Impl {
  Model model;
  EngineOptions options;
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, int> ids;
  std::vector<std::string> names;  // by id
  std::vector<int> last_use;       // by id: index of the last op reading it (-1: none)
  std::vector<bool> is_output;     // by id
  std::vector<PreparedOp> ops;
  std::vector<LayerStats> stats;
  std::shared_ptr<MacModel> mac;

  int id_of(const std::string& name) {
    auto it = ids.find(name);
    if (it != ids.end()) return it->second;
    const int id = static_cast<int>(names.size());
    ids[name] = id;
    names.push_back(name);
    return id;
  }

  void run_op(size_t k, std::vector<Tensor>& env);
};

Engine::Engine(Model model, EngineOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  check_accumulator_spec(options.accumulator);
  m.tensors = validate_model(model, "model");
  m.model = std::move(model);
  m.options = std::move(options);
  m.mac = m.options.mac ? m.options.mac : std::make_shared<ExactMac>();
  for (const TensorSpec& in : m.model.inputs) m.id_of(in.name);
  for (const Op& op : m.model.ops) {
    PreparedOp p;
    for (const std::string& name : op.inputs) p.inputs.push_back(m.id_of(name));
    p.output = m.id_of(op.output);
    LayerStats s;
    s.name = op.name;
    s.op = op_kind_name(op.kind);
    if (op.kind == OpKind::kConv2d || op.kind == OpKind::kLinear) {
      p.layer = prepare_layer(op, m.tensors.at(op.inputs[0]), m.options, m.mac->is_exact());
      s.fast_path = p.layer.fast;
    }
    m.ops.push_back(std::move(p));
    m.stats.push_back(s);
  }
  m.last_use.assign(m.names.size(), -1);
  m.is_output.assign(m.names.size(), false);
  for (size_t k = 0; k < m.ops.size(); ++k)
    for (int id : m.ops[k].inputs) m.last_use[id] = static_cast<int>(k);
  for (const TensorSpec& out : m.model.outputs) m.is_output[m.ids.at(out.name)] = true;
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const Model& Engine::model() const { return impl_->model; }
const EngineOptions& Engine::options() const { return impl_->options; }
const std::vector<LayerStats>& Engine::stats() const { return impl_->stats; }

void Engine::reset_stats() {
  for (LayerStats& s : impl_->stats) {
    s.dot_products = s.overflows = s.max_abs_error = 0;
    s.sum_abs_error = 0;
  }
}

std::vector<Tensor> Engine::run(const std::vector<Tensor>& inputs,
                                std::map<std::string, Tensor>* tensors) {
  Impl& m = *impl_;
  const std::vector<TensorSpec>& specs = m.model.inputs;
  if (inputs.size() != specs.size())
    throw Error("run: the model takes " + std::to_string(specs.size()) + " inputs, got " +
                std::to_string(inputs.size()));
  std::vector<Tensor> env(m.names.size());
  int64_t batch = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    const TensorSpec& s = specs[i];
    std::vector<int64_t> want = s.shape;
    want.insert(want.begin(), t.shape.empty() ? 0 : t.shape[0]);
    if (t.shape.empty() || t.shape[0] < 1 || t.shape != want)
      throw Error("input '" + s.name + "': expected shape [N," + shape_str(s.shape).substr(1) +
                  ", got " + shape_str(t.shape));
    if (batch >= 0 && t.shape[0] != batch)
      throw Error("input '" + s.name + "': batch " + std::to_string(t.shape[0]) +
                  " differs from the first input's " + std::to_string(batch));
    batch = t.shape[0];
    if (static_cast<int64_t>(t.data.size()) != t.numel())
      throw Error("input '" + s.name + "': " + std::to_string(t.data.size()) +
                  " values for shape " + shape_str(t.shape));
    for (size_t j = 0; j < t.data.size(); ++j)
      if (t.data[j] < s.q.qmin || t.data[j] > s.q.qmax)
        throw Error("input '" + s.name + "': value " + std::to_string(t.data[j]) + " at index " +
                    std::to_string(j) + " is outside [qmin, qmax] = [" + std::to_string(s.q.qmin) +
                    ", " + std::to_string(s.q.qmax) + "]");
    env[m.ids.at(s.name)] = t;
  }
  for (size_t k = 0; k < m.ops.size(); ++k) {
    m.run_op(k, env);
    if (!tensors)
      for (int id : m.ops[k].inputs)
        if (m.last_use[id] == static_cast<int>(k) && !m.is_output[id]) env[id] = Tensor{};
  }
  std::vector<Tensor> outputs;
  for (const TensorSpec& out : m.model.outputs) outputs.push_back(env[m.ids.at(out.name)]);
  if (tensors)
    for (size_t id = 0; id < env.size(); ++id) (*tensors)[m.names[id]] = env[id];
  return outputs;
}

void Engine::Impl::run_op(size_t k, std::vector<Tensor>& env) {
  const Op& op = model.ops[k];
  PreparedOp& p = ops[k];
  LayerStats& st = stats[k];
  const Tensor& x = env[p.inputs[0]];
  const TensorInfo& xi = tensors.at(op.inputs[0]);
  const TensorInfo& yi = tensors.at(op.output);
  const int64_t batch = x.shape[0];
  Tensor y;
  y.shape = yi.shape;
  y.shape.insert(y.shape.begin(), batch);
  y.data.resize(static_cast<size_t>(y.numel()));
  const int32_t* bias = op.bias.empty() ? nullptr : op.bias.data.data();

  switch (op.kind) {
    case OpKind::kConv2d:
    case OpKind::kLinear: {
      const bool conv = op.kind == OpKind::kConv2d;
      const PreparedLayer& L = p.layer;
      const int64_t inner = conv ? yi.shape[1] * yi.shape[2] : 1;
      const int64_t in_features = conv ? 0 : xi.shape[0];
      const Conv2dGeometry g = conv ? conv_geometry(op, x.shape) : Conv2dGeometry{};
      const int32_t zx = xi.q.zero_point;
      st.dot_products += batch * L.out_channels * inner;
      if (L.fast) {
        std::vector<int32_t> acc(y.data.size());
        if (conv && L.int16_operands)
          conv2d_int16_acc32(g, x.data.data(), zx, L.w_offset16.data(), bias, acc.data());
        else if (conv)
          conv2d_int32_acc32(g, x.data.data(), zx, L.w_offset.data(), bias, acc.data());
        else if (L.int16_operands)
          linear_int16_acc32(batch, in_features, L.out_channels, x.data.data(), zx,
                             L.w_offset16.data(), bias, acc.data());
        else
          linear_int32_acc32(batch, in_features, L.out_channels, x.data.data(), zx,
                             L.w_offset.data(), bias, acc.data());
        requantize_channels(acc.data(), batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
        break;
      }
      std::vector<int64_t> acc(y.data.size());
      if (options.path == KernelPath::kReference) {
        if (conv)
          conv2d_int_reference(g, x.data.data(), zx, op.weight.data.data(), op.weight_zero_point,
                               bias, options.accumulator, acc.data(), &st.overflows);
        else
          linear_int_reference(batch, in_features, L.out_channels, x.data.data(), zx,
                               op.weight.data.data(), op.weight_zero_point, bias,
                               options.accumulator, acc.data(), &st.overflows);
      } else {
        Accumulator reg(options.accumulator);
        MacStats ms;
        if (conv)
          conv2d_int_mac(g, x.data.data(), zx, L.w_offset.data(), bias, *mac, op.name, reg,
                         acc.data(), &ms);
        else
          linear_int_mac(batch, in_features, L.out_channels, x.data.data(), zx, L.w_offset.data(),
                         bias, *mac, op.name, reg, acc.data(), &ms);
        st.overflows += reg.overflows();
        st.sum_abs_error += ms.sum_abs_error;
        st.max_abs_error = std::max(st.max_abs_error, ms.max_abs_error);
      }
      requantize_channels(acc.data(), batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kAdd: {
      const TensorInfo& bi = tensors.at(op.inputs[1]);
      AddParams a;
      a.a_zero_point = xi.q.zero_point;
      a.b_zero_point = bi.q.zero_point;
      a.a_multiplier = op.input_multipliers[0];
      a.b_multiplier = op.input_multipliers[1];
      a.left_shift = op.left_shift;
      a.out_multiplier = op.multiplier[0];
      a.out_zero_point = yi.q.zero_point;
      a.qmin = yi.q.qmin;
      a.qmax = yi.q.qmax;
      add_int(a, x.data.data(), env[p.inputs[1]].data.data(), y.numel(), y.data.data());
      break;
    }
    case OpKind::kRelu:
      // validate_model set the output's qmin to the zero point clamped into the range
      for (size_t i = 0; i < y.data.size(); ++i) y.data[i] = std::max(x.data[i], yi.q.qmin);
      break;
    case OpKind::kClamp:
      for (size_t i = 0; i < y.data.size(); ++i)
        y.data[i] = std::min(std::max(x.data[i], yi.q.qmin), yi.q.qmax);
      break;
    case OpKind::kFlatten:
      y.data = x.data;
      break;
    case OpKind::kMaxPool2d:
      maxpool2d_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.qmin, y.data.data());
      break;
    case OpKind::kAvgPool2d:
    case OpKind::kGlobalAvgPool: {
      std::vector<int64_t> sum(y.data.size());
      Accumulator reg(options.accumulator);
      avgpool2d_sum_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.zero_point, reg,
                        sum.data());
      st.overflows += reg.overflows();
      requantize_channels(sum.data(), 1, 1, y.numel(), op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kConcat: {
      // [outer][axis][inner] blocks, each input requantized into the output's scale
      const int64_t axis = op.axis - 1;  // in the shapes without batch
      int64_t outer = batch, inner = 1;
      for (int64_t d = 0; d < axis; ++d) outer *= yi.shape[d];
      for (size_t d = axis + 1; d < yi.shape.size(); ++d) inner *= yi.shape[d];
      const int64_t out_block = yi.shape[axis] * inner;
      int64_t offset = 0;
      for (size_t j = 0; j < p.inputs.size(); ++j) {
        const Tensor& xj = env[p.inputs[j]];
        const QuantParams& qj = tensors.at(op.inputs[j]).q;
        const DyadicMultiplier mj = op.input_multipliers[j];
        const int64_t block = tensors.at(op.inputs[j]).shape[axis] * inner;
        for (int64_t o = 0; o < outer; ++o) {
          const int32_t* src = xj.data.data() + o * block;
          int32_t* dst = y.data.data() + o * out_block + offset;
          for (int64_t i = 0; i < block; ++i)
            dst[i] = requantize_dyadic(static_cast<int64_t>(src[i]) - qj.zero_point, mj,
                                       yi.q.zero_point, yi.q.qmin, yi.q.qmax);
        }
        offset += block;
      }
      break;
    }
  }
  env[p.output] = std::move(y);
}

std::string format_stats(const std::vector<LayerStats>& stats) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%-32s %-15s %5s %14s %10s %12s %10s\n", "layer", "op", "fast",
                "dot products", "overflows", "mean |err|", "max |err|");
  os << line;
  for (const LayerStats& s : stats) {
    if (s.op != "conv2d" && s.op != "linear" && s.op != "avgpool2d" && s.op != "global_avgpool")
      continue;
    const bool dot = s.op == "conv2d" || s.op == "linear";
    std::snprintf(line, sizeof line, "%-32s %-15s %5s %14lld %10lld %12.4g %10lld\n",
                  s.name.c_str(), s.op.c_str(), !dot ? "-" : s.fast_path ? "yes" : "no",
                  static_cast<long long>(s.dot_products), static_cast<long long>(s.overflows),
                  s.mean_abs_error(), static_cast<long long>(s.max_abs_error));
    os << line;
  }
  return os.str();
}

}  // namespace intsim
}  // namespace anybit
