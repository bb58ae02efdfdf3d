// The integer engine: the op-by-op run over a batch, cut into chunks that threads take in
// turn; calibration and statistics. Per-layer preparation is engine_prepare.cc, one op of a
// chunk engine_ops.cc. See engine.h.
#include "anybit/intsim/engine.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <thread>

#include "anybit/intsim/engine_internal.h"

namespace anybit {
namespace intsim {

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

EngineOptions engine_options(const EngineSpec& spec) {
  EngineOptions o;
  if (spec.overflow != "wrap" && spec.overflow != "saturate")
    throw Error("overflow: '" + spec.overflow + "' is not wrap or saturate");
  if (spec.threads < 0)
    throw Error("threads: must be >= 0 (0: one per hardware thread), got " + std::to_string(spec.threads));
  if (spec.reference_kernels && spec.per_dot_product)
    throw Error("reference kernels (--reference-kernels) and one dot product at a time (--per-dot-product) are "
                "two kernel paths; choose one");
  o.accumulator.bits = spec.acc_bits;
  o.accumulator.overflow = spec.overflow == "wrap" ? Overflow::kWrap : Overflow::kSaturate;
  check_accumulator_spec(o.accumulator);
  o.mac = parse_mac_model(spec.mac);
  o.threads = spec.threads;
  if (spec.reference_kernels) o.path = KernelPath::kReference;
  if (spec.per_dot_product) o.path = KernelPath::kPerDotProduct;
  return o;
}

}  // namespace intsim
}  // namespace anybit
