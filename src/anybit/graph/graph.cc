// Loading and saving TorchScript models, analyzing them (inlining forward, decomposing
// attention, specializing fixed branches: specialize.cc; naming the points: points.cc).
#include "anybit/graph/graph.h"

#include <nlohmann/json.hpp>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#include "anybit/graph/graph_internal.h"

namespace anybit {
namespace jit = torch::jit;

using detail::decompose_attention;
using detail::specialize_ifs;

const char* role_name(Role r) {
  switch (r) {
    case Role::kWeight: return "weight";
    case Role::kBias: return "bias";
    case Role::kActivation: return "activation";
    case Role::kInput: return "input";
  }
  return "?";
}

void to_json(nlohmann::json& j, const PointDesc& p) {
  j = {{"index", p.index}, {"name", p.name}, {"role", role_name(p.role)}, {"kind", p.kind},
       {"op", p.op},       {"module", p.module}, {"shape", p.shape},       {"params", p.numel}};
  if (!p.feeds.empty()) j["feeds"] = p.feeds;
  if (!p.also_kinds.empty()) j["also_kinds"] = p.also_kinds;
}

void to_json(nlohmann::json& j, const Uncovered& u) {
  j = {{"op", u.op}, {"module", u.module}, {"reason", u.reason}, {"where", u.where()}};
}

// The attribute path of a value produced by a chain of prim::GetAttr from `self`.
bool keeps_values(const jit::Node* n) {
  const std::string k = n->kind().toQualString();
  return n->inputs().size() >= 1 && (k == "aten::to" || k == "aten::contiguous" || k == "aten::detach" ||
                                     k == "aten::clone" || k == "aten::type_as");
}

bool attr_path(jit::Value* v, jit::Value* self, std::string* out) {
  std::vector<std::string> names;
  while (v != self) {
    jit::Node* n = v->node();
    if (n->kind() != c10::prim::GetAttr) return false;
    names.push_back(n->s(c10::attr::name));
    v = n->input(0);
  }
  std::string p;
  for (auto it = names.rbegin(); it != names.rend(); ++it) p += (p.empty() ? "" : ".") + *it;
  *out = p;
  return true;
}

bool only_user_besides_shape_checks(jit::Value* v, jit::Node* user) {
  for (const jit::Use& u : v->uses()) {
    if (u.user == user) continue;
    const auto k = u.user->kind();
    if (k != c10::aten::dim && k != c10::aten::size) return false;
  }
  return true;
}

c10::IValue resolve_attr(const jit::Module& m, const std::string& path) {
  c10::IValue cur = m._ivalue();
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string name = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    cur = cur.toObject()->getAttr(name);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

void assign_attr(jit::Module& m, const std::string& path, const at::Tensor& t) {
  const size_t dot = path.rfind('.');
  c10::IValue owner = dot == std::string::npos ? m._ivalue() : resolve_attr(m, path.substr(0, dot));
  owner.toObject()->setAttr(path.substr(dot == std::string::npos ? 0 : dot + 1), t);
}

const Point* ModelGraph::find(const std::string& name) const {
  for (const auto& p : points)
    if (p.name == name) return &p;
  return nullptr;
}

namespace detail {

// Ops that do linear algebra inside one kernel, where no point can reach it, with the reason
// shown to the user.
const std::unordered_map<std::string, std::string>& fused_ops() {
  static const std::unordered_map<std::string, std::string> m = {
      {"aten::_transformer_encoder_layer_fwd",
       "the fused fast path of nn.TransformerEncoderLayer (traced in eval mode without gradients); script the "
       "model, or trace it with gradients enabled, to record the decomposed ops"},
      {"aten::_native_multi_head_attention",
       "the fused fast path of nn.MultiheadAttention (traced in eval mode without gradients); script the model, "
       "or trace it with gradients enabled"},
      {"aten::_transformer_decoder_only_layer_fwd", "a fused transformer decoder kernel"},
      {"aten::scaled_dot_product_attention", "fused attention (scores and softmax inside one kernel)"},
      {"aten::lstm", "a recurrent layer: its gate matmuls run inside one op"},
      {"aten::gru", "a recurrent layer: its gate matmuls run inside one op"},
      {"aten::rnn_tanh", "a recurrent layer: its matmuls run inside one op"},
      {"aten::rnn_relu", "a recurrent layer: its matmuls run inside one op"},
  };
  return m;
}

bool contains_fused(jit::Block* b) {
  for (jit::Node* n : b->nodes()) {
    const std::string k = n->kind().toQualString();
    // nn.TransformerEncoder packs a padded batch into a nested tensor for its layers' fused
    // kernels only (with a key padding mask): the decomposed layers take the padded batch
    if (fused_ops().count(k) || k == "aten::_nested_tensor_from_mask") return true;
    for (jit::Block* inner : n->blocks())
      if (contains_fused(inner)) return true;
  }
  return false;
}

}  // namespace detail

WeightSlots weight_slots(const jit::Node* n) {
  const std::string k = n->kind().toQualString();
  WeightSlots w;
  if (k == "aten::conv1d" || k == "aten::conv2d" || k == "aten::conv3d" || k == "aten::linear") {
    w = {1, 2, 0};
  } else if (k == "aten::conv_transpose1d" || k == "aten::conv_transpose2d" ||
             k == "aten::conv_transpose3d") {
    w = {1, 2, 1};
  } else if (k == "aten::_convolution") {
    // transposed flag is input 6
    bool transposed = false;
    if (auto iv = jit::toIValue(n->input(6))) transposed = iv->isBool() && iv->toBool();
    w = {1, 2, transposed ? 1 : 0};
  } else if (k == "aten::matmul" || k == "aten::mm") {
    w = {1, -1, -1};  // x @ W: W's output axis is its last
  }
  return w;
}

namespace {
// What a PyTorch archive that is not TorchScript holds, from its record names: "" if unknown.
std::string saved_as(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    bool data = false, constants = false, exported = false;
    for (const std::string& n : reader.getAllRecords()) {
      data |= n == "data.pkl";
      constants |= n == "constants.pkl";
      exported |= n == "archive_format" || n.find("exported_program") != std::string::npos ||
                  n.rfind("models/", 0) == 0;
    }
    if (exported) return "a torch.export program (torch.export.save), not TorchScript";
    if (data && !constants) return "saved by torch.save (a pickled nn.Module or a state_dict), not TorchScript";
  } catch (const std::exception&) {
  }
  return "";
}
}  // namespace

torch::jit::Module load_module(const std::string& path) {
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot open model file (does it exist?)");
  }
  try {
    // onto the CPU whatever device it was saved from (a model saved on a GPU loads anywhere;
    // the front ends move it to --device)
    jit::Module m = torch::jit::load(path, c10::Device(c10::kCPU));
    if (!m.find_method("forward"))
      throw Error(path + ": the TorchScript module has no forward method");
    m.eval();
    return m;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string kind = saved_as(path);
    const std::string how = "; anybit reads TorchScript: save the model with torch.jit.script(model).save(path) or "
                            "torch.jit.trace(model, example_input).save(path) (in Python, anybit.quantize also takes "
                            "the nn.Module itself)";
    if (!kind.empty()) throw Error(path + ": " + kind + how);
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    what = what.substr(0, what.find(". This is an internal miniz error"));  // not "likely corrupted" guesses
    throw Error(path + ": not a TorchScript model file (" + what + ")" + how);
  }
}

