// The integer engine: per-layer preparation (weight offsets and packing, the overflow bound
// that picks the kernel) and the op-by-op run over a batch, cut into chunks that threads
// take in turn. See engine.h.
#include "anybit/intsim/engine.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <thread>

#include "anybit/intsim/kernels.h"

namespace anybit {
namespace intsim {
namespace {

// How a conv2d or linear layer computes its accumulators (engine.h).
enum class LayerKernel { kFast, kStepwise, kMac, kReference };

// A conv2d or linear layer ready to run.
struct PreparedLayer {
  LayerKernel kernel = LayerKernel::kMac;
  // A sum-perturbing MAC on the fast or stepwise kernel: the exact sums (no bias) are
  // computed there and handed to SumPerturbingMac::perturb.
  bool perturb = false;
  int mac_layer = -1;               // index into Engine::Impl::mac_layers
  std::vector<uint32_t> w_sq;       // (w - z_w)^2, [O][K] (conv2d) or [K][O] (linear): rel noise
  std::vector<double> w_sq_f64;     // conv2d: the same as doubles where their sums stay exact
  bool int16_operands = false;      // x - z_x and w - z_w both fit int16
  std::vector<int32_t> w_offset;    // w - z_w, [O][K]
  std::vector<int16_t> w_offset16;  // the same in int16: stepwise with int16 operands
  PackedWeights<int16_t> packed16;  // fast, int16 operands
  PackedWeights<int32_t> packed32;  // fast, int32 operands
  int64_t out_channels = 0, patch = 0;
};

struct PreparedOp {
  std::vector<int> inputs;  // tensor ids
  int output = -1;
  std::vector<const TensorInfo*> input_info;
  const TensorInfo* output_info = nullptr;
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

// Prepares a conv2d or linear layer; `info` gets its full scale. A MAC model that perturbs
// weights changes w - z_w here, before the bound and the packing see them.
PreparedLayer prepare_layer(const Op& op, const TensorInfo& in, const EngineOptions& options,
                            const MacModel& mac, MacLayer& info) {
  PreparedLayer p;
  p.out_channels = op.out_channels;
  p.patch = numel_of(op.weight.shape) / op.out_channels;
  p.w_offset.resize(op.weight.data.size());
  std::vector<int32_t> lo(static_cast<size_t>(p.out_channels)), hi(lo.size());
  for (int64_t o = 0; o < p.out_channels; ++o) {
    const int64_t zw = op.weight_zero_point.size() == 1 ? op.weight_zero_point[0] : op.weight_zero_point[o];
    lo[o] = static_cast<int32_t>(op.weight_qmin - zw);  // fit int32: checked by validate_model
    hi[o] = static_cast<int32_t>(op.weight_qmax - zw);
    for (int64_t k = 0; k < p.patch; ++k) {
      const size_t i = static_cast<size_t>(o * p.patch + k);
      p.w_offset[i] = static_cast<int32_t>(op.weight.data[i] - zw);
    }
  }
  if (mac.perturbs_weights()) mac.perturb_weights(info, p.w_offset.data(), lo.data(), hi.data());
  bool w_fits_int16 = true, w_fits_16_bits = true;
  for (int32_t v : p.w_offset) {
    w_fits_int16 = w_fits_int16 && v >= -32768 && v <= 32767;
    w_fits_16_bits = w_fits_16_bits && v > -65536 && v < 65536;
  }
  // The bound: no partial sum of any order can exceed |bias| + max|x - z| * sum|w - z_w|.
  // In 128 bits it cannot overflow (2^32 * 2^31 * 2^32 at most). Without the bias it is
  // the layer's full scale. The sums of squared products stay below max|x - z|^2 *
  // sum (w - z_w)^2.
  const int64_t acc_max = (int64_t{1} << (options.accumulator.bits - 1)) - 1;
  const unsigned __int128 x_max = static_cast<unsigned __int128>(max_abs_offset(in.q));
  bool bounded = true, squares_fit = w_fits_16_bits && x_max < 65536, squares_fit_f64 = squares_fit;
  unsigned __int128 full_scale = 0;
  for (int64_t o = 0; o < p.out_channels; ++o) {
    unsigned __int128 w_sum = 0, w_sq_sum = 0;
    for (int64_t k = 0; k < p.patch; ++k) {
      const int64_t v = p.w_offset[static_cast<size_t>(o * p.patch + k)];
      w_sum += static_cast<unsigned __int128>(v < 0 ? -v : v);
      w_sq_sum += static_cast<unsigned __int128>(v * v);
    }
    const int64_t b = op.bias.empty() ? 0 : op.bias.data[static_cast<size_t>(o)];
    const unsigned __int128 bound = static_cast<unsigned __int128>(b < 0 ? -b : b) + x_max * w_sum;
    bounded = bounded && bound <= static_cast<unsigned __int128>(acc_max);
    full_scale = std::max(full_scale, x_max * w_sum);
    if (squares_fit) {  // x_max < 2^16: the product stays below 2^96
      const unsigned __int128 sq_bound = x_max * x_max * w_sq_sum;
      squares_fit = (w_sq_sum >> 64) == 0 && sq_bound < (static_cast<unsigned __int128>(1) << 64);
      squares_fit_f64 = squares_fit_f64 && sq_bound < (static_cast<unsigned __int128>(1) << 53);
    }
    squares_fit_f64 = squares_fit_f64 && squares_fit;  // every channel's bound
  }
  info.full_scale = static_cast<double>(full_scale);
  const int64_t x_lo = int64_t{in.q.qmin} - in.q.zero_point;
  const int64_t x_hi = int64_t{in.q.qmax} - in.q.zero_point;
  p.int16_operands = w_fits_int16 && x_lo >= -32768 && x_hi <= 32767;
  const auto* perturber = dynamic_cast<const SumPerturbingMac*>(&mac);
  // A sum-perturbing model runs on the fast kernels unless it needs the sums of squared
  // products where they cannot be computed exactly in 64 bits (then per dot product).
  const bool fast_perturb = perturber && (!perturber->needs_squares() || squares_fit);
  if (options.path == KernelPath::kReference)
    p.kernel = LayerKernel::kReference;
  else if (options.path == KernelPath::kPerDotProduct || !(mac.is_exact() || fast_perturb))
    p.kernel = LayerKernel::kMac;
  else
    p.kernel = bounded ? LayerKernel::kFast : LayerKernel::kStepwise;
  p.perturb = fast_perturb && perturber->perturbs_sums() && p.kernel != LayerKernel::kMac &&
              p.kernel != LayerKernel::kReference;
  if (p.perturb && perturber->needs_squares()) {
    const bool conv = op.kind == OpKind::kConv2d;
    p.w_sq.resize(p.w_offset.size());
    for (int64_t o = 0; o < p.out_channels; ++o)
      for (int64_t k = 0; k < p.patch; ++k) {
        const int64_t v = p.w_offset[static_cast<size_t>(o * p.patch + k)];
        p.w_sq[static_cast<size_t>(conv ? o * p.patch + k : k * p.out_channels + o)] = static_cast<uint32_t>(v * v);
      }
    if (conv && squares_fit_f64) p.w_sq_f64.assign(p.w_sq.begin(), p.w_sq.end());
  }

  if (p.kernel == LayerKernel::kStepwise && p.int16_operands)
    p.w_offset16.assign(p.w_offset.begin(), p.w_offset.end());
  if (p.kernel == LayerKernel::kFast) {
    const bool conv = op.kind == OpKind::kConv2d;
    // The geometry of one image: packing needs only the channels and the kernel.
    const Conv2dGeometry g =
        conv ? conv_geometry(op, {1, in.shape[0], in.shape[1], in.shape[2]}) : Conv2dGeometry{};
    if (p.int16_operands) {
      const std::vector<int16_t> w16(p.w_offset.begin(), p.w_offset.end());
      p.packed16 = conv ? pack_conv2d_weights(g, w16.data())
                        : pack_linear_weights(p.out_channels, p.patch, w16.data());
    } else {
      p.packed32 = conv ? pack_conv2d_weights(g, p.w_offset.data())
                        : pack_linear_weights(p.out_channels, p.patch, p.w_offset.data());
    }
  }
  return p;
}

// y = requantize_dyadic(acc, M[channel], ...) over [batch][channels][inner].
void requantize_channels(const int32_t* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y) {
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const DyadicMultiplier mc = m.size() == 1 ? m[0] : m[static_cast<size_t>(c)];
      const int64_t base = (n * channels + c) * inner;
      requantize_int32(acc + base, inner, 0, mc, q.zero_point, q.qmin, q.qmax, y + base);
    }
  }
}

void requantize_channels(const int64_t* acc, int64_t batch, int64_t channels, int64_t inner,
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
  if (op.kind == OpKind::kAdaptiveAvgPool2d) return g;  // windows from the sizes alone
  g.kernel_h = op.kernel[0], g.kernel_w = op.kernel[1];
  g.stride_h = op.stride[0], g.stride_w = op.stride[1];
  g.pad_h = op.padding[0], g.pad_w = op.padding[1];
  g.dilation_h = op.dilation[0], g.dilation_w = op.dilation[1];
  return g;
}

// The accumulators of a conv2d or linear layer on its fast or stepwise kernel (bias may be
// null); the stepwise kernels add their overflow events to *overflows.
void exact_sums(const PreparedLayer& L, bool conv, const Conv2dGeometry& g, int64_t batch, int64_t in_features,
                const int32_t* xd, int32_t zx, const int32_t* bias, int32_t* acc, const AccumulatorSpec& spec,
                int64_t* overflows, KernelScratch& scratch) {
  if (L.kernel == LayerKernel::kFast && conv && L.int16_operands)
    conv2d_acc32(g, xd, zx, L.packed16, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast && conv)
    conv2d_acc32(g, xd, zx, L.packed32, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast && L.int16_operands)
    linear_acc32(batch, xd, zx, L.packed16, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast)
    linear_acc32(batch, xd, zx, L.packed32, bias, acc, scratch);
  else if (conv && L.int16_operands)
    conv2d_int16_stepwise(g, xd, zx, L.w_offset16.data(), bias, spec, acc, overflows, scratch);
  else if (conv)
    conv2d_int32_stepwise(g, xd, zx, L.w_offset.data(), bias, spec, acc, overflows, scratch);
  else if (L.int16_operands)
    linear_int16_stepwise(batch, in_features, L.out_channels, xd, zx, L.w_offset16.data(), bias, spec, acc,
                          overflows, scratch);
  else
    linear_int32_stepwise(batch, in_features, L.out_channels, xd, zx, L.w_offset.data(), bias, spec, acc,
                          overflows, scratch);
}

// What one thread needs to run the ops on a chunk of the batch.
struct Worker {
  std::vector<Tensor> env;                  // the chunk's tensors, by id
  std::vector<std::vector<int32_t>> spare;  // storage of tensors no longer needed, for reuse
  KernelScratch scratch;
  std::vector<int32_t> acc32;
  std::vector<int64_t> acc64;
  std::vector<double> squares;
  std::vector<LayerStats> stats;  // by op: counts since they were last added to the engine's
  // Engine::calibrate: |exact| of sampled elements, by MAC layer
  std::vector<std::vector<int32_t>> samples;

