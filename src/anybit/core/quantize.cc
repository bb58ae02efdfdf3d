// Calibration, quantizer parameters and graph rewriting: the steps of anybit::quantize.
//
// 1. Rules give every point a spec (rules.cc).
// 2. Activation and input points that need data get an `anybit::observe` node; the
//    instrumented graph runs on calibration batches through a separate GraphFunction
//    (the module's own forward never runs before the final rewrite, so its executor is
//    built from the final graph), then the observe nodes are removed.
// 3. Each point's quantizer parameters are computed (calibrators for ranges, weights
//    read directly) and stored as buffers (parameters, for LSQ/PACT) on the root module,
//    so they save and load with it.
// 4. A quantizer node reading those buffers is inserted at each point: after the
//    producer of an output (taking over every later use, also of the input an in-place
//    op aliases), before the consumer of a weight, at the top for a model input.
#include "anybit/core/quantize.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/library.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>

#include "anybit/calib/calibrator.h"
#include "anybit/core/fused_eval.h"
#include "anybit/data/dataset.h"
#include "anybit/data/progress.h"
#include "anybit/base/npy.h"
#include "anybit/ptq/adaround.h"
#include "anybit/ptq/gptq.h"
#include "anybit/ptq/bias_correction.h"
#include "anybit/ptq/brecq.h"
#include "anybit/quant/node.h"
#include "anybit/quant/scheme.h"

namespace anybit {
namespace jit = torch::jit;

// ------------------------------------------------------------------------------------
// Data
// ------------------------------------------------------------------------------------
namespace {

class TensorData : public DataSource {
 public:
  TensorData(at::Tensor x, at::Tensor y, std::string name)
      : x_(std::move(x)), y_(std::move(y)), name_(std::move(name)) {}
  int64_t size() const override { return x_.size(0); }
  std::pair<at::Tensor, at::Tensor> batch(int64_t b, int64_t n) const override {
    n = std::min(n, size() - b);
    return {x_.narrow(0, b, n), y_.narrow(0, b, n)};
  }
  std::pair<at::Tensor, at::Tensor> gather(const at::Tensor& indices) const override {
    return {x_.index_select(0, indices), y_.index_select(0, indices)};
  }
  std::string describe() const override { return name_; }

 private:
  at::Tensor x_, y_;
  std::string name_;
};

class DatasetData : public DataSource {
 public:
  DatasetData(std::unique_ptr<data::Dataset> d, std::string spec) : d_(std::move(d)), spec_(std::move(spec)) {}
  int64_t size() const override { return d_->size(); }
  std::pair<at::Tensor, at::Tensor> batch(int64_t b, int64_t n) const override {
    n = std::min(n, size() - b);
    return gather(at::arange(b, b + n, at::kLong));
  }
  std::pair<at::Tensor, at::Tensor> gather(const at::Tensor& indices) const override {
    const int64_t n = indices.numel();
    std::vector<int64_t> shape = d_->sample_shape();
    int64_t per = 1;
    for (int64_t s : shape) per *= s;
    shape.insert(shape.begin(), n);
    at::Tensor x = at::empty(shape, at::kFloat);
    at::Tensor y = at::empty({n}, at::kLong);
    const at::Tensor idx = indices.to(at::kLong).contiguous();
    const int64_t* pi = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) d_->get(pi[i], x.data_ptr<float>() + i * per, y.data_ptr<int64_t>() + i);
    return {x, y};
  }
  std::string describe() const override { return spec_; }

 private:
  std::unique_ptr<data::Dataset> d_;
  std::string spec_;
};

}  // namespace

std::unique_ptr<DataSource> open_data(const std::string& spec) {
  return std::make_unique<DatasetData>(data::open_dataset(spec), spec);
}

std::unique_ptr<DataSource> tensor_data(at::Tensor inputs, at::Tensor labels, std::string name) {
  if (inputs.size(0) != labels.size(0))
    throw Error(name + ": " + std::to_string(inputs.size(0)) + " inputs but " +
                std::to_string(labels.size(0)) + " labels");
  return std::make_unique<TensorData>(inputs.contiguous().to(at::kFloat), labels.to(at::kLong), name);
}

