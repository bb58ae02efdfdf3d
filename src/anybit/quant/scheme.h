// A quantizer scheme is one entry here: how its parameters come from a weight or from
// calibration statistics, and which fake-quant op (quant/node.h) it inserts reading them.
// The integer form export gives each op is in node.h's OpInfo. Adding a scheme is the
// checklist of docs/design.md ("Quantizer nodes"): its spec (quant/spec.h), one entry in
// scheme.cc, its kernel with a reference twin (quant/fake_quant.h), and tests.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "anybit/quant/spec.h"

namespace torch {
namespace jit {
struct Graph;
struct Value;
}  // namespace jit
}  // namespace torch

namespace anybit {
namespace calib {
class Observer;
}  // namespace calib

namespace scheme {

// One point's quantizer parameters, before they are registered on the module.
struct Params {
  at::Tensor scale, zero_point;  // uniform; minifloat: scale only
  at::Tensor hi;                 // log: top exponent
  at::Tensor alpha, delta;       // binary / ternary / pact
  at::Tensor levels;             // nf4, lut: [L] or [C, L], sorted, in units of scale
  double ste_clip = 1.0;
  double grad_factor = 1.0;      // LSQ's gradient scale
  std::string summary;           // for the report: "scale=0.0123 zp=0"
  double clipped_low = -1, clipped_high = -1;  // shares of the calibration values outside the range
};

// Where a scheme inserts its node. `param` registers `what` on the root module as
// qnode::attribute(point, what) (a parameter when `learned`, else a buffer) and returns
// a graph value reading it.
struct Site {
  torch::jit::Graph* graph = nullptr;
  std::function<torch::jit::Value*(const std::string& what, const at::Tensor& t, bool learned)> param;
  int64_t axis = -1;   // channel axis of per-channel parameters, -1 per tensor
  int64_t group = 0;   // group size of per-group parameters, 0 none
  bool portable = false;  // PyTorch's stock aten::fake_quantize_* ops only
};

struct Entry {
  const char* name;  // "uniform", "log", ...
  // parameters of a weight, from its rows [C, n] (one row per channel or group;
  // `numel` is the weight's size, for LSQ's gradient scale)
  Params (*from_weight)(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& rows,
                        int64_t numel, const std::string& where);
  // parameters of an activation or input from its calibration statistics (`per_sample`:
  // elements per sample, for LSQ's gradient scale)
  Params (*from_data)(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                      int64_t per_sample, const std::string& where);
  // whether an activation's parameters need calibration data; when they do not (fixed point's
  // step 2^-n, the block formats' scales), without_data gives them, measuring the clipping
  // on `obs` when there was data
  bool (*needs_data)(const QuantSpec& spec);
  Params (*without_data)(const QuantSpec& spec, const calib::Observer* obs);
  // whether PyTorch's stock fake_quantize ops express it (portable saves), and the node
  torch::jit::Value* (*insert)(const Site& site, const QuantSpec& spec, const Params& P, torch::jit::Value* x);
  bool (*portable)(const QuantSpec& spec);
};

// The entry of a spec (not float); throws anybit::Error for a scheme without one.
const Entry& entry_of(const QuantSpec& spec);

// The calls quantize() makes, each dispatching through the entry.
// `axis`: the point's default channel axis.
Params weight_params(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& w, int axis,
                     const std::string& where);
Params data_params(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                   int64_t per_sample, const std::string& where);
// Whether an activation with this spec needs calibration data, and its parameters when it
// does not (with `obs`, when there was data, the clipping it forces is measured).
bool needs_data(const QuantSpec& spec);
Params params_without_data(const QuantSpec& spec, const calib::Observer* obs);
// Validates a calibrator name early (before any data runs); throws anybit::Error at `where`.
void check_calibrator(const std::string& calibrator, const std::string& where);

// The uniform grid (scale, zero point) of a float range for a uniform spec: calib's
// grid_for_range with the spec's target, or 2^-n for fixed point.
void uniform_grid(const QuantSpec& spec, double lo, double hi, float* s, float* z);
// The warning for clipping that the spec forces (not the calibrator's choice), or "".
std::string clip_warning(const std::string& point, const QuantSpec& spec, const calib::Observer& obs,
                         const Params& P, double threshold);
std::string fmt_scale(double s, double z);  // "scale=0.0123 zp=0"

}  // namespace scheme
}  // namespace anybit
