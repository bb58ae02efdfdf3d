// Running an exported integer model on a dataset (export.h): evaluate_integer against the
// fake-quant model, per-layer agreement, MAC-model calibration, and saving an export whole.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/script.h>

#include <chrono>
#include <filesystem>
#include <map>

#include <unistd.h>

#include "anybit/data/progress.h"
#include "anybit/export/export.h"
#include "anybit/runtime/evaluate.h"

namespace anybit {
using intsim::OpKind;
using intsim::QuantParams;

namespace {

// Every quantized tensor of the engine (the model input and each op output that a quantizer
// of the reference produced) against the reference's value on the same batch: `tensors`
// holds the engine's values of the batch x (the evaluation keeps them for its first batch).
std::vector<LayerAgreement> compare_layers(const intsim::Model& model,
                                           const std::map<std::string, intsim::Tensor>& tensors,
                                           torch::jit::Module& reference, const at::Tensor& x) {
  std::map<std::string, QuantParams> params;
  for (const auto& i : model.inputs) params[i.name] = i.q;
  for (const auto& op : model.ops)
    if (op.kind != OpKind::kRelu && op.kind != OpKind::kMaxPool2d && op.kind != OpKind::kFlatten)
      params[op.output] = op.out;
  std::map<std::string, LayerAgreement> found;
  for (const QuantizerOutput& p : probe_quantizers(reference, x)) {
    auto t = tensors.find(p.point);
    auto q = params.find(p.point);
    if (t == tensors.end() || q == params.end() || found.count(p.point)) continue;
    const at::Tensor e = at::tensor(t->second.data, at::kInt).to(at::kLong);
    const at::Tensor f = quantize_input(p.value, q->second).reshape({-1});
    if (f.numel() != e.numel()) continue;
    const at::Tensor d = (f - e).abs();
    LayerAgreement a;
    a.point = p.point;
    a.equal = 100.0 * d.eq(0).to(at::kDouble).mean().item<double>();
    a.one_step = 100.0 * d.eq(1).to(at::kDouble).mean().item<double>();
    a.max_steps = d.max().item<int64_t>();
    found[p.point] = a;
  }
  std::vector<LayerAgreement> out;
  for (const auto& i : model.inputs)
    if (found.count(i.name)) out.push_back(found[i.name]);
  for (const auto& op : model.ops)
    if (found.count(op.output)) out.push_back(found[op.output]), found.erase(op.output);
  return out;
}

}  // namespace

void require_mac_calibration_data(const intsim::MacModel& mac, const DataSource* calib) {
  if (mac.needs_calibration() && !calib)
    throw Error("MAC model '" + mac.describe() + "' needs calibration data: give --calib-data SPEC (Python: calib_data=)");
}

IntegerEvalResult evaluate_integer(const intsim::Model& model, const DataSource& data,
                                   const IntegerEvalOptions& options, torch::jit::Module* reference) {
  if (model.inputs.size() != 1 || model.outputs.size() != 1)
    throw Error("integer evaluation needs a model with one input and one output");
  intsim::Engine engine(model, options.engine);
  const QuantParams& in_q = engine.model().inputs[0].q;
  const QuantParams& out_q = engine.model().outputs[0].q;
  if (options.engine.mac && options.engine.mac->needs_calibration()) {
    require_mac_calibration_data(*options.engine.mac, options.calib_data);
    auto [cx, cy] = options.calib_data->batch(0, std::min(options.calib_samples, options.calib_data->size()));
    if (cx.size(0) == 0) throw Error(options.calib_data->describe() + ": no calibration samples");
    try {
      engine.calibrate({to_engine_tensor(quantize_input(cx, in_q).to(at::kInt).contiguous())});
    } catch (const Error& e) {
      throw Error(options.calib_data->describe() + ": " + e.what());
    }
  }
  std::unique_ptr<torch::jit::Module> ref;
  if (reference) {
    ref = std::make_unique<torch::jit::Module>(reference->clone());
    ref->eval();
  }
  IntegerEvalResult r;
  int64_t correct1 = 0, correct5 = 0, agree = 0, n_equal = 0, n_one = 0, n_more = 0, n_values = 0;
  double seconds = 0;
  torch::NoGradGuard no_grad;
  data::ProgressBar bar("intsim", data.size(), options.progress);
  for (int64_t b = 0; b < data.size(); b += options.batch_size) {
    auto [x, y] = data.batch(b, options.batch_size);
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor qx = quantize_input(x, in_q).to(at::kInt).contiguous();
    std::vector<intsim::Tensor> out;
    std::map<std::string, intsim::Tensor> tensors;  // kept for the first batch's per-layer comparison
    try {
      out = engine.run({to_engine_tensor(qx)}, ref && b == 0 ? &tensors : nullptr);
    } catch (const Error& e) {
      throw Error(data.describe() + ": " + e.what());
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    at::Tensor q = at::tensor(out[0].data, at::kInt).reshape(out[0].shape).to(at::kLong).reshape({x.size(0), -1});
    at::Tensor logits = (q - out_q.zero_point).to(at::kDouble);  // monotone in the real value
    const at::Tensor pred = logits.argmax(1);
    correct1 += pred.eq(y).sum().item<int64_t>();
    const int64_t k = std::min<int64_t>(5, logits.size(1));
    correct5 += std::get<1>(logits.topk(k, 1)).eq(y.unsqueeze(1)).any(1).sum().item<int64_t>();
    if (ref) {
      at::Tensor f = ScoresPicker(*ref, "")(ref->forward({x})).reshape({x.size(0), -1});
      agree += f.argmax(1).eq(pred).sum().item<int64_t>();
      const at::Tensor fq = quantize_input(f, out_q);
      const at::Tensor d = (fq - q).abs();
      n_equal += d.eq(0).sum().item<int64_t>();
      n_one += d.eq(1).sum().item<int64_t>();
      n_more += d.gt(1).sum().item<int64_t>();
      n_values += d.numel();
      r.max_steps = std::max(r.max_steps, d.max().item<int64_t>());
    }
    if (ref && b == 0) r.layer_agreement = compare_layers(model, tensors, *ref, x);
    r.samples += x.size(0);
    bar.update(r.samples);
  }
  bar.finish();
  if (r.samples == 0) throw Error(data.describe() + ": no samples");
  r.top1 = 100.0 * correct1 / r.samples;
  r.top5 = 100.0 * correct5 / r.samples;
  r.seconds = seconds;
  if (ref) {
    r.agreement = 100.0 * agree / r.samples;
    r.equal = 100.0 * n_equal / n_values;
    r.one_step = 100.0 * n_one / n_values;
    r.more = 100.0 * n_more / n_values;
  }
  r.layers = engine.stats();
  return r;
}

void save_integer_model_atomic(const intsim::Model& m, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path target = fs::path(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/": the temporary is "out.tmpPID"
  if (target.empty()) throw Error("export: '" + dir + "' names no directory");
  std::error_code ec;
  if (fs::exists(target) && !fs::is_directory(target))
    throw Error(dir + ": exists and is not a directory; not overwriting it");
  if (fs::exists(target) && !fs::is_empty(target) && !fs::exists(target / "manifest.json"))
    throw Error(dir + ": exists and is not an anybit integer export; not overwriting it");
  const fs::path tmp = target.string() + ".tmp" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  try {
    intsim::save_model(m, tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(target, ec);
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    throw Error(dir + ": cannot write (" + ec.message() + ")");
  }
}


void to_json(nlohmann::json& j, const IntegerEvalResult& r) {
  j = {{"samples", r.samples}, {"top1", r.top1}, {"top5", r.top5}, {"seconds", r.seconds}};
  if (r.agreement >= 0) {
    j["agreement"] = r.agreement;
    j["outputs_equal"] = r.equal;
    j["outputs_one_step"] = r.one_step;
    j["outputs_more"] = r.more;
    j["max_steps"] = r.max_steps;
    nlohmann::json agreement = nlohmann::json::array();
    for (const auto& a : r.layer_agreement)
      agreement.push_back({{"point", a.point}, {"equal", a.equal}, {"one_step", a.one_step}, {"max_steps", a.max_steps}});
    j["layer_agreement"] = agreement;
  }
  j["layers"] = r.layers;
}

namespace intsim {
void to_json(nlohmann::json& j, const LayerStats& l) {
  j = {{"name", l.name},
       {"op", l.op},
       {"fast_path", l.fast_path},
       {"dot_products", l.dot_products},
       {"overflows", l.overflows},
       {"mean_abs_error", l.mean_abs_error()},
       {"max_abs_error", l.max_abs_error},
       {"clipped", l.clipped}};
}
}  // namespace intsim

}  // namespace anybit
