// Running a (quantized) model on data: evaluation (top-1/top-5, loss, agreement with a
// reference) on the fused oneDNN layers (fused_eval.h) or the TorchScript interpreter, on the
// CPU or a device, and probing what every quantizer node outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/csrc/jit/api/module.h>

#include <string>
#include <utility>
#include <vector>

#include "anybit/source/data_source.h"

namespace anybit {

// Runs a quantized model (as saved by anybit) on x and returns what every quantizer
// node outputs, in graph order, named by its point (the root attribute
// `anybit_points` maps each quantizer's first parameter tensor to its point).
struct QuantizerOutput {
  std::string point;
  std::string op;
  at::Tensor value;
};
std::vector<QuantizerOutput> probe_quantizers(torch::jit::Module& model, const at::Tensor& x);

// Where a model's class scores are in what its forward returns (docs/design.md, "Class
// scores"): the tensor it returns; from a tuple, the element `select` names (an index or a
// named tuple's field), by default the field `logits` (torchvision's GoogLeNet and Inception
// when scripted), else its only Tensor element; from a list, the index `select`; from a dict
// with string keys, the key `select` (default "logits"). Anything else, or a tuple with
// several tensors and nothing selected, is an Error naming the output's type: the picker
// never guesses between two tensors.
class ScoresPicker {
 public:
  ScoresPicker() = default;  // the output is the scores
  ScoresPicker(torch::jit::Module& model, const std::string& select);
  static bool returns_tensor(torch::jit::Module& model);
  at::Tensor operator()(const c10::IValue& out) const;
  // "" when the model returns a tensor, else where the scores are, e.g. "field 'logits'
  // (element 0) of the model's GoogLeNetOutputs"
  const std::string& describe() const { return what_; }
  // model itself, or a copy whose forward returns the scores when they are a tuple's element
  // (so that freezing and the fused layers see a tensor output), with the picker that takes
  // the scores from what that module returns
  std::pair<torch::jit::Module, ScoresPicker> returning_scores(torch::jit::Module& model) const;

 private:
  enum class Kind { kTensor, kTuple, kList, kDict } kind_ = Kind::kTensor;
  int64_t index_ = 0;
  std::string key_, what_;
};

struct EvalResult {
  int64_t samples = 0;
  double top1 = 0, top5 = 0, loss = 0;
  double agreement = -1;  // share of argmax equal to the reference model's; -1 if none
  double seconds = 0;
  // What ran the model: "onednn" (fused_eval.h) or "torchscript"; the note says why not
  // oneDNN, or how many of the convs ran in int8 on it.
  std::string runtime = "torchscript";
  std::string runtime_note;
  std::string scores;  // ScoresPicker::describe(): where the class scores were taken from
};
// {samples, top1, top5, loss, seconds, runtime[, agreement][, runtime_note]} (graph/point.h)
void to_json(nlohmann::json& j, const EvalResult& r);
struct EvalOptions {
  int64_t batch_size = 100;
  bool progress = true;
  // Evaluate a frozen copy (torch::jit::freeze): weights are fake-quantized once and
  // BatchNorm folded into the preceding conv instead of on every batch. The math is
  // the same; float rounding of the folded BatchNorm may differ in the last bit, so the
  // bit-exact checks (integer engine) evaluate unfrozen.
  bool freeze = true;
  // Run the frozen graph as fused oneDNN layers (fused_eval.h) when every op lowers; the
  // first batch is checked against the TorchScript interpreter (argmax agreement of at
  // least 99%), else the interpreter evaluates and EvalResult::runtime_note says why.
  bool fused = true;
  // where the model runs (quant/device.h parse_device): a copy of it moves there, each batch
  // goes there and its scores come back; off the CPU the interpreter runs it (no oneDNN)
  c10::Device device = c10::kCPU;
  // which element of a tuple, list or dict output holds the class scores (ScoresPicker)
  std::string scores;
};
EvalResult evaluate(torch::jit::Module& model, const DataSource& data, const EvalOptions& options,
                    torch::jit::Module* reference = nullptr);

}  // namespace anybit
