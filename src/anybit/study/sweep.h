// The bit sweep (user story 2): post-training quantization of one or more models at
// every (weight bits, activation bits) pair and every method, evaluated on a test set,
// written as a table, CSV, JSON and an SVG plot. Results are appended to
// DIR/results.jsonl as each run finishes, so an interrupted sweep resumes where it
// stopped (--resume) without recomputing finished runs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace anybit {

struct SweepOptions {
  std::vector<std::string> models;
  std::vector<std::pair<int, int>> pairs;  // (weight bits, activation bits)
  // instead of pairs: number formats, each for the weights and the activations
  // (int4, fp4:e2m1, mxfp4, nvfp4, nf4, lut4, ...; sweep_format_config)
  std::vector<std::string> formats;
  std::vector<std::string> methods = {"minmax"};  // minmax, mse, percentile, entropy, adaround, brecq, gptq
  int adaround_iterations = 3000;
  int brecq_iterations = 2000;  // method brecq: iterations per block
  std::string calib_data = "fmnist::train";
  std::string eval_data = "fmnist::test";
  int64_t calib_batches = 8;
  int64_t batch_size = 128;
  bool fold_bn = true;
  bool first_last_8bit = false;  // first conv, last linear and the input at 8 bits
  std::string out_dir;
  bool resume = false;
  bool progress = true;
  std::string device = "cpu";  // where calibration and evaluation run (quant/device.h parse_device)
  std::string scores;  // which element of a tuple, list or dict output is the class scores (EvalOptions)
};

struct SweepRow {
  std::string model, method;
  int wbits = 0, abits = 0;  // 32 = float
  std::string format;        // a --formats row: the format ("" for a bit pair)
  double top1 = 0, top5 = 0, agreement = -1;
  double seconds = 0;  // wall time of the row: quantize + calibrate + evaluate (float: evaluate)
};
// {model, method, wbits, abits, top1, top5, seconds[, format][, agreement]}: a line of
// results.jsonl, an element of results.json, a row from Python (graph/point.h)
void to_json(nlohmann::json& j, const SweepRow& r);

// Runs the sweep; returns every row (including float baselines and resumed rows).
// `on_row` sees each row as it completes (the CLI prints the table from it).
std::vector<SweepRow> run_sweep(const SweepOptions& options,
                                const std::function<void(const SweepRow&)>& on_row = nullptr);

// The config a method and a bit pair stand for (what a user would write by hand): the
// conv/linear weights at W bits per channel; at A bits the input, the relu and pool outputs,
// every activation a conv, linear or matmul reads (`feeds`: SiLU, GELU, LayerNorm, softmax,
// a squeeze-excite product...) and the residual adds (signed).
std::string sweep_config(const std::string& method, int wbits, int abits, bool first_last_8bit);

// The config of a method and a number format for weights and activations: a plain `intN`
// is sweep_config(method, N, N); any other format quantizes the conv/linear weights (per
// output channel where the format has a scale of its own, per block for MX and NVFP4) and
// the input, the relu, pool and add outputs and every activation a conv, linear or matmul
// reads. Activation calibrators a format cannot use
// are replaced as docs/formats.md says (NVFP4: minmax; entropy on a non-integer format: mse);
// AdaRound, BRECQ and GPTQ decide integer rounding and refuse any other format.
std::string sweep_format_config(const std::string& method, const std::string& format, bool first_last_8bit);

struct QuantizeOptions;
// Sets what a sweep or search method asks of quantize() beyond its config (sweep_config):
// AdaRound's or BRECQ's iterations, BRECQ's samples (at most the calibration samples of
// qo->calib_batches x qo->batch_size), GPTQ.
void set_method_options(const std::string& method, int adaround_iterations, int brecq_iterations,
                        QuantizeOptions* qo);

// Parses "8,6,4" into {8,6,4}; throws anybit::Error naming the flag.
std::vector<int> parse_bits_list(const std::string& text, const std::string& flag);

// The frame the sweep's and the search's plots share: a W x H white SVG with `title`, and
// top-1 gridlines 0..100% on a plot area of pw x ph at (L, T); the caller adds its x axis,
// lines and legend and closes the </svg>.
std::string svg_accuracy_frame(int W, int H, int L, int T, double pw, double ph, const std::string& title);

// Writes DIR/results.csv, DIR/results.json and DIR/accuracy.svg from the rows.
void write_sweep_reports(const std::string& dir, const std::vector<SweepRow>& rows);

}  // namespace anybit
