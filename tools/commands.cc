// The anybit command line's subcommands (commands.h): call the library, print. No logic lives here.
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <torch/script.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <unistd.h>

#include "anybit/api/pipeline.h"
#include "anybit/api/quantize.h"
#include "anybit/export/export.h"
#include "anybit/graph/graph.h"
#include "anybit/quant/device.h"
#include "anybit/study/noise.h"
#include "anybit/study/search.h"
#include "anybit/study/sweep.h"
#include "anybit/train/finetune.h"
#include "commands.h"
#include "launch.h"

#ifndef ANYBIT_SOURCE_DIR
#define ANYBIT_SOURCE_DIR "."
#endif

namespace anybit_cli {
namespace {

using nlohmann::json;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}


// "12 conv/linear/matmul ops: 10 with points, 2 without (aten::lstm: a recurrent layer ...)"
std::string coverage_line(const anybit::ModelGraph& g) {
  std::map<std::string, int> reasons;
  for (const auto& u : g.uncovered) reasons[u.op + ": " + u.reason]++;
  std::string why;
  for (const auto& [r, n] : reasons) why += (why.empty() ? "" : "; ") + (n > 1 ? std::to_string(n) + "x " : "") + r;
  const int without = static_cast<int>(g.uncovered.size());
  return fmt::format("coverage: {} conv/linear/matmul ops, {} with points, {} without{}", g.linear_algebra_ops,
                     g.linear_algebra_ops - without, without, why.empty() ? "" : " (" + why + ")");
}


anybit::Config load_config(const std::string& path, const std::vector<std::string>& rules) {
  anybit::Config c;
  if (!path.empty()) c = anybit::parse_config_file(path);
  for (const auto& r : rules) c.rules.push_back(anybit::parse_rule_string(r));
  if (c.rules.empty()) throw anybit::Error("no rules: give --config FILE or --rule key=value,...");
  return c;
}

void print_plan(const std::vector<anybit::PointReport>& pts, bool show_params) {
  fmt::print("{:<42} {:<10} {:<7} {:<22} {:<16} {}\n", "point", "role", "kind", "spec", "calibrator",
             show_params ? "parameters" : "");
  for (const auto& r : pts) {
    const bool fl = r.assignment.spec.is_float();
    // an autoN spec: before calibration "auto8 (sign at calib.)", after it "uint8 (auto8)"
    std::string spec = r.assignment.spec.str();
    if (r.assignment.spec.auto_sign) spec += " (sign: calib.)";
    if (!r.auto_spec.empty()) spec += " (" + r.auto_spec + ")";
    fmt::print("{:<42} {:<10} {:<7} {:<22} {:<16} {}\n", r.point.name, anybit::role_name(r.point.role),
               r.point.kind, spec, fl ? "" : r.assignment.calibrator, show_params ? r.params : "");
  }
}

void print_eval(const std::string& what, const anybit::EvalResult& r) {
  fmt::print("{}: top-1 {:.2f}%  top-5 {:.2f}%  loss {:.4f}", what, r.top1, r.top5, r.loss);
  if (r.agreement >= 0) fmt::print("  agreement with float {:.2f}%", r.agreement);
  const bool onednn = r.runtime == "onednn";
  fmt::print("  ({} samples, {:.1f} s, {}{})\n", r.samples, r.seconds, r.runtime,
             onednn && !r.runtime_note.empty() ? ": " + r.runtime_note : "");
  if (!onednn && !r.runtime_note.empty()) fmt::print("  not on oneDNN: {}\n", r.runtime_note);
  if (!r.scores.empty()) fmt::print("  class scores: {}\n", r.scores);
}





std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, ',');) {
    char* end = nullptr;
    const long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end || v <= 0)
      throw anybit::Error("--input-shape: '" + text + "' is not a list of positive sizes such as 1,28,28");
    shape.push_back(v);
  }
  if (shape.empty()) throw anybit::Error("--input-shape: empty");
  return shape;
}




