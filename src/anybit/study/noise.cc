// Noise sweeps on the integer engine (noise.h): the exact run, then every level and seed,
// each run appended to results.jsonl as it finishes (so --resume can continue), then the
// per-level statistics as CSV, JSON and an SVG plot.
#include "anybit/study/noise.h"

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "anybit/api/quantize.h"
#include "anybit/base/npy.h"
#include "anybit/data/progress.h"
#include "anybit/intsim/mac.h"
#include "anybit/study/sweep.h"

namespace anybit {
namespace {

using json = nlohmann::json;

// The spec's own seed (the first of the sweep's seeds), 0 without one.
uint64_t spec_seed(const std::string& spec) { return intsim::parse_mac_model(spec)->seed().value_or(0); }

// The run's identity in results.jsonl, with what must agree for --resume.
json run_key(const NoiseSweepOptions& o, const std::string& mac) {
  return {{"model", o.model_name},
          {"data", o.data_name},
          {"acc_bits", o.eval.engine.accumulator.bits},
          {"overflow", intsim::overflow_name(o.eval.engine.accumulator.overflow)},
          {"mac", mac}};
}

std::string svg_plot(const NoiseSweepResult& r) {
  const int W = 720, H = 440, L = 70, R = 40, T = 40, B = 60;
  const double pw = W - L - R, ph = H - T - B;
  const size_t n = r.levels.size();
  auto X = [&](size_t i) { return L + (n > 1 ? pw * static_cast<double>(i) / static_cast<double>(n - 1) : pw / 2); };
  auto Y = [&](double acc) { return T + ph * (1 - acc / 100.0); };
  std::string title = "top-1 accuracy on the integer engine against noise";
  std::string svg = svg_accuracy_frame(W, H, L, T, pw, ph, title);
  for (size_t i = 0; i < n; ++i)
    svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{}</text>\n", X(i), T + ph + 20,
                       r.key.empty() ? r.levels[i].mac : fmt::format("{:g}", r.levels[i].value));
  svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{}</text>\n", L + pw / 2, H - 15,
                     r.key.empty() ? std::string("MAC model") : r.levels.front().mac.substr(0, r.levels.front().mac.find(':')) + " " + r.key);
  // exact: dashed; the mean with +-std bars and min/max ticks
  svg += fmt::format("<line x1='{}' y1='{:.1f}' x2='{}' y2='{:.1f}' stroke='#555' stroke-dasharray='6,4'/>"
                     "<text x='{}' y='{:.1f}' text-anchor='end' fill='#555'>exact {:.2f}%</text>\n",
                     L, Y(r.exact.top1), L + pw, Y(r.exact.top1), L + pw, Y(r.exact.top1) - 5, r.exact.top1);
  std::string pts;
  for (size_t i = 0; i < n; ++i) {
    const NoiseLevel& l = r.levels[i];
    pts += fmt::format("{:.1f},{:.1f} ", X(i), Y(l.mean));
    svg += fmt::format("<line x1='{0:.1f}' y1='{1:.1f}' x2='{0:.1f}' y2='{2:.1f}' stroke='#1f77b4' stroke-width='2'/>\n",
                       X(i), Y(std::min(100.0, l.mean + l.std)), Y(std::max(0.0, l.mean - l.std)));
    for (double v : {l.min, l.max})
      svg += fmt::format("<line x1='{:.1f}' y1='{:.1f}' x2='{:.1f}' y2='{:.1f}' stroke='#1f77b4'/>\n", X(i) - 5, Y(v),
                         X(i) + 5, Y(v));
  }
  svg += fmt::format("<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='{}'/>\n", pts);
  for (size_t i = 0; i < n; ++i)
    svg += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='#1f77b4'/>\n", X(i), Y(r.levels[i].mean));
  svg += fmt::format("<text x='{}' y='{}' fill='#1f77b4'>mean over {} seed(s), bars +-1 std, ticks min/max</text>\n",
                     L + 10, T + 16, n ? r.levels.front().runs : 0);
  return svg + "</svg>\n";
}