jit::Value* insert_snapshot(jit::Graph& graph, jit::Value* v) {
  jit::Node* producer = v->node();
  // a value made inside a block is read where the block ends: the copy goes to the return
  jit::Node* before = producer->kind() == c10::prim::Param ? *graph.nodes().begin()
                      : producer->owningBlock() == graph.block() ? producer->next()
                                                                 : graph.return_node();
  jit::WithInsertPoint guard(before);
  jit::Node* copy = graph.create(c10::aten::clone, {v, graph.insertConstant(c10::IValue())});
  graph.insertNode(copy);
  copy->output()->setType(v->type());
  return copy->output();
}

void invalidate_plan(ModelGraph& g) {
  auto& fn = g.module.get_method("forward").function();
  if (auto* gf = jit::tryToGraphFunction(fn)) gf->clear_optimized_graphs();
}

ModelGraph analyze_module(jit::Module module, const std::string& path) {
  ModelGraph g;
  g.path = path;
  g.module = module;
  g.graph = jit::toGraphFunction(g.module.get_method("forward").function()).graph();
  jit::Inline(*g.graph);
  decompose_attention(g.graph);
  specialize_ifs(g.graph, g.module, false);
  invalidate_plan(g);
  find_points(g);
  return g;
}

ModelGraph load_model(const std::string& path) { return analyze_module(load_module(path), path); }

c10::Device module_device(const jit::Module& m) {
  for (const at::Tensor& p : m.parameters()) return p.device();
  for (const at::Tensor& b : m.buffers()) return b.device();
  return c10::kCPU;
}

ModulesOnDevice::ModulesOnDevice(std::vector<jit::Module> modules, c10::Device device) {
  if (device.is_cpu()) return;
  modules_ = std::move(modules);
  for (jit::Module& m : modules_) m.to(device);
}

ModulesOnDevice::~ModulesOnDevice() {
  for (jit::Module& m : modules_) m.to(at::kCPU);
}

std::vector<c10::IValue> default_inputs(const torch::jit::Module& m) {
  std::vector<c10::IValue> out;
  const auto method = m.find_method("forward");
  if (!method) return out;
  const c10::FunctionSchema& schema = method->function().getSchema();
  for (size_t i = 2; i < schema.arguments().size(); ++i) {
    const auto& d = schema.arguments()[i].default_value();
    out.push_back(d ? *d : c10::IValue());  // check_one_input refuses a second required input
  }
  return out;
}

void check_one_input(const torch::jit::Module& m, const std::string& what) {
  const auto method = m.find_method("forward");
  if (!method) return;  // load_module refuses a module without forward
  const c10::FunctionSchema& schema = method->function().getSchema();
  std::vector<std::string> required;
  for (size_t i = 1; i < schema.arguments().size(); ++i)
    if (!schema.arguments()[i].default_value()) required.push_back(schema.arguments()[i].name());
  if (required.size() <= 1) return;
  std::string names;
  for (size_t i = 0; i < required.size(); ++i) names += (i ? ", " : "") + required[i];
  throw Error(what + ": the model's forward takes " + std::to_string(required.size()) + " inputs (" + names +
              "), and anybit feeds each batch to it as one tensor: script or trace a wrapper whose forward takes " +
              required[0] + " alone and builds the others (an attention mask from " + required[0] +
              ", a fixed size), or give them default values");
}

void save_module(torch::jit::Module& module, const std::string& path) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  try {
    module.save(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    std::string what = e.what();
    throw Error(path + ": cannot save model: " + what.substr(0, what.find('\n')));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write (rename from temporary file failed)");
  }
}

}  // namespace anybit