std::string default_model() { return std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"; }

void print_row(const anybit::SweepRow& r, double float_top1) {
  const std::string bits = r.method == "float"    ? "float"
                           : !r.format.empty()     ? r.format
                                                   : fmt::format("W{}A{}", r.wbits, r.abits);
  fmt::print("{:<22} {:<10} {:<12} {:>7.2f}% {:>8} {:>10} {:>8.1f}\n", r.model, r.method, bits, r.top1,
             r.method == "float" ? "" : fmt::format("{:+.2f}", r.top1 - float_top1),
             r.agreement >= 0 ? fmt::format("{:.2f}%", r.agreement) : "", r.seconds);
}




// `finetune`: one process, or with --nproc N a launcher of N data-parallel workers (this
// program again, with RANK/WORLD_SIZE in the environment; see launch.h). A worker started by
// a launcher (ours, torchrun, or by hand on several hosts) finds its rank in the
// environment; rank 0 prints, writes the output and evaluates.

}  // namespace

int cmd_inspect(const std::string& model, bool as_json) {
  anybit::ModelGraph g = anybit::load_model(model);
  if (as_json) {
    json pts = json::array();
    for (const anybit::PointDesc& p : g.points) pts.push_back(p);
    json j = {{"points", pts},
              {"uncovered", g.uncovered},
              {"coverage", {{"linear_algebra_ops", g.linear_algebra_ops},
                            {"with_points", g.linear_algebra_ops - static_cast<int>(g.uncovered.size())},
                            {"without_points", g.uncovered.size()}}}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  fmt::print("{:<4} {:<42} {:<10} {:<7} {:<16} {:>10}\n", "#", "point", "role", "kind", "shape", "params");
  int64_t params = 0;
  for (const auto& p : g.points) {
    fmt::print("{:<4} {:<42} {:<10} {:<7} {:<16} {:>10}\n", p.index, p.name, anybit::role_name(p.role),
               p.kind, shape_str(p.shape), p.numel ? std::to_string(p.numel) : "");
    params += p.numel;
  }
  fmt::print("{} points, {} quantizable parameters\n", g.points.size(), params);
  for (const auto& u : g.uncovered)
    fmt::print("no points: {}: {}\n", u.where(), u.reason);
  fmt::print("{}\n", coverage_line(g));
  return 0;
}

bool progress_on(const Common& c) { return !c.no_progress && isatty(2); }

anybit::EvalOptions eval_options(const Common& c) {
  anybit::EvalOptions o;
  o.batch_size = c.eval_batch_size;
  o.progress = progress_on(c);
  o.freeze = !c.no_freeze;
  o.fused = !c.no_fuse;
  o.device = anybit::parse_device(c.device);
  o.scores = c.scores;
  return o;
}

int cmd_quantize(const Common& c) {
  anybit::Config cfg = load_config(c.config, c.rules);
  anybit::PrepareOptions po;
  po.fold_bn = c.fold_bn;
  po.cle = c.cle;
  po.cle_relu6 = c.cle_relu6;
  auto report_prepared = [&](const anybit::PreparedModel& prepared) {
    if ((c.cle || c.cle_relu6) && !c.json)
      fmt::print(stderr, "cross-layer equalization: {} layer pairs{}\n", prepared.cle.pairs,
                 prepared.cle.relu6_replaced ? fmt::format(", {} ReLU6 turned into ReLU", prepared.cle.relu6_replaced)
                                             : "");
    for (const auto& u : prepared.uncovered)
      fmt::print(stderr, "warning: {} has no points and stays float: {}\n", u.where(), u.reason);
  };
  if (c.dry_run) {
    anybit::PreparedModel prepared = anybit::prepare_model(c.model, po);
    report_prepared(prepared);
    auto pts = anybit::plan(prepared.graph, cfg);
    if (c.json) {
      std::cout << json(pts).dump(2) << "\n";
    } else {
      print_plan(pts, false);
    }
    return 0;
  }
  if (c.out.empty()) throw anybit::Error("quantize needs -o OUT.pt (or --dry-run)");
  std::unique_ptr<anybit::DataSource> calib;
  const std::string calib_spec = c.calib_data.empty() ? c.data : c.calib_data;
  if (!calib_spec.empty()) calib = anybit::open_data(calib_spec);
  anybit::QuantizeOptions opt;
  opt.calib_batches = c.calib_batches;
  opt.batch_size = c.batch_size;
  opt.portable = c.portable;
  opt.progress = progress_on(c);
  opt.adaround_iterations = c.adaround;
  opt.brecq_iterations = c.brecq;
  opt.gptq = c.gptq;
  if (c.calib_samples > 0) {
    // the samples calibration, AdaRound, BRECQ and GPTQ see, whatever the batch size
    opt.calib_batches = (c.calib_samples + opt.batch_size - 1) / opt.batch_size;
    opt.adaround_samples = opt.brecq_samples = opt.gptq_samples = c.calib_samples;
  }
  opt.brecq_checkpoint_dir = c.brecq_checkpoint;
  opt.brecq_resume = c.brecq_resume;
  if (c.brecq_resume && c.brecq_checkpoint.empty()) throw anybit::Error("--resume needs --checkpoint-dir (where the BRECQ run wrote its blocks)");
  if (!c.brecq_checkpoint.empty() && c.brecq == 0) throw anybit::Error("--checkpoint-dir keeps BRECQ's blocks: it needs --brecq N");
  if (c.gptq_quantized_target && !c.gptq) throw anybit::Error("--gptq-quantized-target chooses GPTQ's objective: it needs --gptq");
  opt.gptq_float_target = !c.gptq_quantized_target;
  opt.bias_correction = c.bias_correction;
  opt.int32_bias = c.int32_bias;
  opt.strict = c.strict;
  opt.device = anybit::parse_device(c.device);
  std::unique_ptr<anybit::DataSource> eval_data;
  if (!c.eval_data.empty()) eval_data = anybit::open_data(c.eval_data);  // fail before working
  anybit::QuantizedModel run = anybit::quantize_model(c.model, cfg, calib.get(), po, opt, c.out, report_prepared);
  anybit::QuantizeResult& q = run.result;
  for (const std::string& w : q.clipping) fmt::print(stderr, "warning: {}\n", w);
  if (!c.json) {
    for (const auto& [layer, nearest, learned] : q.gptq)
      fmt::print(stderr, "gptq {:<32} output error {:.4g} (nearest rounding: {:.4g})\n", layer, learned, nearest);
    for (const auto& [block, nearest, learned, seconds] : q.brecq)
      fmt::print(stderr, "brecq {:<24} block error {:.4g} (nearest rounding, calibrated steps: {:.4g}){}\n", block,
                 learned, nearest, seconds > 0 ? fmt::format(", {:.1f} ms an iteration", seconds * 1e3) : "");
  }
  for (const auto& why : q.gptq_skipped) fmt::print(stderr, "warning: gptq kept nearest rounding for {}\n", why);
  if (!q.integer_inputs.empty() && !c.json)
    fmt::print(stderr, "note: {}\n", anybit::integer_inputs_note(q.integer_inputs));
  if (!q.float_layer_inputs.empty() && !c.json)
    fmt::print(stderr, "note: {}\n", anybit::float_layer_inputs_note(q.float_layer_inputs));
  json j = json::object();
  if (eval_data) {
    anybit::EvalResult r = anybit::evaluate(q.model.module, *eval_data, eval_options(c));
    j["eval"] = json(r);
    if (!c.json) print_eval(c.out, r);
  }
  if (c.json) {
    json pts = json::array();
    for (const auto& r : q.points) {
      if (r.assignment.spec.is_float()) continue;
      pts.push_back(r);
    }
    j["output"] = c.out;
    j["points"] = pts;
    j["clipping"] = q.clipping;
    j["float_layer_inputs"] = q.float_layer_inputs;
    j["integer_inputs"] = q.integer_inputs;
    std::cout << j.dump(2) << "\n";
  } else {
    if (!eval_data) print_plan(q.points, true);
    fmt::print("wrote {}\n", c.out);
  }
  return 0;
}

int cmd_eval(const Common& c, const std::string& reference) {
  if (c.data.empty()) throw anybit::Error("eval needs --data SPEC");
  torch::jit::Module m = anybit::load_module(c.model);
  std::unique_ptr<torch::jit::Module> ref;
  if (!reference.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(reference));
  auto data = anybit::open_data(c.data);
  anybit::EvalResult r = anybit::evaluate(m, *data, eval_options(c), ref.get());
  if (c.json) {
    json j = json(r);
    j["model"] = c.model;
    j["data"] = c.data;
    std::cout << j.dump(2) << "\n";
  } else {
    print_eval(c.model, r);
  }
  return 0;
}

int cmd_export(const Common& c, const std::string& input_shape) {
  if (c.out.empty()) throw anybit::Error("export needs -o DIR");
  torch::jit::Module m = anybit::load_module(c.model);
  anybit::ExportOptions o;
  if (!input_shape.empty()) o.input_shape = parse_shape(input_shape);
  o.source = c.model;
  anybit::ExportResult r = anybit::export_integer_model(m, o);
  anybit::save_integer_model_atomic(r.model, c.out);
  if (c.json) {
    json j = r;
    j["model"] = c.model;
    j["output"] = c.out;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::map<std::string, int> kinds;
  for (const auto& op : r.model.ops) kinds[anybit::intsim::op_kind_name(op.kind)]++;
  std::string summary;
  for (const auto& [k, n] : kinds) summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + k;
  const auto& in = r.model.inputs[0];
  fmt::print("wrote {}: {} ops ({}); input {} [{}] scale {:.6g} zero point {}\n", c.out, r.model.ops.size(), summary,
             in.name, shape_str(in.shape), in.q.scale, in.q.zero_point);
  for (const auto& n : r.notes) fmt::print("note: {}\n", n);
  return 0;
}

int cmd_intsim(const Common& c, const IntsimFlags& f) {
  if (c.data.empty()) throw anybit::Error("intsim needs --data SPEC");
  anybit::intsim::Model m;
  anybit::IntegerEvalOptions o;
  m = anybit::intsim::load_model(c.model);
  anybit::intsim::EngineSpec es;
  es.acc_bits = f.acc_bits;
  es.overflow = f.overflow;
  es.threads = c.threads;  // 0: one per hardware thread
  es.reference_kernels = f.reference_kernels;
  es.per_dot_product = f.per_dot;
  o.engine = anybit::intsim::engine_options(es);  // the MAC model is set below, per level
  o.batch_size = c.eval_batch_size;
  o.progress = progress_on(c);
  std::unique_ptr<anybit::DataSource> calib;
  if (!f.calib_data.empty()) calib = anybit::open_data(f.calib_data);
  o.calib_data = calib.get();
  o.calib_samples = f.calib_samples;
  const std::vector<std::string> levels = anybit::intsim::expand_mac_levels(f.mac, nullptr, nullptr);
  if (levels.size() > 1 || f.seeds > 1 || !f.out.empty()) {
    // a noise sweep (docs/noise.md)
    if (!f.reference.empty()) throw anybit::Error("--reference compares one run; it does not go with a noise sweep");
    if (f.resume && f.out.empty()) throw anybit::Error("--resume needs -o DIR (the sweep's directory)");
    anybit::NoiseSweepOptions so;
    so.mac = f.mac;
    so.seeds = f.seeds;
    so.out_dir = f.out;
    so.resume = f.resume;
    so.progress = o.progress;
    so.eval = o;
    so.model_name = c.model;
    so.data_name = c.data;
    auto data = anybit::open_data(c.data);
    const anybit::NoiseSweepResult r = anybit::run_noise_sweep(m, *data, so);
    if (c.json) {
      std::cout << anybit::noise_json(r, so);
      return 0;
    }
    fmt::print("{}: {} on {} ({} seed(s) per level, {}-bit {} accumulator)\n{}", c.model, f.mac, c.data, f.seeds,
               f.acc_bits, f.overflow, anybit::format_noise_table(r));
    if (!f.out.empty()) fmt::print("wrote {0}/noise.csv, {0}/noise.json, {0}/noise.svg\n", f.out);
    return 0;
  }
  if (f.resume) throw anybit::Error("--resume continues a noise sweep (-o DIR with several levels or --seeds)");
  o.engine.mac = anybit::intsim::parse_mac_model(levels[0]);
  std::unique_ptr<torch::jit::Module> ref;
  if (!f.reference.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(f.reference));
  auto data = anybit::open_data(c.data);
  anybit::IntegerEvalResult r = anybit::evaluate_integer(m, *data, o, ref.get());
  if (c.json) {
    json j = r;
    j["model"] = c.model;
    j["data"] = c.data;
    j["accumulator"] = {{"bits", f.acc_bits}, {"overflow", f.overflow}};
    j["mac"] = o.engine.mac ? o.engine.mac->describe() : "exact";
    if (ref) j["reference"] = f.reference;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  fmt::print("{}: top-1 {:.2f}%  top-5 {:.2f}%  ({} samples, {:.1f} s; {}-bit {} accumulator, MAC {})\n", c.model,
             r.top1, r.top5, r.samples, r.seconds, f.acc_bits, f.overflow, o.engine.mac ? o.engine.mac->describe() : "exact");
  if (ref)
    fmt::print("against {}: argmax agreement {:.2f}%; output integers equal {:.2f}%, one step apart {:.2f}%, "
               "further {:.2f}% (max {} steps)\n",
               f.reference, r.agreement, r.equal, r.one_step, r.more, r.max_steps);
  if (ref && !r.layer_agreement.empty()) {
    fmt::print("quantized tensors against the reference's, first batch:\n{:<32} {:>8} {:>9} {:>10}\n", "point", "equal",
               "one step", "max steps");
    for (const auto& a : r.layer_agreement)
      fmt::print("{:<32} {:>7.2f}% {:>8.2f}% {:>10}\n", a.point, a.equal, a.one_step, a.max_steps);
  }
  std::cout << anybit::intsim::format_stats(r.layers);
  return 0;
}

int run_sweep_cli(anybit::SweepOptions o) {
  std::map<std::string, double> float_acc;
  bool header = false;  // printed with the first row: a sweep that fails its checks prints only the error
  auto rows = anybit::run_sweep(o, [&](const anybit::SweepRow& r) {
    if (!header)
      fmt::print("{:<22} {:<10} {:<12} {:>8} {:>8} {:>10} {:>8}\n", "model", "method", "bits", "top-1", "drop",
                 "agreement", "seconds");
    header = true;
    if (r.method == "float") float_acc[r.model] = r.top1;
    print_row(r, float_acc[r.model]);
    std::fflush(stdout);
  });
  // Wall time per method over the whole sweep (quantize + calibrate + evaluate of its rows)
  std::map<std::string, std::pair<double, int>> per_method;
  for (const auto& r : rows)
    if (r.method != "float") per_method[r.method].first += r.seconds, per_method[r.method].second++;
  std::string times;
  for (const auto& [m, t] : per_method) times += fmt::format("{}{} {:.1f} s ({} pairs)", times.empty() ? "" : ", ", m, t.first, t.second);
  if (!times.empty()) fmt::print("time per method: {}\n", times);
  fmt::print("wrote {0}/results.csv, {0}/results.json, {0}/accuracy.svg, {0}/configs/\n", o.out_dir);
  return 0;
}

int cmd_search(anybit::SearchOptions o) {
  bool header = false;
  double float_top1 = 0;
  const auto res = anybit::run_search(o, [&](const anybit::SearchRow& r) {
    if (!header)
      fmt::print("{:<8} {:<28} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>8}\n", "kind", "config", "avg-wbits", "KiB",
                 "bops", "top-1", "drop", "agreement", "seconds");
    header = true;
    if (r.kind == "float") float_top1 = r.top1;
    const bool fl = r.kind == "float";
    fmt::print("{:<8} {:<28} {:>9} {:>9} {:>8} {:>7.2f}% {:>8} {:>10} {:>8.1f}\n", r.kind, r.label,
               fl ? "" : fmt::format("{:.3f}", r.avg_wbits), fl ? "" : fmt::format("{:.2f}", r.size_bytes / 1024),
               fl ? "" : fmt::format("{:.4f}", r.bops), r.top1, fl ? "" : fmt::format("{:+.2f}", r.top1 - float_top1),
               r.agreement >= 0 ? fmt::format("{:.2f}%", r.agreement) : "", r.seconds);
    std::fflush(stdout);
  });
  fmt::print("\nwidths at --budget {} (metric {}, {}):\n", res.budget.text, o.metric,
             res.exact ? "exact solve" : "solved on a rounded cost grid");
  fmt::print("{:<32} {:>9} {:>11} {:<28} {:>3} {:>3} {:>12}\n", "layer", "params", "MACs", "input", "W", "A",
             "sensitivity");
  for (const auto& l : res.layers)
    fmt::print("{:<32} {:>9} {:>11} {:<28} {:>3} {:>3} {:>12.4g}\n", l.point, l.params, l.macs,
               l.input_point.empty() ? "(float)" : l.input_point, l.wbits, l.abits == 32 ? "f" : std::to_string(l.abits),
               l.loss);
  fmt::print("sensitivity: {} runs, {:.1f} s; solve {:.3f} s; whole search {:.1f} s (one float evaluation: {:.1f} s)\n",
             res.sensitivity_runs, res.sensitivity_seconds, res.solve_seconds, res.total_seconds,
             res.float_eval_seconds);
  fmt::print("wrote {0}/config.yaml, {0}/configs/, {0}/sensitivity.json, {0}/pareto.csv, {0}/pareto.json, "
             "{0}/pareto.svg\nreproduce: {1}\n",
             o.out_dir, res.command);
  return 0;
}

int cmd_demo(const Common& c) {
  anybit::SweepOptions o;
  o.models = {c.model.empty() ? default_model() : c.model};
  for (int b = 8; b >= 2; --b) o.pairs.push_back({b, b});
  o.methods = {"mse"};
  o.calib_data = c.data.empty() ? "fmnist::train" : c.data;  // the data library knows where fmnist lives
  o.eval_data = c.eval_data.empty() ? "fmnist::test" : c.eval_data;
  o.calib_batches = c.calib_batches;
  o.out_dir = c.out.empty() ? "anybit-demo" : c.out;
  o.resume = true;  // a demo run again continues or reprints what it has
  o.progress = progress_on(c);
  fmt::print("anybit demo: post-training quantization of {} (calibration {}, evaluation {})\n", o.models[0],
             o.calib_data, o.eval_data);
  fmt::print("BatchNorm folded; weights int-b per channel (MSE clip); activations b bits after ReLU/add/pool "
             "and the input, their sign chosen by calibration (auto-b; MSE calibration on {} images)\n\n",
             o.calib_batches * o.batch_size);
  return run_sweep_cli(o);
}

int cmd_finetune(const Common& c, anybit::FinetuneOptions ft, const std::string& teacher, int nproc,
                 const std::vector<std::string>& args) {
  ft.distributed = anybit::distributed_from_environment();
  ft.device = anybit::parse_device(c.device);
  if (nproc > 1 && !ft.device.is_cpu())
    throw anybit::Error("--nproc trains in processes on the CPU; --device " + c.device + " trains in one process");
  if (nproc > 1 && ft.distributed.world_size == 1) {
    if (nproc > ft.batch_size)
      throw anybit::Error("--nproc " + std::to_string(nproc) + " is larger than the batch size " +
                          std::to_string(ft.batch_size) + ": every process needs a part of each batch");
    return anybit_cli::launch_local(nproc, args);
  }
  if (nproc > 1 && nproc != ft.distributed.world_size)
    throw anybit::Error("--nproc " + std::to_string(nproc) + " differs from WORLD_SIZE=" +
                        std::to_string(ft.distributed.world_size) + " in the environment");
  if (!ft.distributed.store_file.empty() && ft.distributed.gloo_host.empty()) ft.distributed.gloo_host = "127.0.0.1";
  const bool root = ft.distributed.rank == 0;
  torch::jit::Module m = anybit::load_module(c.model);
  auto train = anybit::open_data(c.data);
  std::unique_ptr<anybit::DataSource> test;
  if (!c.eval_data.empty() && root) test = anybit::open_data(c.eval_data);
  ft.progress = progress_on(c);
  if (!teacher.empty()) ft.teacher = anybit::load_module(teacher);
  const auto reports = anybit::finetune(m, *train, ft);
  if (!root) return 0;
  for (const auto& r : reports)
    fmt::print("epoch {}: loss {:.4f}{}  train top-1 {:.2f}%  ({} steps, {:.1f} s){}\n", r.epoch, r.train_loss,
               ft.teacher ? fmt::format(" (kd {:.4f})", r.train_kd_loss) : "", r.train_top1, r.steps, r.seconds,
               r.bn_folded ? fmt::format("  [BatchNorm frozen and folded: {} layers]", r.bn_folded) : "");
  anybit::save_module(m, c.out);
  if (test) print_eval(c.out, anybit::evaluate(m, *test, eval_options(c)));
  fmt::print("wrote {}\n", c.out);
  return 0;
}

}  // namespace anybit_cli
