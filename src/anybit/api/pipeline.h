// The pipeline every front end (the CLI, Python, the sweep) runs, in one place: load and
// analyze, fold BatchNorm, equalize across layers (prepare_model), then quantize and save
// (quantize_model).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "anybit/api/quantize.h"
#include "anybit/graph/graph.h"
#include "anybit/ptq/cle.h"

namespace anybit {

struct PrepareOptions {
  bool fold_bn = false;    // fold BatchNorm into the preceding convs
  bool cle = false;        // cross-layer equalization (needs fold_bn)
  bool cle_relu6 = false;  // also across ReLU6, turning it into ReLU (implies cle)
};

struct PreparedModel {
  ModelGraph graph;
  std::vector<Uncovered> uncovered;  // the ops without points, as loaded
  int folded = 0;                    // BatchNorms folded
  CleResult cle;                     // what equalization did (pairs 0 without it)
};

// Throws anybit::Error naming the file or the option at fault.
PreparedModel prepare_model(const std::string& path, const PrepareOptions& options);

struct QuantizedModel {
  std::vector<Uncovered> uncovered;  // the ops without points, as loaded
  int folded = 0;                    // BatchNorms folded
  CleResult cle;                     // what equalization did
  QuantizeResult result;
};
// prepare_model, then quantize by `config` on `calib` (may be null where nothing needs data),
// then, unless `out_path` is empty, save the quantized model there atomically. `on_prepared`
// (optional) sees the prepared model before calibration starts, for messages.
QuantizedModel quantize_model(const std::string& path, const Config& config, const DataSource* calib,
                              const PrepareOptions& prepare, const QuantizeOptions& options,
                              const std::string& out_path = "",
                              const std::function<void(const PreparedModel&)>& on_prepared = nullptr);

}  // namespace anybit
