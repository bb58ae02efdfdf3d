// The bit sweep; see sweep.h.
#include "anybit/study/sweep.h"

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "anybit/api/pipeline.h"
#include "anybit/api/quantize.h"
#include "anybit/base/npy.h"
#include "anybit/data/file_read.h"
#include "anybit/data/progress.h"
#include "anybit/quant/device.h"

namespace anybit {

using nlohmann::json;

std::vector<int> parse_bits_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      int b = std::stoi(item, &used);
      if (used != item.size() || b < 2 || b > 16) throw std::invalid_argument("x");
      out.push_back(b);
    } catch (const std::exception&) {
      throw Error(flag + ": '" + item + "' is not a bit width in 2..16 (expected a list such as 8,6,4)");
    }
  }
  if (out.empty()) throw Error(flag + ": empty list of bit widths");
  return out;
}

std::string sweep_config(const std::string& method, int w, int a, bool first_last_8bit) {
  std::string act_cal;
  if (method == "minmax") act_cal = "minmax";
  else if (method == "mse" || method == "adaround" || method == "brecq" || method == "gptq") act_cal = "mse";
  else if (method == "percentile") act_cal = "percentile:99.99";
  else if (method == "entropy") act_cal = "entropy";
  else throw Error("sweep: unknown method '" + method + "' (expected minmax, mse, percentile, entropy, adaround, brecq, gptq)");
  const std::string wcal = method == "mse" || method == "adaround" || method == "brecq" || method == "gptq" ? "mse" : "minmax";
  std::string c = fmt::format(
      "weight_calibrator: {0}\n"
      "calibrator: {1}\n"
      "rules:\n"
      "  - {{kind: [conv, linear], role: weight, spec: 'int{2}:per_channel'}}\n"
      "  - {{role: input, spec: 'auto{3}', optional: true}}\n"
      "  - {{kind: [relu, pool], spec: 'auto{3}', optional: true}}\n"
      "  - {{role: activation, feeds: [conv, linear, matmul], spec: 'auto{3}', optional: true}}\n"
      "  - {{kind: add, spec: 'int{3}', optional: true}}\n",
      wcal, act_cal, w, a);
  if (first_last_8bit)
    c += "  - {kind: conv, role: weight, position: first, spec: 'int8:per_channel'}\n"
         "  - {kind: linear, role: weight, position: last, spec: 'int8:per_channel', optional: true}\n"
         "  - {role: input, spec: auto8, optional: true}\n"
         // the data the first conv reads: the input, or what the model made of it first (an
         // input normalized inside forward: conv1:in0)
         "  - {role: [input, activation], feeds: conv, position: first, spec: auto8, optional: true}\n";
  return c;
}

std::string sweep_format_config(const std::string& method, const std::string& format, bool first_last_8bit) {
  QuantSpec spec;
  try {
    spec = parse_spec(format);
  } catch (const Error& e) {
    throw Error(std::string("--formats: ") + e.what());
  }
  if (spec.is_float()) throw Error("--formats: 'float' is the baseline every sweep evaluates; give a format to sweep");
  const bool plain_int = spec.scheme == Scheme::kInt && spec.str() == "int" + std::to_string(spec.bits);
  if (plain_int) return sweep_config(method, spec.bits, spec.bits, first_last_8bit);
  if (method == "adaround" || method == "brecq" || method == "gptq")
    throw Error("sweep: " + method + " learns the rounding of integer weights; it does not apply to " + format +
                " (use minmax, mse, percentile or entropy)");
  sweep_config(method, 8, 8, false);  // the method is known
  std::string wcal = method == "mse" ? "mse" : "minmax";
  std::string acal = method == "percentile" ? "percentile:99.99" : method;
  if (spec.scheme == Scheme::kNvfp4) acal = "minmax";  // its tensor scale is a maximum
  else if (acal == "entropy" && !spec.is_uniform()) acal = "mse";  // entropy searches integer grids
  const std::string wspec = spec.is_block() || spec.granularity != Granularity::kPerTensor
                                ? spec.str()
                                : spec.str() + ":per_channel";
  std::string c = fmt::format(
      "weight_calibrator: {0}\n"
      "calibrator: {1}\n"
      "rules:\n"
      "  - {{kind: [conv, linear], role: weight, spec: '{2}'}}\n"
      "  - {{role: input, spec: '{3}', optional: true}}\n"
      "  - {{kind: [relu, pool, add], spec: '{3}', optional: true}}\n"
      "  - {{role: activation, feeds: [conv, linear, matmul], spec: '{3}', optional: true}}\n",
      wcal, acal, wspec, spec.str());
  if (first_last_8bit)
    c += "  - {kind: conv, role: weight, position: first, spec: 'int8:per_channel'}\n"
         "  - {kind: linear, role: weight, position: last, spec: 'int8:per_channel', optional: true}\n"
         "  - {role: input, spec: auto8, optional: true}\n"
         // the data the first conv reads: the input, or what the model made of it first (an
         // input normalized inside forward: conv1:in0)
         "  - {role: [input, activation], feeds: conv, position: first, spec: auto8, optional: true}\n";
  return c;
}

