// Noise sweeps on the integer engine: accuracy of an integer export under a MAC model at
// several noise levels and seeds, with mean, spread and extremes per level (docs/noise.md).
//
//   NoiseSweepOptions o;
//   o.mac = "gauss:rel=0.001,0.01,0.03,0.1";   // one parameter, several values
//   o.seeds = 10;
//   NoiseSweepResult r = run_noise_sweep(load_model("w8a8_int"), *open_data("fmnist::test"), o);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anybit/export/export.h"

namespace anybit {

class DataSource;

struct NoiseSweepOptions {
  std::string mac = "exact";  // one MAC model, or one parameter given several values
  int seeds = 1;              // runs per level, seeds seed0 .. seed0 + seeds - 1 (seed0: the spec's, else 0)
  std::string out_dir;        // "": no files; else results.jsonl, noise.csv, noise.json, noise.svg
  bool resume = false;        // keep the runs already in out_dir/results.jsonl
  bool progress = true;
  // Accumulator, threads and batch size of every run (engine.mac is ignored); with
  // calib_data, the calibration of MAC models that need it (adc:range=auto).
  IntegerEvalOptions eval;
  std::string model_name, data_name;  // recorded in the files (the resume check)
};

struct NoiseRun {
  std::string mac;    // the run's model, seed included
  double value = 0;   // the swept parameter's value (0 for the exact run)
  uint64_t seed = 0;
  double top1 = 0, top5 = 0, seconds = 0;
};

struct NoiseLevel {
  std::string mac;   // the level's model without its seed
  double value = 0;
  int runs = 0;
  double mean = 0, std = 0, min = 0, max = 0;  // top-1 %, std the sample deviation (n - 1)
  double mean_top5 = 0;
};

struct NoiseSweepResult {
  std::string key;               // the swept parameter ("" for one level)
  NoiseRun exact;                // the exact MAC on the same data
  std::vector<NoiseLevel> levels;
  std::vector<NoiseRun> runs;    // every noisy run, level by level, seed by seed
};

// Runs the exact model once and every (level, seed); throws Error for a bad spec (before
// any run), a resume directory written with other options, or a model that needs
// calibration data without options.eval.calib_data.
NoiseSweepResult run_noise_sweep(const intsim::Model& model, const DataSource& data,
                                 const NoiseSweepOptions& options);

// The table the CLI prints: one line per level, mean +- std, min, max.
std::string format_noise_table(const NoiseSweepResult& r);

// The sweep as noise.json holds it (and `intsim --json` prints it): model, data,
// accumulator, key, seeds, exact, levels (mac, value, runs, top1_mean, top1_std, top1_min,
// top1_max, top5_mean) and runs (mac, value, seed, top1, top5, seconds).
std::string noise_json(const NoiseSweepResult& r, const NoiseSweepOptions& options);

}  // namespace anybit
