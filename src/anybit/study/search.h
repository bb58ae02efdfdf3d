// Mixed precision (`anybit search`, docs/search.md): the bit width of every conv/linear weight
// (and, with candidate activation widths, of every activation quantizer) that loses least
// under a budget of average weight bits, weight storage or bit-operations.
//
//  1. Sensitivity: for each layer and candidate width, the model with only that layer moved
//     to the width (every other point at the widest candidate) is compared with the float
//     model on calibration samples: KL divergence of the softmax outputs (default), relative
//     output noise power (sqnr), or the HAWQ measure, trace(H)/n * |Q(W) - W|^2 with the
//     Hessian trace estimated by Hutchinson's method through LibTorch autograd.
//  2. Solve: one width per group minimizing the summed sensitivity within the budget, a
//     multiple-choice knapsack solved exactly (search/knapsack.h). An activation quantizer and
//     the layers it feeds form one group when activations are searched (their bit-operations
//     depend on both widths).
//  3. Evaluate: the chosen config at the requested budget and at the budgets of the uniform
//     configs (every layer at one candidate width), each beside that uniform config, with the
//     method's calibration (mse, adaround, brecq, ...) on the evaluation data.
// DIR gets config.yaml (ordinary rules, one per point: `anybit quantize -c DIR/config.yaml`
// reproduces the reported accuracy), configs/*.yaml, sensitivity.json, pareto.csv/.json,
// pareto.svg; results.jsonl lets --resume skip what a killed run finished.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace anybit {

struct Budget {
  enum class Kind { kAvgWbits, kSize, kBops };
  Kind kind = Kind::kAvgWbits;
  double value = 0;  // avg-wbits: bits; size: bytes; bops: share of W8A8's bit-operations
  std::string text;  // as given, e.g. "size=40KiB"
};
// "avg-wbits=3", "size=40KiB" (B, KiB, MiB, kB, MB or a plain number of bytes), "bops=0.1".
// Throws anybit::Error naming the flag and the forms it takes.
Budget parse_budget(const std::string& text);

struct SearchOptions {
  std::string model;
  std::string calib_data = "fmnist::train";
  std::string eval_data = "fmnist::test";
  std::string budget = "avg-wbits=4";
  std::vector<int> weights = {2, 3, 4, 6, 8};  // candidate weight widths
  std::vector<int> acts;                       // candidate activation widths; empty: acts_fixed
  int acts_fixed = 8;
  // the uniform configs evaluated beside the search at their budgets: weight widths (empty:
  // every candidate in `weights`)
  std::vector<int> uniform;
  std::string metric = "kl";  // kl, sqnr, hessian
  std::string method = "mse";  // calibration of the evaluated configs: minmax, mse, percentile, entropy, adaround, brecq, gptq
  int adaround_iterations = 3000;
  int brecq_iterations = 2000;
  int64_t calib_batches = 8;
  int64_t batch_size = 128;
  int64_t sensitivity_samples = 512;  // calibration samples the sensitivities are measured on
  int hessian_iterations = 16;        // Hutchinson probes (metric hessian)
  bool fold_bn = true;
  std::string scores;  // which element of a tuple, list or dict output is the class scores (EvalOptions)
  std::string out_dir;
  bool resume = false;
  bool progress = true;
};

struct SearchLayer {
  std::string point;        // the weight point, e.g. layer1.conv1.weight
  std::string input_point;  // the activation quantizer feeding it ("" when its input is float)
  int64_t params = 0, macs = 0, channels = 0;  // MACs per sample
  int wbits = 0, abits = 0;  // chosen at the requested budget (abits 32: float input)
  double loss = 0;           // its sensitivity at that width
};

struct SearchRow {
  std::string kind;   // "float", "search" or "uniform"
  std::string label;  // "avg-wbits<=2.50", "W3A8", "float"
  double budget = 0;  // the budget it was solved for (search), in the budget's unit
  double avg_wbits = 0, size_bytes = 0, bops = 0;  // bops: share of W8A8's
  double predicted = 0;                            // the metric the solve predicts (summed)
  double top1 = 0, top5 = 0, agreement = -1, seconds = 0;
  std::string config;  // its config file, relative to DIR
};

struct SearchResult {
  Budget budget;
  std::vector<SearchLayer> layers;  // chosen at the requested budget
  std::vector<SearchRow> rows;      // float, then per budget the search and its uniform twin
  bool exact = true;                // the knapsack was solved exactly (search/knapsack.h)
  double sensitivity_seconds = 0, solve_seconds = 0, total_seconds = 0;
  double float_eval_seconds = 0;  // one evaluation of the float model, for scale
  int sensitivity_runs = 0;
  std::string config_path;  // DIR/config.yaml
  std::string command;      // the `anybit quantize` line that reproduces it
};

// JSON forms (graph/point.h): pareto.json holds the result's, results.jsonl its rows', and
// Python gets the result's. A layer: {point, input, params, macs, wbits, abits, sensitivity}; a
// row: {kind, label, budget, avg_wbits, size_bytes, bops, predicted, top1, top5, agreement (-1:
// none), seconds, config}; the result: {budget, exact, layers, rows, config, command,
// sensitivity_seconds, solve_seconds, total_seconds, sensitivity_runs}.
void to_json(nlohmann::json& j, const SearchLayer& l);
void to_json(nlohmann::json& j, const SearchRow& r);
void to_json(nlohmann::json& j, const SearchResult& r);

SearchResult run_search(const SearchOptions& options, const std::function<void(const SearchRow&)>& on_row = nullptr);

}  // namespace anybit
