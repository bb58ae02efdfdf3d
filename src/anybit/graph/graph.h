// The model as anybit sees it: a TorchScript module whose forward graph is inlined into
// one flat graph, and the named quantization points found in it (weights, biases, op
// outputs, model inputs), in forward order. Names follow the user's module paths:
//   features.0.weight   layer1.0.conv1.bias   features.1:out   layer1.0:add:out   input.0
// A module called twice owns one point per call: `layer1.0.relu:out`, `layer1.0.relu:out2`.
// Ops outside any leaf module are named by their kind: `layer1.0:add:out`, `flatten:out`.
#pragma once

#include <torch/script.h>

#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "anybit/graph/point.h"
#include "anybit/quant/spec.h"

namespace anybit {

struct Point : PointDesc {
  // graph handles, valid for the graph the point was found in
  torch::jit::Value* value = nullptr;  // the tensor to quantize
  torch::jit::Node* node = nullptr;    // weights/biases: the consuming op; outputs: the producer
  bool inplace = false;                // producer is an in-place op (relu_, add_)
  std::string attr_path;               // weights/biases: attribute path from the root
  // weights/biases: the further ops that read the same attribute (a module called twice, a
  // weight tied to another layer's) and the value each reads it through; they read the
  // point's quantizer too
  std::vector<std::pair<torch::jit::Node*, torch::jit::Value*>> more_uses;
};

// An op that computes (or hides) linear algebra but has no points, and why: a fused
// transformer kernel, a recurrent layer, an op inside data-dependent control flow.
struct Uncovered {
  std::string op;      // aten::lstm
  std::string module;  // its module path ("" for the root)
  std::string reason;
  // "aten::lstm in rnn", "aten::einsum in the root module": how messages name it
  std::string where() const { return op + " in " + (module.empty() ? "the root module" : module); }
};
// {op, module, reason, where}
void to_json(nlohmann::json& j, const Uncovered& u);

struct ModelGraph {
  std::string path;  // file it came from ("" if built in memory)
  torch::jit::Module module;
  std::shared_ptr<torch::jit::Graph> graph;  // forward, inlined, owned by the module
  std::vector<Point> points;
  std::vector<Uncovered> uncovered;
  int linear_algebra_ops = 0;  // conv, linear, matmul-like and fused ops found (covered or not)
  const Point* find(const std::string& name) const;
};

// Loads a TorchScript file; throws anybit::Error naming the file when it is missing,
// not a TorchScript archive, or has no forward.
torch::jit::Module load_module(const std::string& path);
// Writes through a temporary file and renames, so a failure never leaves a partial file.
void save_module(torch::jit::Module& module, const std::string& path);
// Inlines forward in place and finds the points (what PyTorch's own graph-mode
// quantization passes do before rewriting).
ModelGraph analyze_module(torch::jit::Module module, const std::string& path = "");
ModelGraph load_model(const std::string& path);
// Where a module's tensors live: the device of its first parameter (or buffer), the CPU for
// one without any. The captures (ptq/capture.h) bring each batch of data there.
c10::Device module_device(const torch::jit::Module& m);

// Moves modules to a device for a scope (calibration and the PTQ algorithms on --device
// cuda) and back to the CPU when it ends, on an error too. On the CPU it moves nothing.
class ModulesOnDevice {
 public:
  ModulesOnDevice(std::vector<torch::jit::Module> modules, c10::Device device);
  ~ModulesOnDevice();
  ModulesOnDevice(const ModulesOnDevice&) = delete;
  ModulesOnDevice& operator=(const ModulesOnDevice&) = delete;

 private:
  std::vector<torch::jit::Module> modules_;
};

// Throws Error when forward needs more than one input (arguments without defaults after
// self): the data sources feed each batch to the model as one tensor. `what` names the
// command or the file, e.g. "evaluate".
void check_one_input(const torch::jit::Module& m, const std::string& what);
// The default values of forward's arguments after the first input (`mask=None`,
// `scale: float = 2.0`), for a stack that runs forward's graph directly (a GraphFunction
// fills in no defaults): push them after the input.
std::vector<c10::IValue> default_inputs(const torch::jit::Module& m);
// Replaces prim::If on bools fixed for this module instance by the branch taken (done
// on load for attributes such as `use_res_connect`); with include_training, also
// `self.training` (the graph is then specialized to the module's current mode), followed
// by constant propagation. An If with a fused kernel on one side and not on the other
// (the fast paths of nn.TransformerEncoderLayer and nn.MultiheadAttention) keeps the other,
// decomposed side, whose linear algebra then gets points. Re-finds the points.
void specialize_fixed_ifs(ModelGraph& g, bool include_training);

// Re-scan an already analyzed graph (after a rewrite the handles change).
void find_points(ModelGraph& g);

// Attribute paths: the chain of prim::GetAttr from `self` that produces v
// ("layer1.conv1.weight"); false if v is not such a chain.
bool attr_path(torch::jit::Value* v, torch::jit::Value* self, std::string* out);

// Ops whose output holds the values of their first input: a dtype, device or layout change
// (aten::to, contiguous, detach, clone, type_as). A parameter read through them is still a
// weight point, its quantizer before them (graph/points.cc), and the export reads the
// quantizer through them (export/export.cc).
bool keeps_values(const torch::jit::Node* n);

// Which input of a conv/linear-like node is the weight and which the bias (-1: none), and
// the weight's output-channel axis: {1, 2, 0} for conv1d/2d/3d, linear and a non-transposed
// _convolution; axis 1 for the transposed convolutions; {1, -1, -1} for matmul and mm.
struct WeightSlots {
  int weight = -1, bias = -1, axis = 0;
};
WeightSlots weight_slots(const torch::jit::Node* n);
// The value at an attribute path of the module, and assignment to it.
c10::IValue resolve_attr(const torch::jit::Module& m, const std::string& path);
void assign_attr(torch::jit::Module& m, const std::string& path, const at::Tensor& t);

// True when every use of v other than by `user` only reads its shape (aten::dim,
// aten::size: the input checks of BatchNorm and friends, which stay in the graph of a
// root-level module). Rewrites that keep v's shape may then treat `user` as v's only reader.
bool only_user_besides_shape_checks(torch::jit::Value* v, torch::jit::Node* user);

// A copy of v taken right after its producer (at the top of the graph for an input), before
// any later in-place op (`out += identity`, `ReLU(inplace=True)`) can change it: what a
// capture of v must read. The caller destroys the returned value's node when done.
torch::jit::Value* insert_snapshot(torch::jit::Graph& graph, torch::jit::Value* v);

// Drops forward's cached optimized graphs after an edit. An executor already built by
// running forward keeps its plan in LibTorch 1.13, so anybit edits graphs before any run.
void invalidate_plan(ModelGraph& g);

// Fills the shape of activation points by running one example input through an
// observing copy of the graph.
void infer_activation_shapes(ModelGraph& g, const std::vector<at::Tensor>& example);

}  // namespace anybit
