// Loading TorchScript models, inlining forward, and naming the quantization points.
#include "anybit/graph/graph.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

namespace anybit {
namespace jit = torch::jit;

const char* role_name(Role r) {
  switch (r) {
    case Role::kWeight: return "weight";
    case Role::kBias: return "bias";
    case Role::kActivation: return "activation";
    case Role::kInput: return "input";
  }
  return "?";
}

// The attribute path of a value produced by a chain of prim::GetAttr from `self`.
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

namespace {

// aten op -> point kind. Ops that only move or reshape data (view, flatten, dropout in
// eval, size) are not points: quantizing them again would change nothing.
const std::unordered_map<std::string, std::string>& op_kinds() {
  static const std::unordered_map<std::string, std::string> m = {
      {"aten::conv1d", "conv"}, {"aten::conv2d", "conv"}, {"aten::conv3d", "conv"},
      {"aten::_convolution", "conv"}, {"aten::conv_transpose1d", "conv"},
      {"aten::conv_transpose2d", "conv"}, {"aten::conv_transpose3d", "conv"},
      {"aten::linear", "linear"}, {"aten::addmm", "linear"}, {"aten::matmul", "linear"},
      {"aten::mm", "linear"}, {"aten::bmm", "linear"},
      {"aten::relu", "relu"}, {"aten::relu_", "relu"}, {"aten::relu6", "relu"},
      {"aten::relu6_", "relu"}, {"aten::hardtanh", "relu"}, {"aten::hardtanh_", "relu"},
      {"aten::leaky_relu", "relu"}, {"aten::leaky_relu_", "relu"},
      {"aten::sigmoid", "act"}, {"aten::tanh", "act"}, {"aten::gelu", "act"},
      {"aten::silu", "act"}, {"aten::silu_", "act"}, {"aten::hardswish", "act"},
      {"aten::hardswish_", "act"}, {"aten::hardsigmoid", "act"}, {"aten::elu", "act"},
      {"aten::add", "add"}, {"aten::add_", "add"}, {"aten::mul", "mul"}, {"aten::mul_", "mul"},
      {"aten::cat", "cat"},
      {"aten::max_pool1d", "pool"}, {"aten::max_pool2d", "pool"}, {"aten::max_pool3d", "pool"},
      {"aten::avg_pool1d", "pool"}, {"aten::avg_pool2d", "pool"}, {"aten::avg_pool3d", "pool"},
      {"aten::adaptive_avg_pool1d", "pool"}, {"aten::adaptive_avg_pool2d", "pool"},
      {"aten::adaptive_max_pool2d", "pool"},
      {"aten::batch_norm", "bn"}, {"aten::mean", "mean"},
      {"aten::flatten", "flatten"},
  };
  return m;
}

bool is_tensor(const jit::Value* v) { return v->type()->cast<c10::TensorType>() != nullptr; }

struct ModuleInfo {
  std::string path;
  bool leaf = false;  // a torch.nn module (one op per call, named `path:out`)
};

ModuleInfo module_of(const jit::Node* n) {
  ModuleInfo info;
  auto cs = n->callstack();
  if (!cs) return info;
  std::string cls;
  for (const auto& entry : (*cs)->vec()) {
    const auto& mi = std::get<jit::kModuleInstanceInfo>(entry);
    if (!mi) continue;
    const std::string inst = mi->instance_name();
    if (inst == "SELF" || inst.empty()) continue;
    info.path += (info.path.empty() ? "" : ".") + inst;
    cls = mi->class_type() ? mi->class_type()->name()->qualifiedName() : "";
  }
  info.leaf = !info.path.empty() && cls.rfind("__torch__.torch.nn.modules.", 0) == 0;
  return info;
}

// Which input of a conv/linear-like node is the weight and which the bias, and the
// weight's output-channel axis.
struct WeightSlots {
  int weight = -1, bias = -1, axis = 0;
};
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

// Resolves a bool that is fixed for this module instance: a constant, or a chain of
// GetAttr from self ending in a bool attribute (`self.use_res_connect`), or its negation.
// `training` is left alone so that train()/eval() keep their meaning.
bool fixed_bool(jit::Value* v, jit::Value* self, const jit::Module& m, bool* out,
                bool include_training) {
  jit::Node* n = v->node();
  if (n->kind() == c10::prim::Constant) {
    auto iv = jit::toIValue(v);
    if (iv && iv->isBool()) {
      *out = iv->toBool();
      return true;
    }
    return false;
  }
  if (n->kind() == c10::aten::__not__) {
    bool b;
    if (!fixed_bool(n->input(0), self, m, &b, include_training)) return false;
    *out = !b;
    return true;
  }
  std::string ap;
  if (!attr_path(v, self, &ap)) return false;
  if (!include_training &&
      (ap == "training" || (ap.size() > 9 && ap.compare(ap.size() - 9, 9, ".training") == 0)))
    return false;
  c10::IValue iv = resolve_attr(m, ap);
  if (!iv.isBool()) return false;
  *out = iv.toBool();
  return true;
}

// Replaces each prim::If on a fixed bool by the branch it always takes, so that the ops
// of, e.g., MobileNetV2's residual blocks appear in the flat graph and get their points.
void specialize_ifs(jit::Graph& graph, const jit::Module& m, bool include_training) {
  jit::Value* self = graph.inputs().at(0);
  bool changed = true;
  while (changed) {
    changed = false;
    for (auto it = graph.nodes().begin(); it != graph.nodes().end(); ++it) {
      jit::Node* n = *it;
      if (n->kind() != c10::prim::If) continue;
      bool cond;
      if (!fixed_bool(n->input(0), self, m, &cond, include_training)) continue;
      jit::Block* b = n->blocks().at(cond ? 0 : 1);
      while (b->nodes().begin() != b->nodes().end()) (*b->nodes().begin())->moveBefore(n);
      for (size_t i = 0; i < n->outputs().size(); ++i)
        n->outputs()[i]->replaceAllUsesWith(b->outputs()[i]);
      n->destroy();
      changed = true;
      break;
    }
  }
}

}  // namespace

void specialize_fixed_ifs(ModelGraph& g, bool include_training) {
  specialize_ifs(*g.graph, g.module, include_training);
  jit::ConstantPropagation(g.graph);
  invalidate_plan(g);
  find_points(g);
}

torch::jit::Module load_module(const std::string& path) {
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot open model file (does it exist?)");
  }
  try {
    jit::Module m = torch::jit::load(path);
    if (!m.find_method("forward"))
      throw Error(path + ": the TorchScript module has no forward method");
    m.eval();
    return m;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(path + ": not a TorchScript model file (" + what +
                "); save one with torch.jit.script(model).save(path) or torch.jit.trace");
  }
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
  specialize_ifs(*g.graph, g.module, false);
  invalidate_plan(g);
  find_points(g);
  return g;
}