json level_json(const NoiseLevel& l) {
  return {{"mac", l.mac}, {"value", l.value}, {"runs", l.runs}, {"top1_mean", l.mean}, {"top1_std", l.std},
          {"top1_min", l.min}, {"top1_max", l.max}, {"top5_mean", l.mean_top5}};
}

json run_json(const NoiseRun& r) {
  return {{"mac", r.mac}, {"value", r.value}, {"seed", r.seed}, {"top1", r.top1}, {"top5", r.top5}, {"seconds", r.seconds}};
}

}  // namespace

NoiseSweepResult run_noise_sweep(const intsim::Model& model, const DataSource& data, const NoiseSweepOptions& options) {
  if (options.seeds < 1) throw Error("--seeds must be >= 1, got " + std::to_string(options.seeds));
  NoiseSweepResult result;
  std::vector<std::string> levels;
  std::vector<double> values;
  levels = intsim::expand_mac_levels(options.mac, &result.key, &values);
  if (values.empty()) values.assign(levels.size(), 0.0);
  // every run's spec, checked before any work
  std::vector<std::vector<std::string>> specs(levels.size());
  // (a model without randomness, such as adc, runs once whatever the seeds)
  for (size_t i = 0; i < levels.size(); ++i)
    for (int s = 0; s < options.seeds; ++s) {
      const std::string spec = intsim::parse_mac_model(intsim::with_mac_seed(
          levels[i], spec_seed(levels[i]) + static_cast<uint64_t>(s)))->describe();
      if (std::find(specs[i].begin(), specs[i].end(), spec) == specs[i].end()) specs[i].push_back(spec);
    }
  require_mac_calibration_data(*intsim::parse_mac_model(levels[0]), options.eval.calib_data);

  // runs already done (--resume)
  namespace fs = std::filesystem;
  const std::string log = options.out_dir.empty() ? "" : options.out_dir + "/results.jsonl";
  std::map<std::string, json> done;
  if (!log.empty()) {
    std::error_code ec;
    fs::create_directories(options.out_dir, ec);
    if (ec) throw Error(options.out_dir + ": cannot create the directory: " + ec.message());
    if (options.resume && fs::exists(log)) {
      std::ifstream in(log);
      std::string line;
      int number = 0;
      while (std::getline(in, line)) {
        ++number;
        if (line.empty()) continue;
        json j;
        try {
          j = json::parse(line);
        } catch (const json::exception&) {
          continue;  // a line cut short when a run was killed: redone
        }
        json key = j.value("key", json::object());
        const std::string mac = key.value("mac", "");
        key["mac"] = mac;
        if (key != run_key(options, mac))
          throw Error(log + ":" + std::to_string(number) + ": written with other options (" + key.dump() +
                      "); run without --resume or choose another directory");
        done[mac] = j;
      }
    } else if (fs::exists(log)) {
      fs::remove(log);
    }
  }
  std::ofstream out;
  if (!log.empty()) {
    out.open(log, std::ios::app);
    if (!out) throw Error(log + ": cannot open for writing");
  }

  int64_t total = 1;
  for (const auto& s : specs) total += static_cast<int64_t>(s.size());
  data::ProgressBar bar("noise", total, options.progress);
  int64_t finished = 0;
  auto run_one = [&](const std::string& spec, double value) {
    NoiseRun r;
    r.mac = spec;
    r.value = value;
    r.seed = spec_seed(spec);
    auto it = done.find(spec);
    if (it != done.end()) {
      r.top1 = it->second.at("top1").get<double>();
      r.top5 = it->second.at("top5").get<double>();
      r.seconds = it->second.at("seconds").get<double>();
    } else {
      IntegerEvalOptions eo = options.eval;
      eo.progress = false;
      eo.engine.mac = intsim::parse_mac_model(spec);
      const IntegerEvalResult e = evaluate_integer(model, data, eo);
      r.top1 = e.top1, r.top5 = e.top5, r.seconds = e.seconds;
      if (out) {
        json line = run_json(r);
        line["key"] = run_key(options, spec);
        out << line.dump() << "\n";
        out.flush();
      }
    }
    bar.update(++finished);
    return r;
  };
  result.exact = run_one("exact", 0.0);
  for (size_t i = 0; i < levels.size(); ++i) {
    NoiseLevel l;
    l.mac = levels[i];
    l.value = values[i];
    std::vector<double> top1;
    double top5 = 0;
    for (const std::string& spec : specs[i]) {
      result.runs.push_back(run_one(spec, values[i]));
      top1.push_back(result.runs.back().top1);
      top5 += result.runs.back().top5;
    }
    l.runs = static_cast<int>(top1.size());
    double sum = 0;
    for (double v : top1) sum += v;
    l.mean = sum / l.runs;
    double ss = 0;
    for (double v : top1) ss += (v - l.mean) * (v - l.mean);
    l.std = l.runs > 1 ? std::sqrt(ss / (l.runs - 1)) : 0.0;
    l.min = *std::min_element(top1.begin(), top1.end());
    l.max = *std::max_element(top1.begin(), top1.end());
    l.mean_top5 = top5 / l.runs;
    result.levels.push_back(l);
  }
  bar.finish();

  if (!options.out_dir.empty()) {
    std::string csv = "mac,value,runs,top1_mean,top1_std,top1_min,top1_max,top5_mean\n";
    csv += fmt::format("exact,0,1,{:.2f},0.00,{:.2f},{:.2f},{:.2f}\n", result.exact.top1, result.exact.top1,
                       result.exact.top1, result.exact.top5);
    for (const NoiseLevel& l : result.levels)
      csv += fmt::format("\"{}\",{:g},{},{:.2f},{:.2f},{:.2f},{:.2f},{:.2f}\n", l.mac, l.value, l.runs, l.mean, l.std,
                         l.min, l.max, l.mean_top5);
    write_text_atomic(options.out_dir + "/noise.csv", csv);
    write_text_atomic(options.out_dir + "/noise.json", noise_json(result, options));
    write_text_atomic(options.out_dir + "/noise.svg", svg_plot(result));
  }
  return result;
}

