// Naming the quantization points of an analyzed graph (find_points) and the coverage of its
// linear algebra.
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/jit.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "anybit/graph/graph.h"
#include "anybit/graph/graph_internal.h"

namespace anybit {
namespace jit = torch::jit;

using detail::fixed_bool;
using detail::fused_ops;
using detail::is_tensor;

namespace {

// A conv or linear op (whose input 1 is a weight; matmul's operands may be two activations).
bool has_weight_input(jit::Node* n) {
  const std::string k = n->kind().toQualString();
  return k == "aten::linear" || k == "aten::conv1d" || k == "aten::conv2d" || k == "aten::conv3d" ||
         k == "aten::conv_transpose1d" || k == "aten::conv_transpose2d" || k == "aten::conv_transpose3d" ||
         k == "aten::_convolution";
}

// Whether v is computed from forward's inputs (not from parameters and constants alone).
bool depends_on_data(const jit::Value* v, const jit::Value* self, std::unordered_map<const jit::Value*, bool>& memo) {
  if (v == self) return false;
  auto it = memo.find(v);
  if (it != memo.end()) return it->second;
  memo[v] = false;  // (a graph has no cycles; this ends the recursion on shared producers)
  const jit::Node* n = v->node();
  bool d = n->kind() == c10::prim::Param;  // forward's own inputs (self handled above)
  for (const jit::Value* in : n->inputs()) d = d || depends_on_data(in, self, memo);
  return memo[v] = d;
}

// aten::t, aten::numpy_T, aten::mT, or aten::transpose(x, 0, 1) / (x, -2, -1) / permute(x, [1, 0])
// of a 2-d value: a matrix read transposed.
bool transposes_matrix(jit::Node* n) {
  const std::string k = n->kind().toQualString();
  if (k == "aten::t" || k == "aten::numpy_T" || k == "aten::mT") return true;
  auto ints = [&](size_t i) { return jit::toIValue(n->input(i)); };
  if (k == "aten::transpose" && n->inputs().size() == 3) {
    const auto a = ints(1), b = ints(2);
    if (!a || !b || !a->isInt() || !b->isInt()) return false;
    const int64_t x = a->toInt(), y = b->toInt();
    return (x == 0 && y == 1) || (x == 1 && y == 0) || (x == -2 && y == -1) || (x == -1 && y == -2);
  }
  if (k == "aten::permute" && n->inputs().size() == 2) {
    const auto d = ints(1);
    if (!d || !d->isIntList()) return false;
    const auto v = d->toIntVector();
    return v == std::vector<int64_t>{1, 0};
  }
  return false;
}

// aten op -> point kind. Ops that only move or reshape data (view, flatten, dropout in
// eval, size) are not points: quantizing them again would change nothing.
const std::unordered_map<std::string, std::string>& op_kinds() {
  static const std::unordered_map<std::string, std::string> m = {
      {"aten::conv1d", "conv"}, {"aten::conv2d", "conv"}, {"aten::conv3d", "conv"},
      {"aten::_convolution", "conv"}, {"aten::conv_transpose1d", "conv"},
      {"aten::conv_transpose2d", "conv"}, {"aten::conv_transpose3d", "conv"},
      {"aten::linear", "linear"}, {"aten::addmm", "linear"}, {"aten::matmul", "linear"},
      {"aten::mm", "linear"}, {"aten::bmm", "linear"}, {"aten::baddbmm", "linear"}, {"aten::einsum", "matmul"},
      {"aten::softmax", "softmax"}, {"aten::_softmax", "softmax"}, {"aten::log_softmax", "softmax"},
      {"aten::layer_norm", "norm"}, {"aten::group_norm", "norm"},
      {"aten::embedding", "embedding"},
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

struct ModuleInfo {
  std::string path;
  bool leaf = false;  // a torch.nn module (one op per call, named `path:out`)
};

// The child of `m` called `name`; a container that is never called itself (ModuleList,
// Sequential, ModuleDict: a traced model records `enc.0` for `enc.layers.0`) is looked
// through, and its name is put into *path too.
bool child_module(const jit::Module& m, const std::string& name, jit::Module* out, std::string* path) {
  if (m.hasattr(name) && m.attr(name).isModule()) {
    *out = m.attr(name).toModule();
    *path += (path->empty() ? "" : ".") + name;
    return true;
  }
  for (const jit::NameModule& c : m.named_children()) {
    if (c.value.hasattr(name) && c.value.attr(name).isModule()) {
      *out = c.value.attr(name).toModule();
      *path += (path->empty() ? "" : ".") + c.name + "." + name;
      return true;
    }
  }
  return false;
}

ModuleInfo module_of(const jit::Node* n, const jit::Module& root) {
  ModuleInfo info;
  auto cs = n->callstack();
  if (!cs) return info;
  std::string cls;
  jit::Module cur = root;
  bool tracking = true;  // the path so far names real submodules of root
  for (const auto& entry : (*cs)->vec()) {
    const auto& mi = std::get<jit::kModuleInstanceInfo>(entry);
    if (!mi) continue;
    const std::string inst = mi->instance_name();
    if (inst == "SELF" || inst.empty()) continue;
    jit::Module next;
    if (!(tracking && child_module(cur, inst, &next, &info.path))) {
      tracking = false;
      info.path += (info.path.empty() ? "" : ".") + inst;
    } else {
      cur = next;
    }
    cls = mi->class_type() ? mi->class_type()->name()->qualifiedName() : "";
  }
  // a torch.nn module without children runs one op per call (nn.MultiheadAttention, with its
  // out_proj child, runs several and its own ops are named by kind)
  info.leaf = !info.path.empty() && cls.rfind("__torch__.torch.nn.modules.", 0) == 0 &&
              !(tracking && cur.named_children().size() > 0);
  return info;
}

}  // namespace

namespace {

// Linear algebra that should have points: the ops of kind conv and linear (convs, linear
// layers, matmuls), and the fused ops above that hide them.
bool is_linear_algebra(const std::string& op) {
  if (fused_ops().count(op)) return true;
  auto it = op_kinds().find(op);
  // einsum's kind is matmul: it has points only as a product of two activations
  return it != op_kinds().end() && (it->second == "conv" || it->second == "linear" || op == "aten::einsum");
}

// The tensor operands of an einsum (aten::einsum(equation, Tensor[] operands, path)) when
// they are activations in a list built in the graph; else why it gets no points.
std::string einsum_operands(jit::Node* n, jit::Value* self, std::vector<jit::Value*>* operands) {
  jit::Node* list = n->inputs().size() >= 2 ? n->input(1)->node() : nullptr;
  if (!list || list->kind() != c10::prim::ListConstruct) return "einsum over a list not built in the graph";
  for (jit::Value* v : list->inputs()) {
    std::string ap;
    if (attr_path(v, self, &ap)) return "einsum with a parameter operand (" + ap + ") is not lowered to points";
    operands->push_back(v);
  }
  if (operands->size() != 2) return "einsum of " + std::to_string(operands->size()) + " operands is not lowered to points";
  return "";
}

// Integer and boolean tensors (a traced model's sizes, masks) and values computed only from
// shapes (aten::size, prim::NumToTensor and arithmetic on them) are never points.
bool shape_or_integer(jit::Value* v, std::unordered_map<jit::Value*, bool>& memo) {
  auto it = memo.find(v);
  if (it != memo.end()) return it->second;
  memo[v] = false;  // cycles cannot occur in an SSA graph; this only guards re-entry
  bool r = false;
  if (auto t = v->type()->cast<c10::TensorType>()) {
    if (auto st = t->scalarType()) r = !c10::isFloatingType(*st) && !c10::isComplexType(*st);
  }
  jit::Node* n = v->node();
  const auto k = n->kind();
  if (!r && (k == c10::prim::NumToTensor || k == c10::aten::size || k == c10::aten::dim)) r = true;
  if (!r && k == c10::prim::Constant) {  // a traced constant such as the {4} of bsz * num_heads
    auto iv = jit::toIValue(v);
    r = iv && iv->isTensor() && !at::isFloatingType(iv->toTensor().scalar_type());
  }
  if (!r && n->kind() != c10::prim::Param && n->kind() != c10::prim::GetAttr && n->kind() != c10::prim::Constant) {
    // arithmetic whose tensor inputs all come from shapes
    bool any_tensor = false, all_shape = true;
    for (jit::Value* in : n->inputs()) {
      if (!is_tensor(in)) continue;
      any_tensor = true;
      all_shape = all_shape && shape_or_integer(in, memo);
    }
    r = any_tensor && all_shape;
  }
  memo[v] = r;
  return r;
}

// Ops that only move data: a point's value seen through them is still that value.
const std::set<std::string>& layout_ops() {
  static const std::set<std::string> layout = {
      "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous", "aten::unsqueeze",
      "aten::squeeze", "aten::flatten", "aten::select", "aten::slice", "aten::expand", "aten::chunk",
      "aten::split", "aten::unbind", "prim::ListUnpack", "aten::t", "aten::unflatten", "aten::dropout",
      "aten::dropout_", "aten::feature_dropout", "aten::feature_dropout_", "aten::alpha_dropout", "aten::clone",
      "aten::detach", "prim::TupleUnpack", "aten::roll", "aten::flip", "aten::narrow", "aten::movedim",
      "aten::swapaxes", "aten::repeat", "aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::channel_shuffle",
      // nearest-neighbour upsampling copies values (bilinear computes new ones)
      "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d"};
  return layout;
}

// A layout-only op, or padding with zeros (Swin's window padding): zero is on every
// quantizer's grid that has it, as a convolution's own zero padding assumes.
bool moves_only(jit::Node* n) {
  if (layout_ops().count(n->kind().toQualString())) return true;
  const bool pad = n->kind() == c10::Symbol::fromQualString("aten::pad"),
             constant_pad = n->kind() == c10::Symbol::fromQualString("aten::constant_pad_nd");
  if (!pad && !constant_pad) return false;
  // aten::pad(input, pad, mode='constant', value=None); aten::constant_pad_nd(input, pad, value=0)
  const size_t value_at = pad ? 3 : 2;
  if (pad && n->inputs().size() > 2) {
    const auto mode = jit::toIValue(n->input(2));
    if (!mode || !mode->isString() || mode->toStringRef() != "constant") return false;
  }
  if (n->inputs().size() <= value_at) return true;
  const auto value = jit::toIValue(n->input(value_at));
  return value && (value->isNone() || (value->isScalar() && value->toScalar().toDouble() == 0.0));
}

// The kinds of linear algebra that read v as data (not as its weight or bias), directly or
// through layout-only ops, an `if`'s result (a dropout or a transpose on one side) or a list
// or tuple built and unpacked in the graph: "conv", "linear" (a weight attribute) or
// "matmul" (two activations).
void feeds_of(jit::Value* v, jit::Value* self, std::set<std::string>* out, int depth = 0) {
  if (depth > 32) return;
  for (const jit::Use& u : v->uses()) {
    jit::Node* n = u.user;
    if (n->kind() == c10::prim::Return) {  // a block's result: the owning if's output
      jit::Node* owner = n->owningBlock()->owningNode();
      if (owner && owner->kind() == c10::prim::If && u.offset < owner->outputs().size())
        feeds_of(owner->output(u.offset), self, out, depth + 1);
      continue;
    }
    if (n->kind() == c10::prim::ListConstruct || n->kind() == c10::prim::TupleConstruct) {
      for (const jit::Use& w : n->output()->uses()) {
        const auto k = w.user->kind();
        if ((k == c10::prim::ListUnpack || k == c10::prim::TupleUnpack) && u.offset < w.user->outputs().size())
          feeds_of(w.user->output(u.offset), self, out, depth + 1);
        if (k == c10::Symbol::fromQualString("aten::einsum") && w.offset == 1) out->insert("matmul");
      }
      continue;
    }
    const std::string op = n->kind().toQualString();
    auto it = op_kinds().find(op);
    if (it != op_kinds().end() && (it->second == "conv" || it->second == "linear")) {
      const WeightSlots ws = weight_slots(n);
      std::string ap;
      const bool weight_attr = ws.weight >= 0 && ws.weight < static_cast<int>(n->inputs().size()) &&
                               attr_path(n->input(ws.weight), self, &ap);
      const int slot = static_cast<int>(u.offset);
      if (weight_attr && (slot == ws.weight || slot == ws.bias)) continue;
      if (it->second == "conv" && slot != 0) continue;  // a conv's computed weight or bias
      out->insert(it->second == "conv" ? "conv" : weight_attr ? "linear" : "matmul");
    } else if (moves_only(n) && (u.offset == 0 || layout_ops().count(op))) {
      for (jit::Value* o : n->outputs()) feeds_of(o, self, out, depth + 1);
    }
  }
}

// True when v is a point's value, possibly seen through ops that only move data (view,
// transpose, chunk, ...), so that quantizing v again would change nothing.
bool reaches_point(jit::Value* v, const std::unordered_set<const jit::Value*>& point_values, int depth = 0) {
  for (; depth < 24 && v; ++depth) {
    if (point_values.count(v)) return true;
    jit::Node* n = v->node();
    if (n->kind() == c10::prim::If) {  // every branch must reach one
      for (jit::Block* b : n->blocks())
        if (!reaches_point(b->outputs()[v->offset()], point_values, depth + 1)) return false;
      return true;
    }
    if (!moves_only(n) || n->inputs().empty()) return false;
    if (n->kind() == c10::prim::TupleUnpack || n->kind() == c10::prim::ListUnpack) {
      // element k of a tuple or list built in the graph is that construct's input k
      jit::Node* src = n->input(0)->node();
      if ((src->kind() == c10::prim::TupleConstruct || src->kind() == c10::prim::ListConstruct) &&
          v->offset() < src->inputs().size()) {
        v = src->input(v->offset());
        continue;
      }
    }
    v = n->input(0);
  }
  return false;
}

}  // namespace

void find_points(ModelGraph& g) {
  g.points.clear();
  g.uncovered.clear();
  g.linear_algebra_ops = 0;
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  int index = 0;
  int input_no = 0;
  // the points' values and names, for the lookups below (one per op, not a scan of the points)
  std::unordered_set<const jit::Value*> point_values;
  std::unordered_set<std::string> point_names;
  auto add = [&](const Point& p) {
    g.points.push_back(p);
    point_values.insert(p.value);
    point_names.insert(p.name);
  };
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
    add(p);
  }
  std::map<std::string, int> name_count;
  auto unique = [&](const std::string& base, const std::string& suffix) {
    int k = ++name_count[base + suffix];
    return k == 1 ? base + suffix : base + suffix + std::to_string(k);
  };
  std::map<std::string, int> kind_count_in_module;
  std::unordered_map<jit::Value*, bool> shape_memo;
  std::unordered_map<const jit::Value*, bool> data_memo;
  // ops inside control flow that is left (data-dependent conditions, loops) get no points:
  // each linear-algebra op there is reported instead
  std::function<void(jit::Block*, const std::string&)> report_block = [&](jit::Block* b, const std::string& why) {
    for (jit::Node* n : b->nodes()) {
      const std::string op = n->kind().toQualString();
      if (is_linear_algebra(op)) {
        ++g.linear_algebra_ops;
        g.uncovered.push_back({op, module_of(n, g.module).path, why});
      }
      for (jit::Block* inner : n->blocks()) report_block(inner, why);
    }
  };
  for (jit::Node* n : graph.nodes()) {
    const std::string op = n->kind().toQualString();
    if (n->kind() == c10::prim::If || n->kind() == c10::prim::Loop) {
      bool mode;
      const std::string why =
          n->kind() == c10::prim::Loop ? "inside a loop"
          : fixed_bool(n->input(0), self, g.module, &mode, true)
              ? "inside an if on self.training (kept, so that fine-tuning has both modes)"
              : "inside an if whose condition depends on the data (not fixed for the eval-mode model)";
      for (jit::Block* b : n->blocks()) report_block(b, why);
      continue;
    }
    const bool algebra = is_linear_algebra(op);
    if (algebra) ++g.linear_algebra_ops;
    // einsum over activations (MaxViT's attention) is a matmul whose operands come as a list
    std::vector<jit::Value*> operands;
    auto fused = fused_ops().find(op);
    if (op == "aten::einsum") {
      const std::string why = einsum_operands(n, self, &operands);
      if (!why.empty()) {
        g.uncovered.push_back({op, module_of(n, g.module).path, why});
        continue;
      }
    } else if (fused != fused_ops().end()) {
      g.uncovered.push_back({op, module_of(n, g.module).path, fused->second});
      continue;
    }
    auto it = op_kinds().find(op);
    if (it == op_kinds().end()) continue;
    std::string kind = it->second;
    if ((kind == "add" || kind == "mul") &&
        (n->inputs().size() < 2 || !is_tensor(n->input(0)) || !is_tensor(n->input(1)) ||
         shape_or_integer(n->input(0), shape_memo) || shape_or_integer(n->input(1), shape_memo)))
      continue;  // x + 1 is not a point, nor x * head_dim ** -0.5 with the size traced as a tensor
    if (n->outputs().size() != 1 || !is_tensor(n->output())) continue;
    if (shape_or_integer(n->output(), shape_memo)) {
      if (algebra) g.uncovered.push_back({op, module_of(n, g.module).path, "integer tensors (not a float value)"});
      continue;
    }
    ModuleInfo mi = module_of(n, g.module);
    // parameters first: they are read before the op runs
    WeightSlots ws = weight_slots(n);
    if (n->kind() == c10::aten::embedding) ws = {0, -1, 0};  // the table, one row per index
    bool weight_attr = false;
    for (int slot : {ws.weight, ws.bias}) {
      if (slot < 0 || slot >= static_cast<int>(n->inputs().size())) continue;
      jit::Value* v = n->input(slot);
      jit::Node* reader = n;  // the op that reads the attribute
      int axis = ws.axis;
      std::string ap;
      bool transposed = false;
      if (!attr_path(v, self, &ap)) {  // Optional[Tensor] biases too
        if (slot != ws.weight) continue;
        // the parameter read through ops that keep its values: a dtype or layout change
        // (W.to(x.dtype), W.contiguous()) and at most one transpose of a matrix (x @ W.t(),
        // h @ emb.weight.T, a tied output layer; its output axis is then its first). The
        // quantizer sits between the attribute and them.
        jit::Value* u = v;
        bool found = false;
        for (int hop = 0; hop < 4 && !found; ++hop) {
          jit::Node* m = u->node();
          const bool t = transposes_matrix(m);
          if ((t && transposed) || !(t || keeps_values(m))) break;
          transposed |= t;
          reader = m;
          u = m->input(0);
          found = attr_path(u, self, &ap);
        }
        if (!found) {
          // a conv or linear layer whose weight forward computes: no weight point; said
          if (has_weight_input(n))
            g.uncovered.push_back({op, module_of(n, g.module).path,
                                   depends_on_data(v, self, data_memo)
                                       ? "its weight is computed from the data (a dynamic kernel): no weight point"
                                       : "its weight is computed in forward from parameters (weight norm, weight "
                                         "standardization, a scaled or merged weight): no weight point, it stays "
                                         "float; make it a plain parameter first (torch.nn.utils.parametrize."
                                         "remove_parametrizations, or compute it once outside forward)"});
          continue;
        }
        v = u;
        if (transposed) axis = 0;
      }
      c10::IValue t = resolve_attr(g.module, ap);
      if (!t.isTensor() || (transposed && t.toTensor().dim() != 2)) continue;
      if (slot == ws.weight) weight_attr = true;
      Point p;
      p.name = ap;
      p.role = slot == ws.weight ? Role::kWeight : Role::kBias;
      p.kind = kind;
      p.op = op;
      p.module = mi.path;
      p.shape = t.toTensor().sizes().vec();
      p.numel = t.toTensor().numel();
      p.channel_axis = axis >= 0 ? axis : static_cast<int>(p.shape.size()) - 1;
      if (p.role == Role::kBias) p.channel_axis = 0;
      p.value = v;
      p.node = reader;
      p.attr_path = ap;
      p.index = index++;
      // one weight read by several ops keeps one point, whose quantizer every reader reads
      if (!point_names.count(p.name)) {
        add(p);
      } else {
        for (Point& q : g.points)
          if (q.name == p.name && q.role == p.role) {
            q.more_uses.emplace_back(reader, v);
            if (kind != q.kind && std::find(q.also_kinds.begin(), q.also_kinds.end(), kind) == q.also_kinds.end())
              q.also_kinds.push_back(kind);
          }
      }
    }
    // a product of two activations (attention scores, attention times values) is a matmul
    if ((op == "aten::matmul" || op == "aten::mm" || op == "aten::bmm" || op == "aten::baddbmm") && !weight_attr) {
      kind = "matmul";
      operands = {n->input(0), n->input(1)};
    }
    if (kind == "flatten") continue;  // named for completeness of kinds, not a point
    Point p;
    p.role = Role::kActivation;
    p.kind = kind;
    p.op = op;
    p.module = mi.path;
    std::string base = mi.path;
    if (!mi.leaf) {
      const std::string key = mi.path + "/" + kind;
      int k = kind_count_in_module[key]++;
      base = (mi.path.empty() ? "" : mi.path + ":") + kind + (k ? "_" + std::to_string(k) : "");
    }
    // the data a conv or linear layer reads (not its weight)
    if ((kind == "conv" || kind == "linear") && weight_attr) {
      const int data = op == "aten::addmm" ? 1 : 0;
      if (data != ws.weight && data < static_cast<int>(n->inputs().size())) operands = {n->input(data)};
    }
    // the operands of a product of two activations, and the data of a conv or linear layer,
    // where they are not already a point's value seen through layout-only ops (q / sqrt(d) in
    // attention is not, nor an in-model normalization or a clamp before a layer)
    if (!operands.empty()) {
      for (size_t i = 0; i < operands.size(); ++i) {
        jit::Value* v = operands[i];
        if (v->node()->kind() == c10::prim::Param || !is_tensor(v) || shape_or_integer(v, shape_memo) ||
            reaches_point(v, point_values))
          continue;
        Point o;
        o.role = Role::kActivation;
        o.kind = kind;
        o.op = op;
        o.module = mi.path;
        o.name = unique(base, ":in" + std::to_string(i));
        o.value = v;
        o.node = v->node();
        o.channel_axis = 1;
        o.index = index++;
        add(o);
      }
    }
    p.name = unique(base, ":out");
    p.value = n->output();
    p.node = n;
    p.channel_axis = 1;
    p.inplace = op.back() == '_';
    p.index = index++;
    add(p);
  }
  for (Point& p : g.points) {
    if (p.role != Role::kActivation && p.role != Role::kInput) continue;
    std::set<std::string> feeds;
    feeds_of(p.value, self, &feeds);
    p.feeds.assign(feeds.begin(), feeds.end());
  }
}

}  // namespace anybit
