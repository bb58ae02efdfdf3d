// Mixed precision; see search.h and docs/search.md.
#include "anybit/study/search.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "anybit/api/pipeline.h"
#include "anybit/api/quantize.h"
#include "anybit/base/npy.h"
#include "anybit/data/file_read.h"
#include "anybit/data/progress.h"
#include "anybit/ptq/capture.h"
#include "anybit/search/knapsack.h"
#include "anybit/study/search_internal.h"
#include "anybit/study/sweep.h"

namespace anybit {

using nlohmann::json;
namespace jit = torch::jit;

Budget parse_budget(const std::string& text) {
  const char* forms = "avg-wbits=B (average weight bits), size=N[B|KiB|MiB|kB|MB] (weight storage), "
                      "bops=R (bit-operations as a share of W8A8's)";
  const size_t eq = text.find('=');
  if (eq == std::string::npos)
    throw Error("--budget: '" + text + "' is not KIND=VALUE; expected " + forms);
  const std::string kind = text.substr(0, eq), value = text.substr(eq + 1);
  Budget b;
  b.text = text;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    throw Error("--budget: '" + value + "' in '" + text + "' is not a number");
  }
  std::string unit = value.substr(used);
  if (!(v > 0) || !std::isfinite(v)) throw Error("--budget: '" + text + "' must be positive");
  if (kind == "avg-wbits") {
    b.kind = Budget::Kind::kAvgWbits;
    if (!unit.empty()) throw Error("--budget: avg-wbits takes a number of bits, not '" + value + "'");
    b.value = v;
  } else if (kind == "bops") {
    b.kind = Budget::Kind::kBops;
    if (!unit.empty()) throw Error("--budget: bops takes a share of W8A8's bit-operations (e.g. 0.25), not '" + value + "'");
    b.value = v;
  } else if (kind == "size") {
    b.kind = Budget::Kind::kSize;
    static const std::map<std::string, double> units = {
        {"", 1}, {"B", 1}, {"KiB", 1024}, {"MiB", 1024.0 * 1024}, {"kB", 1000}, {"KB", 1000}, {"MB", 1e6}};
    auto it = units.find(unit);
    if (it == units.end()) throw Error("--budget: unknown size unit '" + unit + "' (B, KiB, MiB, kB or MB)");
    b.value = v * it->second;
  } else {
    throw Error("--budget: unknown budget kind '" + kind + "'; expected " + forms);
  }
  return b;
}

using namespace search_impl;  // NOLINT: the search's own parts