void set_method_options(const std::string& method, int adaround_iterations, int brecq_iterations,
                        QuantizeOptions* qo) {
  if (method == "adaround") qo->adaround_iterations = adaround_iterations;
  qo->gptq = method == "gptq";
  if (method == "brecq") {
    qo->brecq_iterations = brecq_iterations;
    qo->brecq_samples = std::min(qo->calib_batches * qo->batch_size, qo->brecq_samples);
  }
}

namespace {

std::string key_of(const std::string& model, const std::string& method, int w, int a, const std::string& format) {
  return model + "|" + method + "|" + std::to_string(w) + "|" + std::to_string(a) + "|" + format;
}

std::string key_of(const SweepRow& r) { return key_of(r.model, r.method, r.wbits, r.abits, r.format); }


SweepRow row_from(const json& j) {
  SweepRow r;
  r.model = j.at("model").get<std::string>();
  r.method = j.at("method").get<std::string>();
  r.wbits = j.at("wbits").get<int>();
  r.abits = j.at("abits").get<int>();
  r.top1 = j.at("top1").get<double>();
  r.top5 = j.at("top5").get<double>();
  r.seconds = j.at("seconds").get<double>();
  r.agreement = j.contains("agreement") ? j.at("agreement").get<double>() : -1;
  r.format = j.contains("format") ? j.at("format").get<std::string>() : "";
  return r;
}



std::string base_name(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

}  // namespace

std::vector<SweepRow> run_sweep(const SweepOptions& o, const std::function<void(const SweepRow&)>& on_row) {
  if (o.models.empty()) throw Error("sweep: no model given");
  if (o.out_dir.empty()) throw Error("sweep: no output directory (-o DIR)");
  if (!o.formats.empty() && !o.pairs.empty())
    throw Error("sweep: give formats (--formats) or bit pairs (--weights/--acts, --pairs), not both");
  // each (method, format or pair): its config, validated before any work
  struct Run {
    std::string method, format;
    int w, a;
    std::string config;
  };
  std::vector<Run> runs;
  const c10::Device device = parse_device(o.device);  // refuses an unusable device before any work
  for (const auto& m : o.methods) {
    sweep_config(m, 8, 8, false);
    for (const auto& f : o.formats) {
      std::string config = sweep_format_config(m, f, o.first_last_8bit);  // names the flag on a bad format
      const QuantSpec spec = parse_spec(f);
      runs.push_back({m, spec.str(), spec.bits, spec.bits, std::move(config)});
    }
    for (const auto& [w, a] : o.pairs) runs.push_back({m, "", w, a, sweep_config(m, w, a, o.first_last_8bit)});
  }
  ::mkdir(o.out_dir.c_str(), 0755);
  // each point's config, as `anybit quantize -c` takes it
  ::mkdir((o.out_dir + "/configs").c_str(), 0755);
  for (const Run& run : runs) {
    std::string label = run.format.empty() ? fmt::format("W{}A{}", run.w, run.a) : run.format;
    std::replace(label.begin(), label.end(), ':', '_');
    write_text_atomic(o.out_dir + "/configs/" + run.method + "_" + label + ".yaml",
                      fmt::format("# anybit sweep: method {}, {}\n", run.method,
                                  run.format.empty() ? fmt::format("W{}A{}", run.w, run.a) : run.format) +
                          run.config);
  }
  const std::string log = o.out_dir + "/results.jsonl";
  std::vector<SweepRow> rows;
  std::set<std::string> done;
  if (data::path_exists(log)) {
    if (!o.resume)
      throw Error(log + ": a sweep already wrote here; pass --resume to continue it or choose another -o");
    std::ifstream f(log);
    std::string line;
    while (std::getline(f, line)) {
      try {
        SweepRow r = row_from(json::parse(line));
        done.insert(key_of(r));
        rows.push_back(r);
      } catch (const std::exception&) {
        // a line cut by a kill: that run is redone
      }
    }
  }
  auto append = [&](const SweepRow& r) {
    std::ofstream f(log, std::ios::app);
    f << json(r).dump() << "\n";
    f.flush();
    if (!f) throw Error(log + ": cannot append");
    rows.push_back(r);
    done.insert(key_of(r));
    if (on_row) on_row(r);
  };
  auto calib = open_data(o.calib_data);
  auto test = open_data(o.eval_data);
  const int64_t total = static_cast<int64_t>(o.models.size() * (1 + runs.size()));
  data::ProgressBar bar("sweep", total, o.progress);
  int64_t step = 0;
  EvalOptions eo;
  eo.progress = false;
  eo.device = device;
  eo.scores = o.scores;
  for (const auto& model : o.models) {
    const std::string name = base_name(model);
    torch::jit::Module fm = load_module(model);
    if (!done.count(key_of(name, "float", 32, 32, ""))) {
      EvalResult f = evaluate(fm, *test, eo);
      SweepRow r{name, "float", 32, 32, "", f.top1, f.top5, -1, f.seconds};
      append(r);
    } else if (on_row) {
      for (const auto& r : rows)
        if (r.model == name && r.method == "float") on_row(r);
    }
    bar.update(++step);
    for (const Run& run : runs) {
      const std::string& method = run.method;
      const std::string k = key_of(name, method, run.w, run.a, run.format);
      if (done.count(k)) {
        if (on_row)
          for (const auto& r : rows)
            if (key_of(r) == k) on_row(r);
        bar.update(++step);
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      PrepareOptions po;
      po.fold_bn = o.fold_bn;
      QuantizeOptions qo;
      qo.calib_batches = o.calib_batches;
      qo.batch_size = o.batch_size;
      qo.progress = false;
      qo.device = eo.device;
      set_method_options(method, o.adaround_iterations, o.brecq_iterations, &qo);
      QuantizedModel q = quantize_model(model, parse_config_string(run.config, "sweep " + method), calib.get(), po, qo);
      EvalResult e = evaluate(q.result.model.module, *test, eo, &fm);
      // seconds: the whole pair (load, fold, quantize + calibrate, evaluate)
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      append(SweepRow{name, method, run.w, run.a, run.format, e.top1, e.top5, e.agreement, seconds});
      bar.update(++step);
    }
  }
  bar.finish();
  write_sweep_reports(o.out_dir, rows);
  return rows;
}

std::string svg_accuracy_frame(int W, int H, int L, int T, double pw, double ph, const std::string& title) {
  std::string svg = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='12'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<text x='{}' y='22' font-size='15'>{}</text>\n",
      W, H, L, title);
  for (int t = 0; t <= 100; t += 20) {
    const double y = T + ph * (1 - t / 100.0);
    svg += fmt::format("<line x1='{}' y1='{:.1f}' x2='{}' y2='{:.1f}' stroke='#ddd'/><text x='{}' y='{:.1f}' "
                       "text-anchor='end'>{}%</text>\n",
                       L, y, L + pw, y, L - 6, y + 4, t);
  }
  return svg;
}

void write_sweep_reports(const std::string& dir, const std::vector<SweepRow>& rows) {
  std::string csv = "model,method,format,wbits,abits,top1,top5,agreement,seconds\n";
  json all = json::array();
  for (const auto& r : rows) {
    csv += fmt::format("{},{},{},{},{},{:.2f},{:.2f},{},{:.2f}\n", r.model, r.method, r.format, r.wbits, r.abits,
                       r.top1, r.top5, r.agreement >= 0 ? fmt::format("{:.2f}", r.agreement) : "", r.seconds);
    all.push_back(json(r));
  }
  write_text_atomic(dir + "/results.csv", csv);
  write_text_atomic(dir + "/results.json", all.dump(2) + "\n");

  // SVG: accuracy against the bit pair or format, one line per (model, method), float as a
  // dashed line; the x axis runs from the widest to the narrowest (formats: in bits, then as given)
  auto label = [](const SweepRow& r) { return r.format.empty() ? fmt::format("W{}A{}", r.wbits, r.abits) : r.format; };
  std::vector<std::pair<std::string, int>> pairs;  // (label, wbits + abits)
  for (const auto& r : rows)
    if (r.method != "float" && std::find_if(pairs.begin(), pairs.end(), [&](const auto& p) {
                                 return p.first == label(r);
                               }) == pairs.end())
      pairs.push_back({label(r), r.wbits + r.abits});
  std::stable_sort(pairs.begin(), pairs.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  const int W = 720, H = 440, L = 70, R = 200, T = 40, B = 60;
  const double pw = W - L - R, ph = H - T - B;
  auto X = [&](size_t i) { return L + (pairs.size() > 1 ? pw * i / (pairs.size() - 1) : pw / 2); };
  auto Y = [&](double acc) { return T + ph * (1 - acc / 100.0); };
  std::string svg = svg_accuracy_frame(W, H, L, T, pw, ph, "top-1 accuracy after post-training quantization");
  for (size_t i = 0; i < pairs.size(); ++i)
    svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{}</text>\n", X(i), T + ph + 20, pairs[i].first);
  svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>bits (weights, activations) or format</text>\n",
                     L + pw / 2, H - 15);
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
  std::vector<std::pair<std::string, std::string>> series;
  for (const auto& r : rows)
    if (std::find(series.begin(), series.end(), std::make_pair(r.model, r.method)) == series.end())
      series.push_back({r.model, r.method});
  int si = 0, legend = 0;
  for (const auto& [model, method] : series) {
    const char* col = colors[si++ % 7];
    std::string pts;
    for (size_t i = 0; i < pairs.size(); ++i)
      for (const auto& r : rows)
        if (r.model == model && r.method == method && label(r) == pairs[i].first)
          pts += fmt::format("{:.1f},{:.1f} ", X(i), Y(r.top1));
    if (method == "float") {
      for (const auto& r : rows)
        if (r.model == model && r.method == "float")
          svg += fmt::format("<line x1='{}' y1='{:.1f}' x2='{}' y2='{:.1f}' stroke='{}' stroke-dasharray='5,4'/>\n", L,
                             Y(r.top1), L + pw, Y(r.top1), col);
    } else {
      svg += fmt::format("<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>\n", col, pts);
    }
    svg += fmt::format("<line x1='{}' y1='{}' x2='{}' y2='{}' stroke='{}' stroke-width='2'{}/>"
                       "<text x='{}' y='{}'>{} {}</text>\n",
                       L + pw + 15, T + 10 + 18 * legend, L + pw + 35, T + 10 + 18 * legend, col,
                       method == "float" ? " stroke-dasharray='5,4'" : "", L + pw + 40, T + 14 + 18 * legend, model,
                       method);
    ++legend;
  }
  svg += "</svg>\n";
  write_text_atomic(dir + "/accuracy.svg", svg);
}

void to_json(nlohmann::json& j, const SweepRow& r) {
  j = {{"model", r.model}, {"method", r.method}, {"wbits", r.wbits}, {"abits", r.abits},
       {"top1", r.top1},   {"top5", r.top5},     {"seconds", r.seconds}};
  if (!r.format.empty()) j["format"] = r.format;
  if (r.agreement >= 0) j["agreement"] = r.agreement;
}

}  // namespace anybit