// ------------------------------------------------------------------------------------
// Observation during calibration
// ------------------------------------------------------------------------------------
namespace {

struct Slot {
  calib::Observer observer;
  int64_t per_sample_numel = 0;
};

std::mutex g_slots_mu;
std::map<int64_t, std::shared_ptr<Slot>> g_slots;
int64_t g_next_slot = 1;

at::Tensor op_observe(const at::Tensor& x, int64_t slot) {
  std::shared_ptr<Slot> s;
  {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    auto it = g_slots.find(slot);
    if (it != g_slots.end()) s = it->second;
  }
  if (s) {
    // statistics are kept on the host: a value on a device comes over once per batch
    at::Tensor c = x.detach().to(at::kCPU, at::kFloat).contiguous();
    s->observer.observe(c.data_ptr<float>(), c.numel());
    if (c.dim() >= 1 && c.size(0) > 0) s->per_sample_numel = c.numel() / c.size(0);
  }
  return x;
}

}  // namespace
}  // namespace anybit

TORCH_LIBRARY_FRAGMENT(anybit, m) {
  m.def("observe(Tensor(a) x, int slot) -> Tensor(a)", &anybit::op_observe);
}

namespace anybit {
namespace {

// RAII: slots live for one calibration.
struct SlotScope {
  std::vector<int64_t> ids;
  int64_t add() {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    int64_t id = g_next_slot++;
    g_slots[id] = std::make_shared<Slot>();
    ids.push_back(id);
    return id;
  }
  std::shared_ptr<Slot> get(int64_t id) {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    return g_slots.at(id);
  }
  ~SlotScope() {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    for (int64_t id : ids) g_slots.erase(id);
  }
};

// Inserts y = op(x, ...) at the point and routes later uses of x to y.
jit::Value* insert_at_point(jit::Graph& graph, const Point& p,
                            const std::function<jit::Value*(jit::Value* x)>& build) {
  if (p.role == Role::kWeight || p.role == Role::kBias) {
    jit::WithInsertPoint guard(p.node);
    jit::Value* y = build(p.value);
    p.node->replaceInputWith(p.value, y);
    return y;
  }
  jit::Node* after = p.role == Role::kInput ? nullptr : p.node;
  jit::Node* first = after ? after->next() : *graph.nodes().begin();
  jit::Value* y;
  {
    jit::WithInsertPoint guard(first);
    y = build(p.value);
  }
  jit::Node* last = y->node();
  p.value->replaceAllUsesAfterNodeWith(last, y);
  if (p.inplace) p.node->input(0)->replaceAllUsesAfterNodeWith(last, y);
  return y;
}

jit::Value* insert_op(jit::Graph& graph, const char* name, std::vector<jit::Value*> inputs) {
  jit::Node* n = graph.create(c10::Symbol::fromQualString(name), inputs);
  graph.insertNode(n);
  n->output()->setType(c10::TensorType::get());
  return n->output();
}

// Registers the point's tensors on the root module and inserts its scheme's quantizer node.
void install(ModelGraph& g, const Point& p, const QuantSpec& spec, const scheme::Params& P,
             bool portable, PointReport* report) {
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  const scheme::Entry& entry = scheme::entry_of(spec);
  report->portable = entry.portable(spec);
  if (portable && !report->portable)
    throw Error(p.name + ": spec " + spec.str() +
                " has no stock aten::fake_quantize_* form (portable save needs uniform, "
                "half-even, per-tensor or per-channel, not learned)");
  scheme::Site site;
  site.graph = &graph;
  site.portable = portable;
  auto reg = [&](const std::string& what, const at::Tensor& t, bool learned) {
    const std::string name = qnode::attribute(p.name, what);
    if (report->first_param.empty()) report->first_param = name;
    if (g.module.hasattr(name))
      throw Error(p.name + ": the model already has a quantizer here (attribute " + name + ")");
    if (learned)
      g.module.register_parameter(name, t.clone().set_requires_grad(true), false);
    else
      g.module.register_buffer(name, t.clone());
    return name;
  };
  site.param = [&](const std::string& what, const at::Tensor& t, bool learned) {
    return graph.insertGetAttr(self, reg(what, t, learned));
  };
  const bool many = (P.scale.defined() && P.scale.numel() > 1) || (P.alpha.defined() && P.alpha.numel() > 1) ||
                    (P.hi.defined() && P.hi.numel() > 1);
  if (many && spec.granularity == Granularity::kPerChannel) site.axis = spec.axis >= 0 ? spec.axis : p.channel_axis;
  site.group = spec.granularity == Granularity::kPerGroup ? spec.group_size : 0;
  insert_at_point(graph, p, [&](jit::Value* x) { return entry.insert(site, spec, P, x); });
  report->params = P.summary;
}

// The scale of a uniform quantizer node as a tensor value ([1] or [C]); null if the node
// is not a uniform quantizer.
jit::Value* quantizer_scale(jit::Graph& graph, jit::Node* n) {
  const qnode::OpInfo& q = qnode::info(qnode::op_of(n));
  if (!q.uniform) return nullptr;
  jit::Value* scale = n->input(q.scale);
  if (scale->type()->cast<c10::TensorType>()) return scale;
  auto s = jit::toIValue(scale);  // aten's per-tensor op takes the step as a number
  if (!s) return nullptr;
  jit::WithInsertPoint guard(n);
  return graph.insertConstant(at::full({1}, static_cast<float>(s->toDouble())));
}

// int32 biases at s_in * s_w (QuantizeOptions::int32_bias): b + detach(round(b / s) * s - b).
int quantize_biases_int32(ModelGraph& g) {
  jit::Graph& graph = *g.graph;
  int count = 0;
  for (jit::Node* n : graph.nodes()) {
    const std::string k = n->kind().toQualString();
    if (k != "aten::_convolution" && k != "aten::conv2d" && k != "aten::conv1d" && k != "aten::linear") continue;
    jit::Value* bias = n->input(2);
    if (bias->type()->kind() == c10::TypeKind::NoneType || jit::toIValue(bias)) continue;
    // An Optional[Tensor] attribute (nn.Conv2d's bias) that holds None: no bias to quantize.
    std::string bias_path;
    if (!bias->type()->cast<c10::TensorType>() && attr_path(bias, graph.inputs().at(0), &bias_path) &&
        resolve_attr(g.module, bias_path).isNone())
      continue;
    // the input's quantizer, also behind ops that keep values on its grid (flatten before a
    // classifier, max pooling, ReLU with the grid's zero on it)
    jit::Node* src = n->input(0)->node();
    for (;;) {
      const std::string sk = src->kind().toQualString();
      if (sk != "aten::flatten" && sk != "aten::view" && sk != "aten::reshape" && sk != "aten::contiguous" &&
          sk != "aten::squeeze" && sk != "aten::unsqueeze" && sk != "aten::max_pool2d" && sk != "aten::relu" &&
          sk != "aten::relu_")
        break;
      src = src->input(0)->node();
    }
    jit::Value* sx = quantizer_scale(graph, src);
    jit::Value* sw = quantizer_scale(graph, n->input(1)->node());
    if (!sx || !sw) continue;
    if (qnode::op_of(src) == qnode::Op::kAtenPerChannel) continue;
    jit::WithInsertPoint guard(n);
    auto op = [&](const char* name, std::vector<jit::Value*> in) { return insert_op(graph, name, std::move(in)); };
    jit::Value* one = graph.insertConstant(int64_t{1});
    jit::Value* b = bias;
    if (!bias->type()->cast<c10::TensorType>()) b = graph.insertUncheckedCast(bias, c10::TensorType::get());
    jit::Value* s = op("aten::mul", {sx, sw});
    jit::Value* y = op("aten::mul", {op("aten::round", {op("aten::div", {b, s})}), s});
    jit::Value* ste = op("aten::add", {b, op("aten::detach", {op("aten::sub", {y, b, one})}), one});
    n->replaceInputWith(bias, ste);
    ++count;
  }
  return count;
}

}  // namespace


std::vector<PointReport> plan(const ModelGraph& g, const Config& config) {
  std::vector<const PointDesc*> descs;
  for (const auto& p : g.points) descs.push_back(&p);
  std::vector<Assignment> a = assign(config, descs);
  std::vector<PointReport> out(g.points.size());
  for (size_t i = 0; i < g.points.size(); ++i) {
    out[i].point = g.points[i];
    out[i].assignment = a[i];
    const QuantSpec& s = a[i].spec;
    if (!s.is_float() && g.points[i].role == Role::kActivation && s.granularity != Granularity::kPerTensor)
      throw Error(g.points[i].name + ": per-channel or per-group quantization of op outputs is not "
                  "supported; use a per-tensor spec (rule " + config.rules[a[i].rule].where + ")");
  }
  return out;
}

QuantizeResult quantize(ModelGraph g, const Config& config, const DataSource* calib,
                        const QuantizeOptions& options) {
  QuantizeResult result;
  if (options.strict && !g.uncovered.empty()) {
    std::string msg = "strict: " + std::to_string(g.uncovered.size()) + " op(s) have no points and would stay float: ";
    for (size_t k = 0; k < g.uncovered.size(); ++k)
      msg += (k ? "; " : "") + g.uncovered[k].where() + " (" + g.uncovered[k].reason + ")";
    throw Error(msg);
  }
  result.points = plan(g, config);
  jit::Graph& graph = *g.graph;
  // the float model AdaRound reconstructs, taken before any rewrite
  std::unique_ptr<ModelGraph> reference;
  if ((options.adaround_iterations > 0) + (options.brecq_iterations > 0) + options.gptq > 1)
    throw Error("AdaRound, BRECQ and GPTQ are alternatives (each decides the rounding of the weights): choose one");
  if (options.gptq && !calib) throw Error("GPTQ needs calibration data (--data): it reads each layer's inputs");
  if (options.adaround_iterations > 0 || options.brecq_iterations > 0 || options.bias_correction ||
      (options.gptq && calib)) {
    if (!calib) throw Error("AdaRound, BRECQ and bias correction need calibration data (--data)");
    if (!options.device.is_cpu())
      throw Error("--device " + options.device.str() + ": AdaRound, BRECQ, GPTQ and bias correction run on the CPU "
                  "for now (calibration and evaluation run on the device)");
    reference = std::make_unique<ModelGraph>(analyze_module(g.module.clone(), g.path));
  }
  std::vector<AdaRoundLayer> ada_layers;

  // --- 2. observe activations on calibration data
  SlotScope slots;
  std::map<size_t, int64_t> slot_of;  // point index -> slot
  std::vector<jit::Node*> observers;
  for (size_t i = 0; i < g.points.size(); ++i) {
    const Point& p = g.points[i];
    const QuantSpec& s = result.points[i].assignment.spec;
    if (s.is_float() || p.role == Role::kWeight || p.role == Role::kBias) continue;
    // a scheme whose parameters need no data (fixed point's step, the block formats' scales)
    // is observed only for the clipping report, when there is data
    const bool needs = scheme::needs_data(s);
    if (!needs && !calib) continue;
    if (needs) scheme::check_calibrator(result.points[i].assignment.calibrator, p.name);  // fail before running anything
    const int64_t id = slots.add();
    slot_of[i] = id;
    jit::Value* y = insert_at_point(graph, p, [&](jit::Value* x) {
      jit::Node* n = graph.create(c10::Symbol::fromQualString("anybit::observe"),
                                  {x, graph.insertConstant(id)});
      graph.insertNode(n);
      n->output()->setType(x->type());
      return n->output();
    });
    observers.push_back(y->node());
  }
  if (!slot_of.empty()) {
    if (!calib)
      throw Error("activation points need calibration data (--data), e.g. " +
                  g.points[slot_of.begin()->first].name);
    const int64_t total = std::min(calib->size(), options.calib_batches * options.batch_size);
    if (total <= 0) throw Error(calib->describe() + ": no calibration samples");
    jit::GraphFunction fn("anybit_calibrate", g.graph, nullptr);
    torch::NoGradGuard no_grad;
    // the calibration passes run on the device; the model comes back to the CPU after them
    // (or on an error), where its quantizer parameters are computed
    struct OnDevice {
      torch::jit::Module m;
      bool moved;
      ~OnDevice() {
        if (moved) m.to(at::kCPU);
      }
    } on_device{g.module, !options.device.is_cpu()};
    if (on_device.moved) g.module.to(options.device);
    data::ProgressBar bar("calibrate", total, options.progress);
    for (int64_t b = 0; b < total; b += options.batch_size) {
      auto batch = calib->batch(b, std::min(options.batch_size, total - b));
      jit::Stack stack{g.module._ivalue(), batch.first.to(options.device)};
      try {
        fn.run(stack);
      } catch (const std::exception& e) {
        std::string what = e.what();
        throw Error(calib->describe() + ": the model rejects inputs of shape " +
                    c10::str(batch.first.sizes()) + ": " + what.substr(0, what.find('\n')));
      }
      bar.update(b + batch.first.size(0));
    }
    bar.finish();
  }
  for (jit::Node* n : observers) {
    n->output()->replaceAllUsesWith(n->input(0));
    jit::Node* c = n->input(1)->node();
    n->destroy();
    if (!c->hasUses()) c->destroy();
  }

  // --- 3 and 4. parameters and quantizer nodes
  // The calibrators' range searches (MSE, entropy, percentile) are independent per point:
  // run them in parallel, and report the first failure in point order.
  // autoN specs become uintN or intN now that the data has been seen
  for (auto& [i, id] : slot_of) {
    Assignment& a = result.points[i].assignment;
    if (!a.spec.auto_sign) continue;
    const calib::Observer& obs = slots.get(id)->observer;
    if (obs.count() == 0)
      throw Error(g.points[i].name + ": " + a.spec.str() + " needs calibration data to choose its sign, and none "
                  "reached this point (is it inside control flow?)");
    result.points[i].auto_spec = a.spec.str();
    a.spec = a.spec.resolve_sign(obs.min());
  }
  std::vector<size_t> observed;
  for (const auto& kv : slot_of)
    if (scheme::needs_data(result.points[kv.first].assignment.spec)) observed.push_back(kv.first);
  std::vector<scheme::Params> observed_params(observed.size());
  std::vector<std::string> observed_errors(observed.size());
  at::parallel_for(0, static_cast<int64_t>(observed.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const size_t i = observed[k];
      const Assignment& a = result.points[i].assignment;
      try {
        const Slot& slot = *slots.get(slot_of.at(i));
        observed_params[k] = scheme::data_params(a.spec, a.calibrator, slot.observer, slot.per_sample_numel, g.points[i].name);
      } catch (const std::exception& ex) {
        observed_errors[k] = ex.what();
      }
    }
  });
  for (const std::string& e : observed_errors)
    if (!e.empty()) throw Error(e);
  for (size_t i = 0; i < g.points.size(); ++i) {
    const Point& p = g.points[i];
    const Assignment& a = result.points[i].assignment;
    if (a.spec.is_float()) continue;
    scheme::Params P;
    if (p.role == Role::kWeight || p.role == Role::kBias) {
      const at::Tensor w = resolve_attr(g.module, p.attr_path).toTensor();
      if (a.spec.auto_sign) {
        result.points[i].auto_spec = a.spec.str();
        result.points[i].assignment.spec = a.spec.resolve_sign(w.numel() ? w.min().item<double>() : 0.0);
      }
      P = scheme::weight_params(a.spec, a.calibrator, w, p.channel_axis, p.name);
    } else if (!scheme::needs_data(a.spec)) {
      P = scheme::params_without_data(a.spec, slot_of.count(i) ? &slots.get(slot_of.at(i))->observer : nullptr);
    } else {
      P = observed_params[std::lower_bound(observed.begin(), observed.end(), i) - observed.begin()];
    }
    PointReport& report = result.points[i];
    report.clipped_low = P.clipped_low;
    report.clipped_high = P.clipped_high;
    if (slot_of.count(i)) {
      report.clip_warning =
          scheme::clip_warning(p.name, a.spec, slots.get(slot_of.at(i))->observer, P, options.clip_warn_share);
      if (!report.clip_warning.empty()) result.clipping.push_back(report.clip_warning);
    }
    install(g, p, a.spec, P, options.portable, &report);
    const bool learns_rounding = (reference && (options.adaround_iterations > 0 || options.brecq_iterations > 0)) || options.gptq;
    // per-group grids: GPTQ only (AdaRound and BRECQ learn per-channel or per-tensor grids)
    if (learns_rounding && p.role == Role::kWeight && a.spec.scheme == Scheme::kInt && !a.spec.asymmetric &&
        a.spec.learn == Learn::kNone && (options.gptq || a.spec.granularity != Granularity::kPerGroup)) {
      const Point* fp = reference ? reference->find(p.name) : nullptr;
      if (options.gptq || (fp && fp->node)) {
        AdaRoundLayer L;
        L.name = p.name;
        L.qnode = p.node;
        L.fnode = fp ? fp->node : nullptr;
        L.weight_path = p.attr_path;
        L.scale = P.scale;
        L.qmin = a.spec.qmin();
        L.qmax = a.spec.qmax();
        L.channel_axis = a.spec.axis >= 0 ? a.spec.axis : p.channel_axis;
        L.group = a.spec.granularity == Granularity::kPerGroup ? a.spec.group_size : 0;
        ada_layers.push_back(L);
      }
    }
  }
  if (options.strict && !result.clipping.empty()) {
    std::string msg = "strict: " + std::to_string(result.clipping.size()) + " quantizer(s) clip their calibration data: ";
    for (size_t k = 0; k < result.clipping.size(); ++k) msg += (k ? "; " : "") + result.clipping[k];
    throw Error(msg);
  }
  if (reference && options.brecq_iterations > 0) {
    BrecqOptions bo;
    bo.iterations = options.brecq_iterations;
    bo.samples = options.brecq_samples;
    bo.drop_prob = options.brecq_drop_prob;
    bo.drop_inside = options.brecq_drop_inside;
    bo.checkpoint_dir = options.brecq_checkpoint_dir;
    bo.resume = options.brecq_resume;
    bo.progress = options.progress;
    for (const auto& r : brecq(g, *reference, ada_layers, *calib, bo))
      result.brecq.emplace_back(r.name, r.mse_nearest, r.mse_brecq, r.seconds_per_iteration);
    // the report shows the steps the blocks learned, not the calibrated ones
    for (auto& r : result.points) {
      if (r.point.role == Role::kWeight || r.first_param.empty() || !r.assignment.spec.is_uniform() ||
          !g.module.hasattr(r.first_param))
        continue;
      const at::Tensor s = g.module.attr(r.first_param).toTensor();
      if (s.numel() != 1 || qnode::what_of(r.first_param) != "scale") continue;
      const std::string zp_name = qnode::sibling(r.first_param, "zero_point");
      const double z = g.module.hasattr(zp_name) ? g.module.attr(zp_name).toTensor().item<double>() : 0.0;
      const std::string learned = scheme::fmt_scale(s.item<double>(), z) + " (learned, brecq)";
      if (r.params.rfind(scheme::fmt_scale(s.item<double>(), z), 0) != 0) r.params = learned;
    }
  } else if (options.gptq) {
    GptqOptions go;
    go.samples = options.gptq_samples > 0 ? options.gptq_samples : options.calib_batches * options.batch_size;
    go.damp = options.gptq_damp;
    go.act_order = options.gptq_act_order;
    go.asymmetric = options.gptq_float_target;
    go.progress = options.progress;
    for (const auto& r : gptq(g, reference.get(), ada_layers, *calib, go)) {
      if (!r.skipped.empty()) result.gptq_skipped.push_back(r.name + ": " + r.skipped);
      else result.gptq.emplace_back(r.name, r.err_nearest, r.err_gptq);
    }
  } else if (reference && !ada_layers.empty()) {
    AdaRoundOptions ao;
    ao.iterations = options.adaround_iterations;
    ao.samples = options.adaround_samples;
    ao.progress = options.progress;
    for (const auto& r : adaround(g, *reference, ada_layers, *calib, ao))
      result.adaround.emplace_back(r.name, r.mse_nearest, r.mse_adaround);
  }
  if (reference && options.bias_correction) correct_bias(g, *reference, *calib, options.adaround_samples);
  if (options.int32_bias) {
    for (const auto& r : result.points)
      if (r.point.role == Role::kBias && !r.assignment.spec.is_float())
        throw Error(r.point.name + ": has its own quantizer; int32 biases (--int32-bias) replace it: "
                    "leave biases float in the rules");
    quantize_biases_int32(g);
  }
  // which quantizer parameter belongs to which point, saved with the model
  c10::impl::GenericDict names(c10::StringType::get(), c10::StringType::get());
  for (const auto& r : result.points)
    if (!r.first_param.empty()) names.insert(r.first_param, r.point.name);
  // the input shape, for the integer export (core/export.h)
  if (calib && calib->size() > 0 && !g.module.hasattr("anybit_input_shape")) {
    const std::vector<int64_t> shape = calib->batch(0, 1).first.sizes().slice(1).vec();
    g.module.register_attribute("anybit_input_shape", c10::ListType::ofInts(), c10::List<int64_t>(shape));
  }
  if (!g.module.hasattr("anybit_points"))
    g.module.register_attribute("anybit_points", c10::DictType::create(c10::StringType::get(), c10::StringType::get()),
                                names);
  invalidate_plan(g);
  result.model = std::move(g);
  // handles of the old points are stale after the rewrite
  return result;
}