ModelGraph load_model(const std::string& path) { return analyze_module(load_module(path), path); }

void find_points(ModelGraph& g) {
  g.points.clear();
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  int index = 0;
  int input_no = 0;
  for (size_t i = 1; i < graph.inputs().size(); ++i) {
    jit::Value* v = graph.inputs()[i];
    if (!is_tensor(v)) continue;
    Point p;
    p.name = "input." + std::to_string(input_no++);
    p.role = Role::kInput;
    p.kind = "input";
    p.channel_axis = 1;
    p.value = v;
    p.node = nullptr;
    p.index = index++;
    g.points.push_back(p);
  }
  std::map<std::string, int> name_count;
  auto unique = [&](const std::string& base, const std::string& suffix) {
    int k = ++name_count[base + suffix];
    return k == 1 ? base + suffix : base + suffix + std::to_string(k);
  };
  std::map<std::string, int> kind_count_in_module;
  for (jit::Node* n : graph.nodes()) {
    const std::string op = n->kind().toQualString();
    auto it = op_kinds().find(op);
    if (it == op_kinds().end()) continue;
    const std::string& kind = it->second;
    if ((kind == "add" || kind == "mul") &&
        (n->inputs().size() < 2 || !is_tensor(n->input(0)) || !is_tensor(n->input(1))))
      continue;  // x + 1 is not a point
    if (n->outputs().size() != 1 || !is_tensor(n->output())) continue;
    ModuleInfo mi = module_of(n);
    // parameters first: they are read before the op runs
    WeightSlots ws = weight_slots(n);
    for (int slot : {ws.weight, ws.bias}) {
      if (slot < 0 || slot >= static_cast<int>(n->inputs().size())) continue;
      jit::Value* v = n->input(slot);
      std::string ap;
      if (!attr_path(v, self, &ap)) continue;  // Optional[Tensor] biases too
      c10::IValue t = resolve_attr(g.module, ap);
      if (!t.isTensor()) continue;
      Point p;
      p.name = ap;
      p.role = slot == ws.weight ? Role::kWeight : Role::kBias;
      p.kind = kind;
      p.op = op;
      p.module = mi.path;
      p.shape = t.toTensor().sizes().vec();
      p.numel = t.toTensor().numel();
      p.channel_axis = ws.axis >= 0 ? ws.axis : static_cast<int>(p.shape.size()) - 1;
      if (p.role == Role::kBias) p.channel_axis = 0;
      p.value = v;
      p.node = n;
      p.attr_path = ap;
      p.index = index++;
      // one weight read by several ops keeps one point
      bool seen = false;
      for (const auto& q : g.points) seen = seen || q.name == p.name;
      if (!seen) g.points.push_back(p);
    }
    if (kind == "flatten") continue;  // named for completeness of kinds, not a point
    Point p;
    p.role = Role::kActivation;
    p.kind = kind;
    p.op = op;
    p.module = mi.path;
    if (mi.leaf) {
      p.name = unique(mi.path, ":out");
    } else {
      const std::string key = mi.path + "/" + kind;
      int k = kind_count_in_module[key]++;
      std::string base = (mi.path.empty() ? "" : mi.path + ":") + kind + (k ? "_" + std::to_string(k) : "");
      p.name = unique(base, ":out");
    }
    p.value = n->output();
    p.node = n;
    p.channel_axis = 1;
    p.inplace = op.back() == '_';
    p.index = index++;
    g.points.push_back(p);
  }
}

}  // namespace anybit
