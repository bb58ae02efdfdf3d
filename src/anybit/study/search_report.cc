// A search's reports: rows read back from results.jsonl, pareto.svg, and the JSON forms of its
// results (search.h).
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "anybit/base/npy.h"
#include "anybit/study/search_internal.h"
#include "anybit/study/sweep.h"

namespace anybit {
namespace search_impl {

using nlohmann::json;

SearchRow row_from(const json& j) {
  SearchRow r;
  r.kind = j.at("kind");
  r.label = j.at("label");
  r.budget = j.at("budget");
  r.avg_wbits = j.at("avg_wbits");
  r.size_bytes = j.at("size_bytes");
  r.bops = j.at("bops");
  r.predicted = j.at("predicted");
  r.top1 = j.at("top1");
  r.top5 = j.at("top5");
  r.agreement = j.at("agreement");
  r.seconds = j.at("seconds");
  r.config = j.at("config");
  return r;
}

void write_svg(const std::string& path, const Budget& budget, const std::vector<SearchRow>& rows) {
  auto x_of = [&](const SearchRow& r) {
    return budget.kind == Budget::Kind::kAvgWbits ? r.avg_wbits
           : budget.kind == Budget::Kind::kSize   ? r.size_bytes / 1024.0
                                                  : r.bops;
  };
  const char* xlabel = budget.kind == Budget::Kind::kAvgWbits ? "average weight bits"
                       : budget.kind == Budget::Kind::kSize   ? "weight storage (KiB, scales included)"
                                                              : "bit-operations (share of W8A8)";
  double xmin = 1e300, xmax = -1e300;
  for (const auto& r : rows)
    if (r.kind != "float") xmin = std::min(xmin, x_of(r)), xmax = std::max(xmax, x_of(r));
  if (!(xmax > xmin)) xmin -= 1, xmax += 1;
  const int W = 720, H = 440, L = 70, R = 170, T = 40, B = 60;
  const double pw = W - L - R, ph = H - T - B;
  auto X = [&](double v) { return L + pw * (v - xmin) / (xmax - xmin); };
  auto Y = [&](double acc) { return T + ph * (1 - acc / 100.0); };
  std::string svg =
      svg_accuracy_frame(W, H, L, T, pw, ph, "top-1 accuracy against the budget: searched and uniform widths");
  for (int k = 0; k <= 4; ++k) {
    const double v = xmin + (xmax - xmin) * k / 4;
    svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{:.3g}</text>\n", X(v), T + ph + 20, v);
  }
  svg += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{}</text>\n", L + pw / 2, H - 15, xlabel);
  const std::pair<const char*, const char*> series[] = {{"search", "#d62728"}, {"uniform", "#1f77b4"}};
  int legend = 0;
  for (const auto& [kind, col] : series) {
    std::vector<std::pair<double, double>> pts;
    for (const auto& r : rows)
      if (r.kind == kind) pts.push_back({x_of(r), r.top1});
    std::sort(pts.begin(), pts.end());
    std::string line;
    for (const auto& [x, y] : pts) {
      line += fmt::format("{:.1f},{:.1f} ", X(x), Y(y));
      svg += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='{}'/>\n", X(x), Y(y), col);
    }
    svg += fmt::format("<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>\n", col, line);
    svg += fmt::format("<line x1='{}' y1='{}' x2='{}' y2='{}' stroke='{}' stroke-width='2'/><text x='{}' y='{}'>{}</text>\n",
                       L + pw + 15, T + 10 + 18 * legend, L + pw + 35, T + 10 + 18 * legend, col, L + pw + 40,
                       T + 14 + 18 * legend, kind == std::string("search") ? "searched widths" : "uniform widths");
    ++legend;
  }
  for (const auto& r : rows)
    if (r.kind == "float")
      svg += fmt::format("<line x1='{}' y1='{:.1f}' x2='{}' y2='{:.1f}' stroke='#555' stroke-dasharray='5,4'/>"
                         "<text x='{}' y='{}'>float {:.2f}%</text>\n",
                         L, Y(r.top1), L + pw, Y(r.top1), L + pw + 15, T + 14 + 18 * legend, r.top1);
  svg += "</svg>\n";
  write_text_atomic(path, svg);
}

}  // namespace search_impl

void to_json(nlohmann::json& j, const SearchLayer& l) {
  j = {{"point", l.point}, {"input", l.input_point}, {"params", l.params},     {"macs", l.macs},
       {"wbits", l.wbits}, {"abits", l.abits},       {"sensitivity", l.loss}};
}

void to_json(nlohmann::json& j, const SearchRow& r) {
  j = {{"kind", r.kind},   {"label", r.label},         {"budget", r.budget},       {"avg_wbits", r.avg_wbits},
       {"size_bytes", r.size_bytes}, {"bops", r.bops}, {"predicted", r.predicted}, {"top1", r.top1},
       {"top5", r.top5},   {"agreement", r.agreement}, {"seconds", r.seconds},     {"config", r.config}};
}

void to_json(nlohmann::json& j, const SearchResult& r) {
  j = {{"budget", r.budget.text},
       {"exact", r.exact},
       {"layers", r.layers},
       {"rows", r.rows},
       {"config", r.config_path},
       {"command", r.command},
       {"sensitivity_seconds", r.sensitivity_seconds},
       {"solve_seconds", r.solve_seconds},
       {"total_seconds", r.total_seconds},
       {"sensitivity_runs", r.sensitivity_runs}};
}

}  // namespace anybit
