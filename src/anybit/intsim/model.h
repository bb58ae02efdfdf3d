// The exported integer model: what a directory with manifest.json and .npy arrays holds
// once loaded, how it is validated, and how it is saved. docs/integer-format.md is the
// user-facing description of the format; this header is its in-memory twin.
//
// A model is a list of integer ops in topological order over named tensors. Every tensor
// carries uniform quantization parameters (scale, zero point, integer range); the engine
// only ever uses the integers, the scales are there so a reader can dequantize.
//
// Loading validates everything before the engine sees it (array files, dtypes, shapes
// against the declared fields, tensor names, value ranges), and every error names the
// manifest, the field and what was expected, e.g.
//   m/manifest.json: ops[3].weight: expected an int8, int16 or int32 array of shape
//   [16,1,3,3], got int32 [16,3,3]
// so a model that loads cannot make the engine read out of bounds or overflow.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "anybit/base/error.h"
#include "anybit/base/npy.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {

constexpr int kFormatVersion = 1;

enum class OpKind {
  kConv2d,
  kLinear,
  kAdd,
  kRelu,
  kClamp,
  kMaxPool2d,
  kAvgPool2d,
  kGlobalAvgPool,
  kAdaptiveAvgPool2d,
  kFlatten,
  kConcat,
};

const char* op_kind_name(OpKind kind);  // "conv2d", "global_avgpool", ...
// Throws Error listing the known kinds.
OpKind parse_op_kind(const std::string& name);

// Uniform quantization of one tensor: x = (q - zero_point) * scale, q in [qmin, qmax].
struct QuantParams {
  double scale = 1.0;
  int32_t zero_point = 0;
  int32_t qmin = -128;
  int32_t qmax = 127;
};

// An integer array of the model (weight or bias), as stored in its .npy file.
struct IntArray {
  std::string file;  // file name inside the model directory; "" lets save_model choose
  DType dtype = DType::kInt8;
  std::vector<int64_t> shape;
  std::vector<int32_t> data;  // C order
  bool empty() const { return shape.empty() && data.empty(); }
};

// A model input or output. Inputs declare everything; for outputs the shape and the
// quantization are those of the named tensor (filled in by validate_model).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // without the batch dimension
  QuantParams q;
};

// One op. The fields used depend on the kind (see docs/integer-format.md); the others
// keep their defaults. Pair fields are (height, width).
struct Op {
  OpKind kind = OpKind::kRelu;
  std::string name;                 // point name, e.g. "layer1.0.conv1"
  std::vector<std::string> inputs;  // tensor names
  std::string output;               // tensor name
  // Output quantization. Derived from the input for relu, maxpool2d and flatten (and the
  // scale and zero point for clamp, whose qmin/qmax are its bounds).
  QuantParams out;

  // conv2d, linear: acc[o] = sum (x - x_zp) * (w[o] - w_zp[o]) + bias[o]
  IntArray weight;  // conv2d [O, C/groups, kH, kW]; linear [O, I]
  int32_t weight_qmin = -128;
  int32_t weight_qmax = 127;
  std::vector<double> weight_scale;         // 1 (per tensor) or O (per output channel)
  std::vector<int32_t> weight_zero_point;   // 1 or O
  IntArray bias;                            // int32 [O], scale s_in * s_w[o]; empty: none
  int64_t out_channels = 0;                 // O (conv2d out_channels, linear out_features)

  // Output requantization q = clamp(z_out + M * acc, qmin, qmax): 1 or O multipliers for
  // conv2d/linear, 1 for add, avgpool2d and global_avgpool (whose M includes 1/count), 1
  // or out_h * out_w for adaptive_avgpool2d (one per output position, row-major: its
  // windows differ in size, and each M includes 1/count of its own window).
  std::vector<DyadicMultiplier> multiplier;

  // conv2d, maxpool2d, avgpool2d
  std::array<int64_t, 2> kernel{{1, 1}};
  std::array<int64_t, 2> stride{{1, 1}};
  std::array<int64_t, 2> padding{{0, 0}};
  std::array<int64_t, 2> dilation{{1, 1}};  // conv2d, maxpool2d
  int64_t groups = 1;                       // conv2d
  bool ceil_mode = false;                   // maxpool2d
  // adaptive_avgpool2d: (out_h, out_w); the windows follow from the input's size
  // (adaptive_window_begin/end in kernels.h)
  std::array<int64_t, 2> output_size{{1, 1}};

  // add, concat: one rescale per input into the output (concat) or into the common
  // high-precision domain (add, after a left shift by left_shift bits; TFLite's ADD).
  std::vector<DyadicMultiplier> input_multipliers;
  int left_shift = 0;  // add
  int64_t axis = 1;    // concat, counted with the batch as axis 0
};

struct Model {
  std::vector<TensorSpec> inputs;
  std::vector<Op> ops;  // topological order
  std::vector<TensorSpec> outputs;
  std::map<std::string, std::string> metadata;  // free-form strings (producer, source model)
};

// What validation learns about each tensor.
struct TensorInfo {
  std::vector<int64_t> shape;  // without batch
  QuantParams q;
  int producer = -1;           // op index, -1 for a model input
};

// Checks the whole model and fills the derived fields (pass-through quantization, output
// specs). `origin` starts every message ("dir/manifest.json", or "model" for one built in
// code). Returns every tensor by name.
std::map<std::string, TensorInfo> validate_model(Model& model, const std::string& origin);

// Reads dir/manifest.json and its arrays; validates. Throws Error.
Model load_model(const std::string& dir);

// Parses manifest text; `load_array` fetches an array file by its name in the manifest
// (load_model reads dir/<name>). Exposed for tests and fuzzing.
Model parse_manifest(const std::string& text, const std::string& origin,
                     const std::function<NpyArray(const std::string& file)>& load_array);

// Validates, then writes dir/manifest.json and one .npy per array (creating dir). Arrays
// without a file name are named after their op ("layer1.0.conv1.weight.npy"). Every file
// is written to a temporary name and renamed.
void save_model(const Model& model, const std::string& dir);

// The manifest text save_model writes (arrays named as save_model names them).
std::string manifest_json(const Model& model);

// Element count of a shape; throws Error (naming `what`) above 2^31 elements.
int64_t shape_numel(const std::vector<int64_t>& shape, const std::string& what);

}  // namespace intsim
}  // namespace anybit
