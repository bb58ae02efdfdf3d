// anybit::quantize, the steps in order; each step's work lives in its own folder:
//
// 1. Rules give every point a spec (graph/rules.cc).
// 2. Activation and input points that need data are observed on calibration batches
//    (calibrate/observe.h).
// 3. Each point's quantizer parameters are computed (calibrators for ranges, weights read
//    directly; quant/scheme.h), and the point gets its quantizer node reading them from
//    buffers (parameters, for LSQ/PACT) on the root module, so they save and load with it
//    (rewrite/quantizers.h).
// 4. AdaRound, BRECQ or GPTQ decide the rounding of the weights, bias correction and int32
//    biases follow (ptq/, rewrite/quantizers.h).
#include "anybit/api/quantize.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/script.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>

#include "anybit/base/error.h"
#include "anybit/calibrate/observe.h"
#include "anybit/ptq/adaround.h"
#include "anybit/ptq/bias_correction.h"
#include "anybit/ptq/brecq.h"
#include "anybit/ptq/gptq.h"
#include "anybit/quant/node.h"
#include "anybit/quant/scheme.h"
#include "anybit/rewrite/quantizers.h"

namespace anybit {
namespace jit = torch::jit;

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

std::vector<std::string> float_layer_inputs(const std::vector<PointReport>& plan) {
  std::vector<std::string> float_reads;
  bool any_activation = false;
  for (const auto& r : plan) {
    if (r.point.role != Role::kActivation && r.point.role != Role::kInput) continue;
    any_activation |= r.point.role == Role::kActivation && !r.assignment.spec.is_float();
    if (r.assignment.spec.is_float() && !r.point.feeds.empty())
      float_reads.push_back(r.point.name + " (" + r.point.kind + ")");
  }
  if (!any_activation) float_reads.clear();
  return float_reads;
}

std::string float_layer_inputs_note(const std::vector<std::string>& float_reads) {
  std::string some;
  for (size_t i = 0; i < float_reads.size() && i < 4; ++i) some += (i ? ", " : "") + float_reads[i];
  return std::to_string(float_reads.size()) + " activations that conv, linear or matmul layers read stay float: " +
         some + (float_reads.size() > 4 ? ", ..." : "") +
         "; the rule {role: activation, feeds: [conv, linear, matmul], spec: ...} quantizes them (docs/config.md)";
}

std::string integer_inputs_note(const std::vector<std::string>& inputs) {
  std::string names;
  for (size_t i = 0; i < inputs.size(); ++i) names += (i ? ", " : "") + inputs[i];
  return names + (inputs.size() == 1 ? " is" : " are") +
         " fed integers (token ids), which a quantizer would round to other values: left unquantized";
}

QuantizeResult quantize(ModelGraph g, const Config& config, const DataSource* calib,
                        const QuantizeOptions& options) {
  QuantizeResult result;
  if (calib) check_one_input(g.module, "quantize");
  if (options.strict && !g.uncovered.empty()) {
    std::string msg = "strict: " + std::to_string(g.uncovered.size()) + " op(s) have no points and would stay float: ";
    for (size_t k = 0; k < g.uncovered.size(); ++k)
      msg += (k ? "; " : "") + g.uncovered[k].where() + " (" + g.uncovered[k].reason + ")";
    throw Error(msg);
  }
  result.points = plan(g, config);
  // Integer inputs (token ids an embedding reads) are indices, not values: a quantizer would
  // round them to other tokens, and its float output would not index at all. Left unquantized.
  // the first calibration sample: its type here, its shape for the export at the end
  const at::Tensor first_sample = calib && calib->size() > 0 ? calib->batch(0, 1).first : at::Tensor();
  if (first_sample.defined() && !at::isFloatingType(first_sample.scalar_type()))
    for (PointReport& r : result.points)
      if (r.point.role == Role::kInput && !r.assignment.spec.is_float()) {
        result.integer_inputs.push_back(r.point.name);
        r.assignment.spec = QuantSpec();
      }
  result.float_layer_inputs = float_layer_inputs(result.points);
  // the float model AdaRound reconstructs, taken before any rewrite
  std::unique_ptr<ModelGraph> reference;
  if ((options.adaround_iterations > 0) + (options.brecq_iterations > 0) + options.gptq > 1)
    throw Error("AdaRound, BRECQ and GPTQ are alternatives (each decides the rounding of the weights): choose one");
  if (options.gptq && !calib) throw Error("GPTQ needs calibration data (--data): it reads each layer's inputs");
  if (options.adaround_iterations > 0 || options.brecq_iterations > 0 || options.bias_correction ||
      (options.gptq && calib)) {
    if (!calib) throw Error("AdaRound, BRECQ and bias correction need calibration data (--data)");
    reference = std::make_unique<ModelGraph>(analyze_module(g.module.clone(), g.path));
  }
  std::vector<AdaRoundLayer> ada_layers;

  // --- 2. observe activations and inputs on calibration data
  std::vector<size_t> to_observe;
  for (size_t i = 0; i < g.points.size(); ++i) {
    const Point& p = g.points[i];
    const QuantSpec& s = result.points[i].assignment.spec;
    if (s.is_float() || p.role == Role::kWeight || p.role == Role::kBias) continue;
    // a scheme whose parameters need no data (fixed point's step, the block formats' scales)
    // is observed only for the clipping report, when there is data
    const bool needs = scheme::needs_data(s);
    if (!needs && !calib) continue;
    if (needs) scheme::check_calibrator(result.points[i].assignment.calibrator, p.name);  // fail before running anything
    to_observe.push_back(i);
  }
  if (!to_observe.empty() && !calib)
    throw Error("activation points need calibration data (--data), e.g. " + g.points[to_observe.front()].name);
  ObserveOptions oo;
  oo.samples = options.calib_batches * options.batch_size;
  oo.batch_size = options.batch_size;
  oo.device = options.device;
  oo.progress = options.progress;
  const std::map<size_t, Observed> observed_at =
      to_observe.empty() ? std::map<size_t, Observed>() : observe_points(g, to_observe, *calib, oo);

  // --- 3 and 4. parameters and quantizer nodes
  // The calibrators' range searches (MSE, entropy, percentile) are independent per point:
  // run them in parallel, and report the first failure in point order.
  // autoN specs become uintN or intN now that the data has been seen
  for (const auto& [i, seen] : observed_at) {
    Assignment& a = result.points[i].assignment;
    if (!a.spec.auto_sign) continue;
    const calib::Observer& obs = seen.observer;
    if (obs.count() == 0)
      throw Error(g.points[i].name + ": " + a.spec.str() + " needs calibration data to choose its sign, and none "
                  "reached this point (is it inside control flow?)");
    result.points[i].auto_spec = a.spec.str();
    a.spec = a.spec.resolve_sign(obs.min());
  }
  std::vector<size_t> observed;
  for (const auto& kv : observed_at)
    if (scheme::needs_data(result.points[kv.first].assignment.spec)) observed.push_back(kv.first);
  std::vector<scheme::Params> observed_params(observed.size());
  std::vector<std::string> observed_errors(observed.size());
  at::parallel_for(0, static_cast<int64_t>(observed.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const size_t i = observed[k];
      const Assignment& a = result.points[i].assignment;
      try {
        const Observed& seen = observed_at.at(i);
        observed_params[k] = scheme::data_params(a.spec, a.calibrator, seen.observer, seen.per_sample_numel, g.points[i].name);
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
      P = scheme::params_without_data(a.spec, observed_at.count(i) ? &observed_at.at(i).observer : nullptr);
    } else {
      P = observed_params[std::lower_bound(observed.begin(), observed.end(), i) - observed.begin()];
    }
    PointReport& report = result.points[i];
    report.clipped_low = P.clipped_low;
    report.clipped_high = P.clipped_high;
    if (observed_at.count(i)) {
      report.clip_warning =
          scheme::clip_warning(p.name, a.spec, observed_at.at(i).observer, P, options.clip_warn_share);
      if (!report.clip_warning.empty()) result.clipping.push_back(report.clip_warning);
    }
    const Installed installed = install_quantizer(g, p, a.spec, P, options.portable);
    report.portable = installed.portable;
    report.first_param = installed.first_param;
    report.params = installed.params;
    const bool learns_rounding = (reference && (options.adaround_iterations > 0 || options.brecq_iterations > 0)) || options.gptq;
    // per-group grids: GPTQ only (AdaRound and BRECQ learn per-channel or per-tensor grids)
    if (learns_rounding && p.role == Role::kWeight && a.spec.scheme == Scheme::kInt && !a.spec.asymmetric &&
        a.spec.learn == Learn::kNone && (options.gptq || a.spec.granularity != Granularity::kPerGroup)) {
      const Point* fp = reference ? reference->find(p.name) : nullptr;
      if (p.node->kind().toQualString() != p.op) {
        // read through a transpose or a conversion (x @ W.t(), W.contiguous()): the rounding
        // algorithms take the layer's own op
        if (options.gptq)
          result.gptq_skipped.push_back(p.name + ": read through " + p.node->kind().toQualString() + " by " + p.op);
      } else if (!p.more_uses.empty()) {
        // the rounding would be learned from one reader's inputs; nearest serves every reader
        if (options.gptq)
          result.gptq_skipped.push_back(p.name + ": read by " + std::to_string(p.more_uses.size() + 1) +
                                        " ops (a module called more than once, or a tied weight)");
      } else if (options.gptq || (fp && fp->node)) {
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
  // AdaRound, BRECQ, GPTQ and bias correction run where the calibration ran: both models on
  // the device until they are done (the captured layer inputs, Hessians and learned roundings
  // live there), back on the CPU after them, on an error too
  std::optional<ModulesOnDevice> on_device;
  if (reference) on_device.emplace(std::vector<torch::jit::Module>{g.module, reference->module}, options.device);
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
  on_device.reset();
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
  // the input shape, for the integer export (export/export.h)
  if (first_sample.defined() && !g.module.hasattr("anybit_input_shape")) {
    const std::vector<int64_t> shape = first_sample.sizes().slice(1).vec();
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

void to_json(nlohmann::json& j, const PointReport& r) {
  j = r.point;
  j["spec"] = r.assignment.spec.str();
  j["bits"] = r.assignment.spec.is_float() ? 32 : r.assignment.spec.bits;
  j["calibrator"] = r.assignment.calibrator;
  j["rule"] = r.assignment.rule;
  j["params_chosen"] = r.params;
  if (!r.auto_spec.empty()) j["auto_spec"] = r.auto_spec;
  if (r.clipped_low >= 0) {
    j["clipped_low"] = r.clipped_low;
    j["clipped_high"] = r.clipped_high;
  }
  if (!r.clip_warning.empty()) j["clip_warning"] = r.clip_warning;
}

}  // namespace anybit