  // Gives t the shape [batch, ...shape] and storage for it: its own, or the most recently
  // released (still in cache). Nothing is allocated once the buffers have grown.
  void shape_tensor(Tensor& t, int64_t batch, const std::vector<int64_t>& shape) {
    if (t.data.capacity() == 0 && !spare.empty()) {
      t.data = std::move(spare.back());
      spare.pop_back();
    }
    t.shape = shape;
    t.shape.insert(t.shape.begin(), batch);
    t.data.resize(static_cast<size_t>(t.numel()));
  }

  void release(Tensor& t) {
    if (t.data.capacity() > 0) spare.push_back(std::move(t.data));
    t = Tensor{};
  }
};

// A chunk's largest activation is kept to about this size (the order of an L2 cache), and
// a chunk to at most kMaxChunkImages images.
constexpr int64_t kChunkBytes = 256 * 1024;
constexpr int64_t kMaxChunkImages = 16;
// Elements a sum-perturbing MAC model gets at once (whole channels of one image): its
// results, their fit and the requantization stay in the L1 cache.
constexpr int64_t kPerturbBlock = 1024;

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
  std::vector<std::string> names;       // by id
  std::vector<const TensorInfo*> info;  // by id
  std::vector<int> last_use;            // by id: index of the last op reading it (-1: none)
  std::vector<bool> is_output;          // by id
  std::vector<PreparedOp> ops;
  std::vector<LayerStats> stats;
  std::shared_ptr<MacModel> mac;
  const SumPerturbingMac* perturber = nullptr;  // mac, when it is one
  std::vector<MacLayer> mac_layers;             // the conv2d/linear layers, in order
  bool mac_ready = false;                       // prepare() has accepted mac_layers
  int64_t next_image = 0;                       // MacContext::image of the next run's first image
  bool calibrating = false;                     // Engine::calibrate's run: exact, sampled
  int64_t sample_stride = 1;
  // True unless a layer calls the MAC model: the batch may then be cut into chunks that
  // run independently, in any order, on any thread.
  bool chunked = true;
  int64_t chunk_images = 1;
  int threads = 1;
  std::vector<Worker> workers;  // kept between runs, with their buffers