void save_module(torch::jit::Module& module, const std::string& path) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  try {
    module.save(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    std::string what = e.what();
    throw Error(path + ": cannot save model: " + what.substr(0, what.find('\n')));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write (rename from temporary file failed)");
  }
}

namespace {
torch::jit::Module frozen_copy(torch::jit::Module& m) {
  m.eval();
  try {
    return torch::jit::freeze(m.clone());
  } catch (const std::exception&) {
    return m;  // models freezing cannot handle are evaluated as they are
  }
}
}  // namespace

std::vector<QuantizerOutput> probe_quantizers(torch::jit::Module& model, const at::Tensor& x) {
  std::map<std::string, std::string> names;
  if (model.hasattr("anybit_points"))
    for (const auto& kv : model.attr("anybit_points").toGenericDict())
      names[kv.key().toStringRef()] = kv.value().toStringRef();
  auto graph = jit::toGraphFunction(model.get_method("forward").function()).graph()->copy();
  std::vector<jit::Value*> outs;
  std::vector<QuantizerOutput> result;
  for (jit::Node* n : graph->nodes()) {
    if (!qnode::is_quantizer(n)) continue;
    QuantizerOutput q;
    q.op = n->kind().toQualString();
    if (n->inputs().size() > 1 && n->input(1)->node()->kind() == c10::prim::GetAttr) {
      auto it = names.find(n->input(1)->node()->s(c10::attr::name));
      if (it != names.end()) q.point = it->second;
    }
    outs.push_back(n->output());
    result.push_back(q);
  }
  // what each quantizer produced, before any in-place op later in the graph changes it
  for (jit::Value*& v : outs) v = insert_snapshot(*graph, v);
  graph->eraseOutput(0);
  graph->registerOutput(graph->insertNode(graph->createTuple(outs))->output());
  jit::GraphFunction fn("anybit_probe", graph, nullptr);
  jit::Stack stack{model._ivalue(), x};
  torch::NoGradGuard no_grad;
  fn.run(stack);
  auto elems = stack.back().toTuple()->elements();
  for (size_t i = 0; i < result.size(); ++i) result[i].value = elems[i].toTensor();
  return result;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

namespace {
// Runs a frozen model on the fused oneDNN layers when it compiles, else in the
// interpreter; the first batch runs both ways and the compiled model is kept only if
// its argmax agrees with the interpreter's on at least 99% of the samples.
class FusedRunner {
 public:
  // `r` (optional) receives the runtime and its note.
  FusedRunner(torch::jit::Module& m, bool fuse, EvalResult* r) : module_(m), result_(r) {
    if (!fuse) return;
    std::string why;
    fused_ = FusedModel::compile(m, &why);
    note(fused_ ? "" : why);
  }
  at::Tensor operator()(const at::Tensor& x) {
    if (!fused_) return module_.forward({x}).toTensor();
    if (checked_) return fused_->forward(x);
    at::Tensor expect = module_.forward({x}).toTensor();
    at::Tensor got;
    std::string why;
    try {
      got = fused_->forward(x);
    } catch (const Error& e) {
      why = e.what();
    }
    if (why.empty() && got.sizes() != expect.sizes()) why = "the compiled layers give another output shape";
    if (why.empty() && expect.dim() == 2 && expect.size(0) > 0) {
      const double agree = (got.argmax(1) == expect.argmax(1)).to(at::kDouble).mean().item<double>();
      if (agree < 0.99) {
        const double sqnr = 10 * std::log10(expect.pow(2).sum().item<double>() / (got - expect).pow(2).sum().item<double>());
        why = "the compiled layers agree with the interpreter on " + std::to_string(100 * agree) +
              "% of the first batch's argmax (SQNR " + std::to_string(sqnr) + " dB)";
      }
    }
    checked_ = true;
    if (!why.empty()) {
      fused_.reset();
      note(why);
    } else {
      note(fused_->summary(x));
    }
    return expect;
  }

 private:
  void note(const std::string& why) {
    if (!result_) return;
    result_->runtime = fused_ ? "onednn" : "torchscript";
    result_->runtime_note = why;
  }
  torch::jit::Module& module_;
  EvalResult* result_;
  std::unique_ptr<FusedModel> fused_;
  bool checked_ = false;
};
}  // namespace

EvalResult evaluate(torch::jit::Module& model_in, const DataSource& data, const EvalOptions& opt,
                    torch::jit::Module* reference_in) {
  EvalResult r;
  const int64_t batch_size = opt.batch_size;
  const bool progress = opt.progress;
  torch::NoGradGuard no_grad;
  const bool on_device = !opt.device.is_cpu();
  // a copy on the device, moved before freezing (frozen weights are constants of the graph)
  auto prepared = [&](torch::jit::Module& m) {
    m.eval();
    torch::jit::Module src = m;
    if (on_device) {
      src = m.clone();
      src.to(opt.device);
    }
    return opt.freeze ? frozen_copy(src) : src;
  };
  torch::jit::Module model = prepared(model_in);
  torch::jit::Module ref_module;
  torch::jit::Module* reference = nullptr;
  if (reference_in) {
    ref_module = prepared(*reference_in);
    reference = &ref_module;
  }
  const auto t0 = std::chrono::steady_clock::now();
  // the fused oneDNN layers are the CPU's; on a device the interpreter runs the model there
  FusedRunner run(model, opt.freeze && opt.fused && !on_device, &r);
  FusedRunner run_ref(ref_module, reference && opt.freeze && opt.fused && !on_device, nullptr);
  if (on_device) r.runtime_note = "on " + opt.device.str();
  int64_t correct1 = 0, correct5 = 0, agree = 0;
  double loss = 0;
  data::ProgressBar bar("evaluate", data.size(), progress);
  for (int64_t b = 0; b < data.size(); b += batch_size) {
    auto batch = data.batch(b, batch_size);
    at::Tensor out;
    try {
      out = run(batch.first.to(opt.device)).to(at::kCPU);
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error(data.describe() + ": the model rejects inputs of shape " + c10::str(batch.first.sizes()) +
                  ": " + what.substr(0, what.find('\n')));
    }
    if (out.dim() != 2 || out.size(0) != batch.first.size(0))
      throw Error("the model's output has shape " + c10::str(out.sizes()) +
                  "; evaluation expects class scores [N, classes]");
    const at::Tensor& y = batch.second;
    if (y.min().item<int64_t>() < 0)
      throw Error(data.describe() + ": the data has no labels; evaluation needs them (npy:X.npy:LABELS.npy)");
    if (y.max().item<int64_t>() >= out.size(1))
      throw Error(data.describe() + ": label " + std::to_string(y.max().item<int64_t>()) +
                  " is outside the model's " + std::to_string(out.size(1)) + " classes");
    at::Tensor pred = out.argmax(1);
    correct1 += (pred == y).sum().item<int64_t>();
    const int64_t k = std::min<int64_t>(5, out.size(1));
    at::Tensor top = std::get<1>(out.topk(k, 1));
    correct5 += (top == y.unsqueeze(1)).any(1).sum().item<int64_t>();
    loss += at::cross_entropy_loss(out, y, {}, at::Reduction::Sum).item<double>();
    if (reference) {
      at::Tensor ref = run_ref(batch.first.to(opt.device)).to(at::kCPU);
      agree += (ref.argmax(1) == pred).sum().item<int64_t>();
    }
    r.samples += batch.first.size(0);
    bar.update(r.samples);
  }
  bar.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.samples) {
    r.top1 = 100.0 * correct1 / r.samples;
    r.top5 = 100.0 * correct5 / r.samples;
    r.loss = loss / r.samples;
    if (reference) r.agreement = 100.0 * agree / r.samples;
  }
  return r;
}

}  // namespace anybit