SearchResult run_search(const SearchOptions& o, const std::function<void(const SearchRow&)>& on_row) {
  const auto t_start = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  SearchResult result;
  if (o.model.empty()) throw Error("search: no model given");
  if (o.out_dir.empty()) throw Error("search: no output directory (-o DIR)");
  const Budget budget = parse_budget(o.budget);
  result.budget = budget;
  if (o.metric != "kl" && o.metric != "sqnr" && o.metric != "hessian")
    throw Error("search: unknown --metric '" + o.metric + "' (expected kl, sqnr or hessian)");
  if (o.metric == "hessian" && !o.acts.empty())
    throw Error("search: --metric hessian measures weights only; search activation widths (--acts) with kl or sqnr");
  std::vector<int> W = o.weights, A = o.acts;
  if (W.empty()) throw Error("search: --weights: no candidate widths");
  for (int b : W)
    if (b < 2 || b > 16) throw Error("search: --weights: " + std::to_string(b) + " is not a width in 2..16");
  for (int b : A)
    if (b < 2 || b > 16) throw Error("search: --acts: " + std::to_string(b) + " is not a width in 2..16");
  if (o.acts_fixed < 2 || o.acts_fixed > 16) throw Error("search: --acts-fixed must be in 2..16");
  std::sort(W.begin(), W.end());
  W.erase(std::unique(W.begin(), W.end()), W.end());
  std::sort(A.begin(), A.end());
  A.erase(std::unique(A.begin(), A.end()), A.end());
  const bool search_acts = !A.empty();
  const int wmax = W.back(), abase = search_acts ? A.back() : o.acts_fixed;
  const std::string base = sweep_config(o.method, wmax, abase, false);  // also checks the method
  if (o.sensitivity_samples < 1) throw Error("search: --sensitivity-samples must be positive");

  ::mkdir(o.out_dir.c_str(), 0755);
  ::mkdir((o.out_dir + "/configs").c_str(), 0755);
  const std::string log = o.out_dir + "/results.jsonl", sens_file = o.out_dir + "/sensitivity.json";
  if ((data::path_exists(log) || data::path_exists(sens_file)) && !o.resume)
    throw Error(o.out_dir + ": a search already wrote here; pass --resume to continue it or choose another -o");

  auto calib = open_data(o.calib_data);
  auto test = open_data(o.eval_data);
  PrepareOptions po;
  po.fold_bn = o.fold_bn;
  PreparedModel prepared = prepare_model(o.model, po);
  const Config base_config = parse_config_string(base, "search base config");
  const Model m = analyze(prepared.graph, base_config, *calib);
  const size_t NL = m.layers.size(), NA = m.acts.size();
  // a choice of widths: per layer and per activation quantizer
  struct Widths {
    std::vector<int> w, a;
  };
  auto abits_of = [&](const Widths& x, size_t i) { return m.layers[i].act < 0 ? 32 : x.a[m.layers[i].act]; };
  // what it costs, in every measure
  struct Measures {
    double avg_wbits = 0, size_bytes = 0, bops = 0;  // bops: share of W8A8's
  };
  auto measures_of = [&](const Widths& x) {
    double bits = 0, size = 0, bops = 0;
    for (size_t i = 0; i < NL; ++i) {
      bits += static_cast<double>(m.layers[i].params) * x.w[i];
      size += (static_cast<double>(m.layers[i].params) * x.w[i] + 32.0 * m.layers[i].channels) / 8;
      bops += static_cast<double>(m.layers[i].macs) * x.w[i] * abits_of(x, i);
    }
    return Measures{bits / m.params, size, bops / (64.0 * m.macs)};
  };
  auto budget_value = [&](const Measures& r) {
    return budget.kind == Budget::Kind::kAvgWbits ? r.avg_wbits
           : budget.kind == Budget::Kind::kSize   ? r.size_bytes
                                                  : r.bops;
  };
  {
    // the least the candidates allow: every layer (and searched activation) at its narrowest
    const double least =
        budget_value(measures_of({std::vector<int>(NL, W.front()), std::vector<int>(NA, search_acts ? A.front() : abase)}));
    if (budget.value < least * (1 - 1e-12))
      throw Error(fmt::format("--budget {}: below the least the candidates allow ({}; every layer at {} bits{})",
                              budget.text,
                              budget.kind == Budget::Kind::kAvgWbits ? fmt::format("avg-wbits={:.4g}", least)
                              : budget.kind == Budget::Kind::kSize   ? fmt::format("size={:.0f}B", least)
                                                                     : fmt::format("bops={:.4g}", least),
                              W.front(), search_acts ? fmt::format(", activations at {}", A.front()) : ""));
  }

  // ---- 1. sensitivity ----------------------------------------------------------------------
  // loss[layer][width] and aloss[act][width], relative to every point at its widest
  std::vector<std::map<int, double>> wloss(NL), aloss(NA);
  const json sens_key = {{"model", o.model}, {"metric", o.metric},       {"method", o.method},
                         {"weights", W},     {"acts", A},                {"acts_fixed", o.acts_fixed},
                         {"samples", o.sensitivity_samples}, {"calib", o.calib_data}, {"fold_bn", o.fold_bn},
                         {"hessian_iterations", o.hessian_iterations}};
  bool have_sens = false;
  if (data::path_exists(sens_file)) {
    json j;
    try {
      std::ifstream f(sens_file);
      j = json::parse(f);
    } catch (const std::exception&) {
      throw Error(sens_file + ": not valid JSON (remove it to measure the sensitivities again)");
    }
    if (j.value("options", json()) != sens_key)
      throw Error(sens_file + ": measured with other options (" + j.value("options", json()).dump() + "); " +
                  "use another -o or the same options");
    for (size_t i = 0; i < NL; ++i)
      for (auto& [k, v] : j.at("weights").at(m.layers[i].point).items()) wloss[i][std::stoi(k)] = v.get<double>();
    for (size_t i = 0; i < NA; ++i)
      if (j.at("acts").contains(m.acts[i].point))
        for (auto& [k, v] : j.at("acts").at(m.acts[i].point).items()) aloss[i][std::stoi(k)] = v.get<double>();
    have_sens = true;
  }
  const auto t_sens = std::chrono::steady_clock::now();
  const int64_t ns = std::min(o.sensitivity_samples, calib->size());
  const auto [xs, ys] = calib->batch(0, ns);
  QuantizeOptions qo;
  qo.batch_size = o.batch_size;
  qo.calib_batches = (ns + o.batch_size - 1) / o.batch_size;
  qo.progress = false;
  if (!have_sens) {
    std::vector<int> wb(NL, wmax), ab(NA, abase);
    if (o.metric == "hessian") {
      // HAWQ-V2/V3: trace(H)/n per layer by Hutchinson's estimator (Rademacher probes), then
      // Omega(b) = trace/n * |Q_b(W) - W|^2 with Q_b the method's weight quantizer
      PreparedModel pm = prepare_model(o.model, po);
      const ScoresPicker pick(pm.graph.module, o.scores);
      std::vector<at::Tensor> ws;
      for (const auto& l : m.layers) {
        const Point* p = pm.graph.find(l.point);
        at::Tensor w = resolve_attr(pm.graph.module, p->attr_path).toTensor();
        w.detach_();
        w.requires_grad_(true);
        ws.push_back(w);
      }
      std::vector<double> trace(NL, 0.0);
      data::ProgressBar bar("hessian trace", o.hessian_iterations, o.progress);
      auto plain = std::make_unique<jit::GraphOptimizerEnabledGuard>(false);  // plain ops: double backward works
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
      const int64_t nb = (ns + o.batch_size - 1) / o.batch_size;
      for (int it = 0; it < o.hessian_iterations; ++it) {
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t lo = b * o.batch_size, n = std::min(o.batch_size, ns - lo);
          at::Tensor out = pick(pm.graph.module.forward({xs.slice(0, lo, lo + n)}));
          at::Tensor loss = at::cross_entropy_loss(out.reshape({n, -1}), ys.slice(0, lo, lo + n));
          auto g = torch::autograd::grad({loss}, ws, {}, true, true);
          std::vector<at::Tensor> vs;
          at::Tensor gv = at::zeros({}, at::kFloat);
          for (size_t i = 0; i < NL; ++i) {
            vs.push_back(at::randint(0, 2, ws[i].sizes(), gen, ws[i].options().requires_grad(false)) * 2 - 1);
            gv = gv + (g[i] * vs[i]).sum();
          }
          auto hv = torch::autograd::grad({gv}, ws, {}, false, false);
          for (size_t i = 0; i < NL; ++i)
            trace[i] += (hv[i] * vs[i]).sum().item<double>() * n / ns / o.hessian_iterations;
        }
        bar.update(it + 1);
      }
      bar.finish();
      plain.reset();
      for (auto& w : ws) w.requires_grad_(false);
      for (int b : W) {
        // the method's weight quantizer (the base config's calibrator) on the weights alone
        const std::string c = fmt::format("weight_calibrator: {}\nrules:\n  - {{kind: [conv, linear], role: weight, spec: 'int{}:per_channel'}}\n",
                                          base_config.weight_calibrator, b);
        QuantizedModel q = quantize_model(o.model, parse_config_string(c, "search"), nullptr, po, qo);
        std::map<std::string, at::Tensor> qw;
        for (auto& out : probe_quantizers(q.result.model.module, xs.slice(0, 0, 1))) qw[out.point] = out.value;
        for (size_t i = 0; i < NL; ++i) {
          auto it = qw.find(m.layers[i].point);
          if (it == qw.end()) {
            std::string found;
            for (auto& kv : qw) found += " '" + kv.first + "'";
            throw Error("search: no weight quantizer found for " + m.layers[i].point + "; found" + found);
          }
          const double err = (it->second - ws[i].detach()).pow(2).sum().item<double>();
          wloss[i][b] = trace[i] / m.layers[i].params * err;
        }
        result.sensitivity_runs++;
      }
      for (size_t i = 0; i < NL; ++i) {
        const double top = wloss[i][wmax];
        for (int b : W) wloss[i][b] -= top;
      }
    } else {
      // the float model's outputs on the sensitivity samples
      const at::Tensor ref = run_logits(prepared.graph.module, xs, o.batch_size, o.scores);
      if (o.metric == "kl") {
        // KL of softmax outputs cannot rank anything when the float model's outputs are the
        // same for every class (an untrained network's logits of 1e-10): say so instead of
        // choosing the narrowest widths on a metric that is 0 everywhere
        const double spread = (ref.softmax(1) - 1.0 / ref.size(1)).abs().max().item<double>();
        if (ref.size(1) < 2 || spread < 1e-6)
          throw Error(fmt::format("search: the float model's softmax outputs on the calibration samples are uniform "
                                  "(largest deviation {:.3g}): --metric kl cannot rank the layers; use --metric sqnr "
                                  "(relative output noise)",
                                  spread));
      }
      // the metric of the model quantized with these widths (method's calibration, nearest rounding)
      auto measure = [&](const std::vector<int>& w, const std::vector<int>& a) {
        QuantizedModel q =
            quantize_model(o.model, parse_config_string(config_text(base, m, w, a), "search"), calib.get(), po, qo);
        result.sensitivity_runs++;
        return kl_or_noise(ref, run_logits(q.result.model.module, xs, o.batch_size, o.scores), o.metric);
      };
      const int64_t runs = 1 + static_cast<int64_t>(NL * (W.size() - 1) + (search_acts ? NA * (A.size() - 1) : 0));
      data::ProgressBar bar("sensitivity", runs, o.progress);
      int64_t step = 0;
      const double top = measure(wb, ab);
      bar.update(++step);
      for (size_t i = 0; i < NL; ++i) {
        wloss[i][wmax] = 0;
        for (int b : W) {
          if (b == wmax) continue;
          std::vector<int> w = wb;
          w[i] = b;
          wloss[i][b] = measure(w, ab) - top;
          bar.update(++step);
        }
      }
      if (search_acts)
        for (size_t i = 0; i < NA; ++i) {
          aloss[i][abase] = 0;
          for (int b : A) {
            if (b == abase) continue;
            std::vector<int> a = ab;
            a[i] = b;
            aloss[i][b] = measure(wb, a) - top;
            bar.update(++step);
          }
        }
      bar.finish();
    }
    double largest = 0;
    for (const auto& t : wloss)
      for (const auto& [b, v] : t) largest = std::max(largest, std::abs(v));
    for (const auto& t : aloss)
      for (const auto& [b, v] : t) largest = std::max(largest, std::abs(v));
    if (!(largest > 0))
      throw Error("search: every sensitivity measured with --metric " + o.metric +
                  " is 0: no width changes the model's outputs on the calibration samples, so nothing can be ranked");
    json j = {{"options", sens_key}, {"weights", json::object()}, {"acts", json::object()}};
    for (size_t i = 0; i < NL; ++i)
      for (const auto& [b, v] : wloss[i]) j["weights"][m.layers[i].point][std::to_string(b)] = v;
    for (size_t i = 0; i < NA; ++i)
      for (const auto& [b, v] : aloss[i]) j["acts"][m.acts[i].point][std::to_string(b)] = v;
    write_text_atomic(sens_file, j.dump(2) + "\n");
  }
  result.sensitivity_seconds = since(t_sens);

  // ---- 2. the knapsack ------------------------------------------------------------------------
  const auto t_solve = std::chrono::steady_clock::now();
  auto layer_cost = [&](size_t i, int w, int a) -> int64_t {
    const Layer& l = m.layers[i];
    switch (budget.kind) {
      case Budget::Kind::kAvgWbits: return l.params * w;
      case Budget::Kind::kSize: return l.params * w + 32 * l.channels;
      case Budget::Kind::kBops: return l.macs * w * a;
    }
    return 0;
  };
  auto fixed_abits = [&](size_t i) { return m.layers[i].act < 0 ? 32 : abase; };
  // groups: per option, the widths it gives its layers and its activation
  struct Opt {
    int64_t cost;
    double loss;
    std::vector<std::pair<int, int>> widths;  // (layer, bits)
    int act = -1, abits = 0;
  };
  struct Solved {
    std::vector<std::vector<Opt>> groups;
    search::Front front;
  };
  auto prune = [](std::vector<Opt> v) {
    std::sort(v.begin(), v.end(), [](const Opt& a, const Opt& b) { return a.cost != b.cost ? a.cost < b.cost : a.loss < b.loss; });
    std::vector<Opt> kept;
    for (auto& o : v)
      if (kept.empty() || o.loss < kept.back().loss) kept.push_back(std::move(o));
    return kept;
  };
  auto solve = [&](const std::vector<std::map<int, double>>& wl, const std::vector<std::map<int, double>>& al) {
    Solved S;
    std::vector<bool> grouped(NL, false);
    if (search_acts)
      for (size_t k = 0; k < NA; ++k) {
        std::vector<Opt> g;
        for (int a : A) {
          std::vector<Opt> partial = {{0, al[k].at(a), {}, static_cast<int>(k), a}};
          for (int li : m.acts[k].consumers) {
            std::vector<Opt> next;
            for (const Opt& p : partial)
              for (int w : W) {
                Opt q = p;
                q.cost += layer_cost(li, w, a);
                q.loss += wl[li].at(w);
                q.widths.push_back({li, w});
                next.push_back(std::move(q));
              }
            partial = prune(std::move(next));
            grouped[li] = true;
          }
          for (auto& p : partial) g.push_back(std::move(p));
        }
        S.groups.push_back(prune(std::move(g)));
      }
    for (size_t i = 0; i < NL; ++i) {
      if (grouped[i]) continue;
      std::vector<Opt> g;
      for (int w : W) g.push_back({layer_cost(i, w, fixed_abits(i)), wl[i].at(w), {{static_cast<int>(i), w}}, -1, 0});
      S.groups.push_back(prune(std::move(g)));
    }
    std::vector<std::vector<search::Option>> kgroups;
    for (const auto& g : S.groups) {
      kgroups.emplace_back();
      for (const auto& o2 : g) kgroups.back().push_back({o2.cost, o2.loss});
    }
    S.front = search::pareto_front(kgroups);
    return S;
  };
  const Solved global = solve(wloss, aloss);
  result.exact = global.front.exact;
  result.solve_seconds = since(t_solve);

  auto widths_of = [&](const Solved& S, const search::Solution& s) {
    Widths x{std::vector<int>(NL, wmax), std::vector<int>(NA, abase)};
    for (size_t gi = 0; gi < S.groups.size(); ++gi) {
      const Opt& op = S.groups[gi][s.choice[gi]];
      for (const auto& [li, b] : op.widths) x.w[li] = b;
      if (op.act >= 0) x.a[op.act] = op.abits;
    }
    return x;
  };
  auto cost_of = [&](const Widths& x) {
    int64_t c = 0;
    for (size_t i = 0; i < NL; ++i) c += layer_cost(i, x.w[i], abits_of(x, i));
    return c;
  };
  auto fill_measures = [&](const Widths& x, SearchRow* r) {
    const Measures c = measures_of(x);
    r->avg_wbits = c.avg_wbits;
    r->size_bytes = c.size_bytes;
    r->bops = c.bops;
    double pred = 0;
    for (size_t i = 0; i < NL; ++i) pred += wloss[i].at(x.w[i]);
    for (size_t k = 0; k < NA; ++k)
      if (aloss[k].count(x.a[k])) pred += aloss[k].at(x.a[k]);
    r->predicted = pred;
  };
  auto budget_units = [&](double value) -> int64_t {
    switch (budget.kind) {
      case Budget::Kind::kAvgWbits: return static_cast<int64_t>(std::floor(value * m.params + 1e-9));
      case Budget::Kind::kSize: return static_cast<int64_t>(std::floor(value * 8 + 1e-9));
      case Budget::Kind::kBops: return static_cast<int64_t>(std::floor(value * 64.0 * m.macs + 1e-9));
    }
    return 0;
  };
  const search::Solution* chosen = search::best_within(global.front, budget_units(budget.value));
  if (!chosen) throw Error("--budget " + budget.text + ": no solution within it");  // checked above; kept for safety
  const Widths best_x = widths_of(global, *chosen);

  // ---- 3. evaluate -------------------------------------------------------------------------
  std::map<std::string, SearchRow> done;  // by config key
  if (data::path_exists(log)) {
    std::ifstream f(log);
    for (std::string line; std::getline(f, line);) {
      try {
        json j = json::parse(line);
        done[j.at("key").get<std::string>()] = row_from(j.at("row"));
      } catch (const std::exception&) {
        // a line cut by a kill: that run is redone
      }
    }
  }
  // the evaluated configs: the requested budget, then each uniform config and the search at its cost
  struct Job {
    SearchRow row;
    Widths x;
    bool is_float = false;
  };
  std::vector<Job> jobs;
  auto row_named = [](const std::string& kind, const std::string& label) {
    SearchRow r;
    r.kind = kind;
    r.label = label;
    return r;
  };
  jobs.push_back({row_named("float", "float"), {}, true});
  {
    Job j{row_named("search", "budget " + budget.text), best_x};
    j.row.budget = budget.value;
    j.row.config = "config.yaml";
    jobs.push_back(j);
  }
  for (int w : o.uniform.empty() ? W : o.uniform) {
    if (std::find(W.begin(), W.end(), w) == W.end())
      throw Error("search: --uniform " + std::to_string(w) + " is not one of the candidate weight widths (--weights)");
    int a = o.acts_fixed;
    if (search_acts) {
      a = A.back();
      for (int c : A)
        if (c >= w) {
          a = c;
          break;
        }
    }
    Widths u{std::vector<int>(NL, w), std::vector<int>(NA, a)};
    Job uj{row_named("uniform", fmt::format("W{}A{}", w, a)), u};
    uj.row.config = fmt::format("configs/uniform-w{}a{}.yaml", w, a);
    fill_measures(u, &uj.row);
    uj.row.budget = budget_value(measures_of(u));
    const search::Solution* s = search::best_within(global.front, cost_of(u));
    if (!s) continue;
    Job sj{row_named("search", fmt::format("budget of W{}A{}", w, a)), widths_of(global, *s)};
    sj.row.budget = uj.row.budget;
    sj.row.config = fmt::format("configs/search-at-w{}a{}.yaml", w, a);
    jobs.push_back(sj);
    jobs.push_back(uj);
  }
  const std::string budget_word = budget.kind == Budget::Kind::kAvgWbits ? "avg-wbits"
                                  : budget.kind == Budget::Kind::kSize   ? "size"
                                                                         : "bops";
  const std::string calib_flags = fmt::format("-d {} --calib-batches {} -b {}{}", o.calib_data, o.calib_batches,
                                              o.batch_size, o.fold_bn ? " --fold-bn" : "");
  const std::string method_flags = o.method == "adaround" ? fmt::format(" --adaround {}", o.adaround_iterations)
                                   : o.method == "brecq"  ? fmt::format(" --brecq {}", o.brecq_iterations)
                                   : o.method == "gptq"   ? std::string(" --gptq")
                                                          : "";
  result.config_path = o.out_dir + "/config.yaml";
  result.command = fmt::format("anybit quantize {} -c {} {}{} --eval {} -o {}/model.pt", o.model, result.config_path,
                               calib_flags, method_flags, o.eval_data, o.out_dir);
  jit::Module float_module = load_module(o.model);
  EvalOptions eo;
  eo.progress = false;
  eo.batch_size = 100;
  eo.scores = o.scores;
  data::ProgressBar bar("evaluate", static_cast<int64_t>(jobs.size()), o.progress);
  int64_t step = 0;
  for (Job& job : jobs) {
    SearchRow& r = job.row;
    std::string key, config;
    if (job.is_float) {
      key = "float|" + o.model + "|" + o.eval_data;
    } else {
      fill_measures(job.x, &r);
      const std::string header = fmt::format(
          "# anybit search: {} ({}), metric {}, method {}; {:.4g} average weight bits, {:.1f} KiB of weights "
          "(scales included), {:.4g} of W8A8's bit-operations\n"
          "# reproduce: anybit quantize {} -c THIS_FILE {}{} --eval {} -o OUT.pt\n",
          r.label, r.kind == "uniform" ? "every layer at one width" : "widths per layer", o.metric, o.method,
          r.avg_wbits, r.size_bytes / 1024, r.bops, o.model, calib_flags, method_flags, o.eval_data);
      const std::string rules = config_text(base, m, job.x.w, job.x.a);
      config = header + rules;
      key = hex_hash(o.model + "|" + o.method + "|" + o.calib_data + "|" + o.eval_data + "|" +
                     std::to_string(o.calib_batches) + "|" + std::to_string(o.fold_bn) + "|" + rules);
      write_text_atomic(o.out_dir + "/" + r.config, config);
    }
    auto it = done.find(key);
    if (it != done.end()) {
      r.top1 = it->second.top1;
      r.top5 = it->second.top5;
      r.agreement = it->second.agreement;
      r.seconds = it->second.seconds;
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      EvalResult e;
      if (job.is_float) {
        e = evaluate(float_module, *test, eo);
        result.float_eval_seconds = e.seconds;
      } else {
        QuantizeOptions qo;
        qo.calib_batches = o.calib_batches;
        qo.batch_size = o.batch_size;
        qo.progress = false;
        set_method_options(o.method, o.adaround_iterations, o.brecq_iterations, &qo);
        QuantizedModel q =
            quantize_model(o.model, parse_config_string(config, o.out_dir + "/" + r.config), calib.get(), po, qo);
        e = evaluate(q.result.model.module, *test, eo, &float_module);
      }
      r.top1 = e.top1;
      r.top5 = e.top5;
      r.agreement = e.agreement;
      r.seconds = since(t0);
      done[key] = r;
      std::ofstream f(log, std::ios::app);
      f << json({{"key", key}, {"row", json(r)}}).dump() << "\n";
      if (!f) throw Error(log + ": cannot append");
    }
    result.rows.push_back(r);
    if (on_row) on_row(r);
    bar.update(++step);
  }
  bar.finish();
  // config.yaml: the requested budget's (written above as the second job)
  const Widths best = jobs[1].x;
  for (size_t i = 0; i < NL; ++i) {
    SearchLayer l;
    l.point = m.layers[i].point;
    l.input_point = m.layers[i].act < 0 ? "" : m.acts[m.layers[i].act].point;
    l.params = m.layers[i].params;
    l.macs = m.layers[i].macs;
    l.channels = m.layers[i].channels;
    l.wbits = best.w[i];
    l.abits = abits_of(best, i);
    l.loss = wloss[i].at(best.w[i]);
    result.layers.push_back(l);
  }

  // ---- 4. reports --------------------------------------------------------------------------
  std::string csv = "kind,label,budget,avg_wbits,size_bytes,bops,predicted,top1,top5,agreement,seconds,config\n";
  for (const auto& r : result.rows) {
    csv += fmt::format("{},{},{},{:.4f},{:.0f},{:.4f},{:.6g},{:.2f},{:.2f},{},{:.2f},{}\n", r.kind, r.label,
                       r.kind == "float" ? "" : fmt::format("{:.6g}", r.budget), r.avg_wbits, r.size_bytes, r.bops,
                       r.predicted, r.top1, r.top5, r.agreement >= 0 ? fmt::format("{:.2f}", r.agreement) : "",
                       r.seconds, r.config);
  }
  result.total_seconds = since(t_start);
  json all = result;
  all["model"] = o.model;
  all["budget_kind"] = budget_word;
  all["metric"] = o.metric;
  all["method"] = o.method;
  write_text_atomic(o.out_dir + "/pareto.csv", csv);
  write_text_atomic(o.out_dir + "/pareto.json", all.dump(2) + "\n");
  write_svg(o.out_dir + "/pareto.svg", budget, result.rows);
  return result;
}

}  // namespace anybit