  int id_of(const std::string& name) {
    auto it = ids.find(name);
    if (it != ids.end()) return it->second;
    const int id = static_cast<int>(names.size());
    ids[name] = id;
    names.push_back(name);
    return id;
  }

  void run_chunk(Worker& w, const std::vector<Tensor>& inputs, int64_t begin, int64_t end,
                 bool keep_all, std::vector<Tensor>& results);
  void run_op(size_t k, Worker& w, int64_t batch, int64_t first_image);
  void run_perturbed(const Op& op, const PreparedOp& p, Worker& w, LayerStats& st, int64_t batch,
                     int64_t first_image, const Tensor& x, Tensor& y);
  // Engine::calibrate's pass: the percentile of |exact| of each layer into mac_layers.
  void collect(const std::vector<Tensor>& inputs, double pct);
  std::vector<Tensor> run_batch(const std::vector<Tensor>& inputs, std::map<std::string, Tensor>* tensors);
};

Engine::Engine(Model model, EngineOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  check_accumulator_spec(options.accumulator);
  if (options.threads < 0)
    throw Error("threads must be >= 0 (0: one per hardware thread), got " +
                std::to_string(options.threads));
  m.tensors = validate_model(model, "model");
  m.model = std::move(model);
  m.options = std::move(options);
  m.mac = m.options.mac ? m.options.mac : std::make_shared<ExactMac>();
  m.perturber = dynamic_cast<const SumPerturbingMac*>(m.mac.get());
  for (const TensorSpec& in : m.model.inputs) m.id_of(in.name);
  for (const Op& op : m.model.ops) {
    PreparedOp p;
    for (const std::string& name : op.inputs) {
      p.inputs.push_back(m.id_of(name));
      p.input_info.push_back(&m.tensors.at(name));
    }
    p.output = m.id_of(op.output);
    p.output_info = &m.tensors.at(op.output);
    LayerStats s;
    s.name = op.name;
    s.op = op_kind_name(op.kind);
    if (op.kind == OpKind::kConv2d || op.kind == OpKind::kLinear) {
      MacLayer info;
      info.name = op.name;
      info.op = op_kind_name(op.kind);
      info.index = static_cast<int64_t>(m.mac_layers.size());
      info.out_channels = op.out_channels;
      const std::vector<int64_t>& out_shape = m.tensors.at(op.output).shape;
      info.positions = op.kind == OpKind::kConv2d ? out_shape[1] * out_shape[2] : 1;
      info.depth = numel_of(op.weight.shape) / op.out_channels;
      p.layer = prepare_layer(op, m.tensors.at(op.inputs[0]), m.options, *m.mac, info);
      p.layer.mac_layer = static_cast<int>(info.index);
      m.mac_layers.push_back(std::move(info));
      s.fast_path = p.layer.kernel == LayerKernel::kFast;
      m.chunked = m.chunked && p.layer.kernel != LayerKernel::kMac;
    }
    m.ops.push_back(std::move(p));
    m.stats.push_back(s);
  }
  m.info.resize(m.names.size());
  int64_t image_bytes = 1;
  for (size_t id = 0; id < m.names.size(); ++id) {
    m.info[id] = &m.tensors.at(m.names[id]);
    image_bytes = std::max<int64_t>(image_bytes, numel_of(m.info[id]->shape) * 4);
  }
  m.chunk_images = std::clamp<int64_t>(kChunkBytes / image_bytes, 1, kMaxChunkImages);
  const unsigned hardware = std::thread::hardware_concurrency();
  m.threads = m.options.threads > 0 ? m.options.threads : static_cast<int>(std::max(hardware, 1u));
  m.last_use.assign(m.names.size(), -1);
  m.is_output.assign(m.names.size(), false);
  for (size_t k = 0; k < m.ops.size(); ++k)
    for (int id : m.ops[k].inputs) m.last_use[id] = static_cast<int>(k);
  for (const TensorSpec& out : m.model.outputs) m.is_output[m.ids.at(out.name)] = true;
  if (!m.mac->needs_calibration()) {
    m.mac->prepare(m.mac_layers);
    m.mac_ready = true;
  }
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const Model& Engine::model() const { return impl_->model; }
const EngineOptions& Engine::options() const { return impl_->options; }
const std::vector<LayerStats>& Engine::stats() const { return impl_->stats; }

const std::vector<MacLayer>& Engine::mac_layers() const { return impl_->mac_layers; }
void Engine::set_next_image(int64_t image) {
  if (image < 0) throw Error("set_next_image: the image index must be >= 0, got " + std::to_string(image));
  impl_->next_image = image;
}
int64_t Engine::next_image() const { return impl_->next_image; }

void Engine::calibrate(const std::vector<Tensor>& inputs) {
  Impl& m = *impl_;
  // The exact sums come from an exact engine on the fast kernels, whatever path and MAC
  // model this one runs (a model that calibrates does not change the weights).
  EngineOptions o = m.options;
  o.mac = nullptr;
  o.path = KernelPath::kAuto;
  Engine exact(m.model, o);
  exact.impl_->collect(inputs, m.mac->calibration_percentile());
  for (size_t i = 0; i < m.mac_layers.size(); ++i) m.mac_layers[i].calibrated = exact.impl_->mac_layers[i].calibrated;
  m.mac->prepare(m.mac_layers);
  m.mac_ready = true;
}

void Engine::Impl::collect(const std::vector<Tensor>& inputs, double pct) {
  if (!inputs.empty() && !inputs[0].shape.empty()) {
    // Elements sampled with a stride over (image, element), so that each layer keeps at
    // most about 2^21 values whatever the data, and the same ones at any chunking.
    int64_t most = 1;
    for (const MacLayer& l : mac_layers) most = std::max(most, l.out_channels * l.positions);
    sample_stride = std::max<int64_t>(1, inputs[0].shape[0] * most >> 21);
  }
  calibrating = true;  // run_batch sizes each worker's samples; they are cleared below
  try {
    run_batch(inputs, nullptr);
  } catch (...) {
    calibrating = false;
    throw;
  }
  calibrating = false;
  for (MacLayer& l : mac_layers) {
    std::vector<int32_t> all;
    for (Worker& w : workers)
      if (static_cast<size_t>(l.index) < w.samples.size()) {
        std::vector<int32_t>& v = w.samples[static_cast<size_t>(l.index)];
        all.insert(all.end(), v.begin(), v.end());
        v.clear();
      }
    if (all.empty()) continue;
    // the ceil(pct / 100 * n)-th smallest |exact| (nearest rank)
    const size_t rank = static_cast<size_t>(std::ceil(pct / 100.0 * static_cast<double>(all.size())));
    const size_t i = std::min(all.size() - 1, rank == 0 ? 0 : rank - 1);
    std::nth_element(all.begin(), all.begin() + static_cast<int64_t>(i), all.end());
    l.calibrated = all[i];
  }
}

void Engine::reset_stats() {
  for (LayerStats& s : impl_->stats) {
    s.clipped = 0;
    s.dot_products = s.overflows = s.max_abs_error = 0;
    s.sum_abs_error = 0;
  }
}

std::vector<Tensor> Engine::run(const std::vector<Tensor>& inputs,
                                std::map<std::string, Tensor>* tensors) {
  Impl& m = *impl_;
  if (!m.mac_ready)
    throw Error("MAC model '" + m.mac->describe() + "' needs calibration data: call Engine::calibrate first");
  return m.run_batch(inputs, tensors);
}

std::vector<Tensor> Engine::Impl::run_batch(const std::vector<Tensor>& inputs,
                                            std::map<std::string, Tensor>* tensors) {
  Impl& m = *this;
  const std::vector<TensorSpec>& specs = m.model.inputs;
  if (inputs.size() != specs.size())
    throw Error("run: the model takes " + std::to_string(specs.size()) + " inputs, got " +
                std::to_string(inputs.size()));
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
  }

  // The tensors that leave the run, at full batch size; chunks fill their slices.
  const bool keep_all = tensors != nullptr;
  std::vector<Tensor> results(m.names.size());
  for (size_t id = 0; id < m.names.size(); ++id) {
    if (!keep_all && !m.is_output[id]) continue;
    results[id].shape = m.info[id]->shape;
    results[id].shape.insert(results[id].shape.begin(), batch);
    results[id].data.resize(static_cast<size_t>(results[id].numel()));
  }

  // Without chunks, the whole batch on this thread; with them, every thread (this one
  // included) takes the next chunk until none is left. Results do not depend on which
  // thread ran which chunk.
  const int64_t per_thread = (batch + m.threads - 1) / m.threads;
  const int64_t chunk = m.chunked ? std::min(m.chunk_images, per_thread) : batch;
  const int64_t chunks = (batch + chunk - 1) / chunk;
  const int n_workers = static_cast<int>(std::min<int64_t>(m.threads, chunks));
  if (static_cast<int>(m.workers.size()) < n_workers) m.workers.resize(static_cast<size_t>(n_workers));
  std::atomic<int64_t> next_chunk{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n_workers));
  auto work = [&](int i) {
    Worker& w = m.workers[static_cast<size_t>(i)];
    w.stats.resize(m.ops.size());
    if (m.calibrating) w.samples.resize(m.mac_layers.size());
    try {
      for (int64_t c = next_chunk++; c < chunks; c = next_chunk++)
        m.run_chunk(w, inputs, c * chunk, std::min(batch, (c + 1) * chunk), keep_all, results);
    } catch (...) {
      errors[static_cast<size_t>(i)] = std::current_exception();
      next_chunk = chunks;  // the others stop after their current chunk
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < n_workers; ++i) pool.emplace_back(work, i);
  work(0);
  for (std::thread& t : pool) t.join();

  for (int i = 0; i < n_workers; ++i) {
    for (size_t k = 0; k < m.ops.size(); ++k) {
      LayerStats& d = m.workers[static_cast<size_t>(i)].stats[k];
      LayerStats& s = m.stats[k];
      s.dot_products += d.dot_products;
      s.overflows += d.overflows;
      s.sum_abs_error += d.sum_abs_error;
      s.max_abs_error = std::max(s.max_abs_error, d.max_abs_error);
      s.clipped += d.clipped;
      d = LayerStats{};
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  if (!m.calibrating) m.next_image += batch;

  std::vector<Tensor> outputs;
  for (const TensorSpec& out : m.model.outputs) outputs.push_back(results[m.ids.at(out.name)]);
  if (tensors)
    for (size_t id = 0; id < results.size(); ++id) (*tensors)[m.names[id]] = std::move(results[id]);
  return outputs;
}

void Engine::Impl::run_chunk(Worker& w, const std::vector<Tensor>& inputs, int64_t begin,
                             int64_t end, bool keep_all, std::vector<Tensor>& results) {
  const int64_t n = end - begin;
  w.env.resize(names.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    const int64_t per_image = in.numel() / in.shape[0];
    const int id = ids.at(model.inputs[i].name);
    w.shape_tensor(w.env[id], n, info[id]->shape);
    std::copy(in.data.begin() + begin * per_image, in.data.begin() + end * per_image,
              w.env[id].data.begin());
  }
  for (size_t k = 0; k < ops.size(); ++k) {
    run_op(k, w, n, next_image + begin);
    if (keep_all) continue;
    // Inputs read for the last time give their storage to later tensors.
    for (int id : ops[k].inputs)
      if (last_use[id] == static_cast<int>(k) && !is_output[id]) w.release(w.env[id]);
  }
  for (size_t id = 0; id < results.size(); ++id) {
    if (results[id].shape.empty()) continue;  // not wanted
    const std::vector<int32_t>& src = w.env[id].data;
    const int64_t per_image = static_cast<int64_t>(src.size()) / n;
    std::copy(src.begin(), src.end(), results[id].data.begin() + begin * per_image);
  }
}

void Engine::Impl::run_op(size_t k, Worker& w, int64_t batch, int64_t first_image) {
  const Op& op = model.ops[k];
  const PreparedOp& p = ops[k];
  LayerStats& st = w.stats[k];
  const Tensor& x = w.env[p.inputs[0]];
  const TensorInfo& xi = *p.input_info[0];
  const TensorInfo& yi = *p.output_info;
  Tensor& y = w.env[p.output];
  w.shape_tensor(y, batch, yi.shape);
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
      const int32_t* xd = x.data.data();
      st.dot_products += batch * L.out_channels * inner;
      if ((L.perturb || calibrating) && L.kernel != LayerKernel::kMac && L.kernel != LayerKernel::kReference) {
        run_perturbed(op, p, w, st, batch, first_image, x, y);
        break;
      }
      if (L.kernel == LayerKernel::kFast && conv && L.int16_operands) {
        // requantized as the accumulators come out of the kernel
        conv2d_acc32_requantize(g, xd, zx, L.packed16, bias, op.multiplier, yi.q.zero_point,
                                yi.q.qmin, yi.q.qmax, y.data.data(), w.scratch);
        break;
      }
      if (L.kernel == LayerKernel::kFast || L.kernel == LayerKernel::kStepwise) {
        w.acc32.resize(y.data.size());
        int32_t* acc = w.acc32.data();
        exact_sums(L, conv, g, batch, in_features, xd, zx, bias, acc, options.accumulator, &st.overflows, w.scratch);
        requantize_channels(acc, batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
        break;
      }
      w.acc64.resize(y.data.size());
      int64_t* acc = w.acc64.data();
      if (L.kernel == LayerKernel::kReference) {
        if (conv)
          conv2d_int_reference(g, xd, zx, op.weight.data.data(), op.weight_zero_point, bias,
                               options.accumulator, acc, &st.overflows);
        else
          linear_int_reference(batch, in_features, L.out_channels, xd, zx, op.weight.data.data(),
                               op.weight_zero_point, bias, options.accumulator, acc, &st.overflows);
      } else {
        Accumulator reg(options.accumulator);
        MacStats ms;
        MacContext base;
        base.info = &mac_layers[static_cast<size_t>(L.mac_layer)];
        base.image = first_image;
        if (conv)
          conv2d_int_mac(g, xd, zx, L.w_offset.data(), bias, *mac, op.name, reg, acc, &ms, &base);
        else
          linear_int_mac(batch, in_features, L.out_channels, xd, zx, L.w_offset.data(), bias, *mac,
                         op.name, reg, acc, &ms, &base);
        st.overflows += reg.overflows();
        st.sum_abs_error += ms.sum_abs_error;
        st.max_abs_error = std::max(st.max_abs_error, ms.max_abs_error);
        st.clipped += ms.clipped;
      }
      requantize_channels(acc, batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kAdd: {
      const TensorInfo& bi = *p.input_info[1];
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
      add_int(a, x.data.data(), w.env[p.inputs[1]].data.data(), y.numel(), y.data.data());
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
      std::copy(x.data.begin(), x.data.end(), y.data.begin());
      break;
    case OpKind::kMaxPool2d:
      maxpool2d_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.qmin, y.data.data());
      break;
    case OpKind::kAvgPool2d:
    case OpKind::kGlobalAvgPool: {
      w.acc64.resize(y.data.size());
      Accumulator reg(options.accumulator);
      avgpool2d_sum_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.zero_point, reg,
                        w.acc64.data());
      st.overflows += reg.overflows();
      requantize_channels(w.acc64.data(), 1, 1, y.numel(), op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kAdaptiveAvgPool2d: {
      w.acc64.resize(y.data.size());
      Accumulator reg(options.accumulator);
      const Pool2dGeometry g = pool_geometry(op, x.shape, yi.shape);
      if (options.path == KernelPath::kReference)
        adaptive_avgpool2d_sum_reference(g, x.data.data(), xi.q.zero_point, reg, w.acc64.data());
      else
        adaptive_avgpool2d_sum_int(g, x.data.data(), xi.q.zero_point, reg, w.acc64.data(), w.scratch);
      st.overflows += reg.overflows();
      // M[position] = s_x / (count * s_y) of that position's window (or one M for all):
      // [batch * channels][positions] with the multipliers along the positions
      requantize_channels(w.acc64.data(), batch * yi.shape[0], yi.shape[1] * yi.shape[2], 1,
                          op.multiplier, yi.q, y.data.data());
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
        const Tensor& xj = w.env[p.inputs[j]];
        const QuantParams& qj = p.input_info[j]->q;
        const int64_t block = p.input_info[j]->shape[axis] * inner;
        for (int64_t o = 0; o < outer; ++o)
          requantize_int32(xj.data.data() + o * block, block, qj.zero_point,
                           op.input_multipliers[j], yi.q.zero_point, yi.q.qmin, yi.q.qmax,
                           y.data.data() + o * out_block + offset);
        offset += block;
      }
      break;
    }
  }
}

void Engine::Impl::run_perturbed(const Op& op, const PreparedOp& p, Worker& w, LayerStats& st, int64_t batch,
                                 int64_t first_image, const Tensor& x, Tensor& y) {
  const bool conv = op.kind == OpKind::kConv2d;
  const PreparedLayer& L = p.layer;
  const TensorInfo& xi = *p.input_info[0];
  const TensorInfo& yi = *p.output_info;
  const MacLayer& info = mac_layers[static_cast<size_t>(L.mac_layer)];
  const int64_t inner = conv ? yi.shape[1] * yi.shape[2] : 1;
  const int64_t count = L.out_channels * inner;  // elements per image
  const int64_t in_features = conv ? 0 : xi.shape[0];
  const Conv2dGeometry g = conv ? conv_geometry(op, x.shape) : Conv2dGeometry{};
  const int32_t zx = xi.q.zero_point;
  const int32_t* xd = x.data.data();
  // 1. The exact sums, without the bias (which the engine adds after the MAC model).
  w.acc32.resize(y.data.size());
  int32_t* acc = w.acc32.data();
  exact_sums(L, conv, g, batch, in_features, xd, zx, nullptr, acc, options.accumulator, &st.overflows, w.scratch);
  Accumulator reg(options.accumulator);
  const double* squares = nullptr;
  if (calibrating) {
    // Engine::calibrate: sample |exact| (without the bias); the layer computes the exact sums
    std::vector<int32_t>& samples = w.samples[static_cast<size_t>(L.mac_layer)];
    for (int64_t i = 0; i < batch; ++i)
      for (int64_t e = 0; e < count; ++e)
        if (((first_image + i) * count + e) % sample_stride == 0)
          samples.push_back(static_cast<int32_t>(std::min<int64_t>(std::llabs(int64_t{acc[i * count + e]}), INT32_MAX)));
  } else if (perturber->needs_squares()) {
    // the sums of squared products the model needs
    w.squares.resize(static_cast<size_t>(batch * count));
    if (conv)
      conv2d_square_sums(g, xd, zx, L.w_sq.data(), w.squares.data(), w.scratch,
                         L.w_sq_f64.empty() ? nullptr : L.w_sq_f64.data());
    else
      linear_square_sums(batch, in_features, L.out_channels, xd, zx, L.w_sq.data(), w.squares.data(), w.scratch);
    squares = w.squares.data();
  }
  // 2. In blocks of whole channels of one image (kPerturbBlock): the unit's results from the
  // exact sums (the exact sums themselves when calibrating), into the accumulator (an
  // overflow counted) with the error against the exact sum, the bias through the
  // accumulator, then requantization.
  const int64_t rows = std::max<int64_t>(1, kPerturbBlock / inner);
  w.acc64.resize(static_cast<size_t>(std::min(rows, L.out_channels) * inner));
  const int32_t* bias = op.bias.empty() ? nullptr : op.bias.data.data();
  double sum_err = 0;
  int64_t max_err = 0;
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t c0 = 0; c0 < L.out_channels; c0 += rows) {
      const int64_t nc = std::min(rows, L.out_channels - c0);
      const int64_t offset = i * count + c0 * inner;
      if (calibrating) {
        std::copy(acc + offset, acc + offset + nc * inner, w.acc64.begin());
      } else {
        SumBlock b;
        b.layer = &info;
        b.image = first_image + i;
        b.first_index = c0 * inner;
        b.count = nc * inner;
        b.exact = acc + offset;
        b.squares = squares ? squares + offset : nullptr;
        b.accumulator_bits = options.accumulator.bits;
        b.out = w.acc64.data();
        perturber->perturb(b);
        st.clipped += b.clipped;
      }
      fit_and_add_bias(nc, inner, w.acc64.data(), acc + offset, bias ? bias + c0 : nullptr, reg, acc + offset,
                       &sum_err, &max_err);
      for (int64_t c = c0; c < c0 + nc; ++c) {
        const DyadicMultiplier mc = op.multiplier.size() == 1 ? op.multiplier[0] : op.multiplier[static_cast<size_t>(c)];
        requantize_int32(acc + i * count + c * inner, inner, 0, mc, yi.q.zero_point, yi.q.qmin, yi.q.qmax,
                         y.data.data() + i * count + c * inner);
      }
    }
  }
  st.sum_abs_error += sum_err;
  st.max_abs_error = std::max(st.max_abs_error, max_err);
  st.overflows += reg.overflows();
}

std::string format_stats(const std::vector<LayerStats>& stats) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%-32s %-15s %5s %14s %10s %12s %10s %10s\n", "layer", "op", "fast",
                "dot products", "overflows", "mean |err|", "max |err|", "clipped");
  os << line;
  for (const LayerStats& s : stats) {
    if (s.op != "conv2d" && s.op != "linear" && s.op != "avgpool2d" && s.op != "global_avgpool" &&
        s.op != "adaptive_avgpool2d")
      continue;
    const bool dot = s.op == "conv2d" || s.op == "linear";
    std::snprintf(line, sizeof line, "%-32s %-15s %5s %14lld %10lld %12.4g %10lld %10lld\n",
                  s.name.c_str(), s.op.c_str(), !dot ? "-" : s.fast_path ? "yes" : "no",
                  static_cast<long long>(s.dot_products), static_cast<long long>(s.overflows),
                  s.mean_abs_error(), static_cast<long long>(s.max_abs_error), static_cast<long long>(s.clipped));
    os << line;
  }
  return os.str();
}

}  // namespace intsim
}  // namespace anybit