std::string noise_json(const NoiseSweepResult& result, const NoiseSweepOptions& options) {
  json levels = json::array(), runs = json::array();
  for (const NoiseLevel& l : result.levels) levels.push_back(level_json(l));
  for (const NoiseRun& r : result.runs) runs.push_back(run_json(r));
  const json all = {{"model", options.model_name}, {"data", options.data_name},
                    {"accumulator", {{"bits", options.eval.engine.accumulator.bits},
                                     {"overflow", intsim::overflow_name(options.eval.engine.accumulator.overflow)}}},
                    {"key", result.key}, {"seeds", options.seeds}, {"exact", run_json(result.exact)},
                    {"levels", levels}, {"runs", runs}};
  return all.dump(2) + "\n";
}

std::string format_noise_table(const NoiseSweepResult& r) {
  std::string s = fmt::format("{:<40} {:>5} {:>16} {:>7} {:>7}\n", "MAC model", "runs", "top-1 mean ± std", "min", "max");
  s += fmt::format("{:<40} {:>5} {:>9.2f}        {:>7.2f} {:>7.2f}\n", "exact", 1, r.exact.top1, r.exact.top1, r.exact.top1);
  for (const NoiseLevel& l : r.levels)
    s += fmt::format("{:<40} {:>5} {:>9.2f} ± {:<5.2f} {:>7.2f} {:>7.2f}\n", l.mac, l.runs, l.mean, l.std, l.min, l.max);
  return s;
}

}  // namespace anybit
