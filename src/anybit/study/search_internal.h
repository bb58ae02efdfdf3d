// What search.cc (run_search), search_layers.cc (the searched layers, configs and metrics) and
// search_report.cc (rows read back, the plot, the JSON forms) share. Internal to study/.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstdint>
#include <string>
#include <vector>

#include "anybit/graph/graph.h"
#include "anybit/graph/rules.h"
#include "anybit/source/data_source.h"
#include "anybit/study/search.h"

namespace anybit {
namespace search_impl {

struct Layer {
  std::string point;
  int act = -1;  // the activation quantizer feeding it (index into Model::acts), -1 if its input is float
  int64_t params = 0, macs = 0, channels = 0;
};

struct Act {
  std::string point;
  QuantSpec spec;  // as the base config plans it; its bits change
  std::vector<int> consumers;  // layers it feeds
};

struct Model {
  std::vector<Layer> layers;
  std::vector<Act> acts;  // the activation quantizers of the base config
  int64_t params = 0, macs = 0;
};

// Ops that only move or reshape data (flatten, view, dropout, ...): analyze looks through them
// from a layer back to the activation quantizer that feeds it.
bool is_layout_op(torch::jit::Node* n);

// The layers (quantized conv/linear weights), the activation quantizers and which feeds which.
Model analyze(ModelGraph& g, const Config& base, const DataSource& calib);

std::string quote(const std::string& s);

// The base config with one rule per layer (its weight width) and per activation quantizer.
std::string config_text(const std::string& base, const Model& m, const std::vector<int>& wbits,
                        const std::vector<int>& abits);

// The metric between the reference logits and a quantized model's: KL of the softmaxes or the
// relative noise power.
double kl_or_noise(const at::Tensor& ref, const at::Tensor& q, const std::string& metric);

at::Tensor run_logits(torch::jit::Module& m, const at::Tensor& x, int64_t batch, const std::string& scores);

std::string hex_hash(const std::string& s);

// A row of results.jsonl read back (--resume).
SearchRow row_from(const nlohmann::json& j);

// pareto.svg: accuracy against the budget's measure.
void write_svg(const std::string& path, const Budget& budget, const std::vector<SearchRow>& rows);

}  // namespace search_impl
}  // namespace anybit
