// Loading TorchScript models, inlining forward, and naming the quantization points.
#include "anybit/graph/graph.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>

#include <cstring>
#include <fstream>
#include <functional>
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
      {"aten::einsum", "einsum is not lowered to points"},
  };
  return m;
}

bool contains_fused(jit::Block* b) {
  for (jit::Node* n : b->nodes()) {
    if (fused_ops().count(n->kind().toQualString())) return true;
    for (jit::Block* inner : n->blocks())
      if (contains_fused(inner)) return true;
  }
  return false;
}

// --- attention ----------------------------------------------------------------------------
// aten::scaled_dot_product_attention (torch 2.x: nn.MultiheadAttention and
// nn.TransformerEncoderLayer call it) computes scores, softmax and attention-times-values in one
// kernel, where no point can reach them. It is replaced by its definition in plain ops (the
// reference math of torch.nn.functional.scaled_dot_product_attention's documentation), so that
// q k^T, the softmax and attn v get points like any other matmul. Conditions on arguments that
// are constant in the graph (no mask, not causal, no dropout) fold away afterwards.
const char* kAttentionSource = R"JIT(
def attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
              is_causal: bool, scale: Optional[float], enable_gqa: bool) -> Tensor:
    if scale is None:
        s = 1.0 / (float(query.size(-1)) ** 0.5)
    else:
        s = scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * s
    if is_causal:
        above = torch.ones([query.size(-2), key.size(-2)], device=query.device).tril() == 0.0
        scores = scores.masked_fill(above, float("-inf"))
    if attn_mask is not None:
        if attn_mask.is_floating_point():
            scores = scores + attn_mask
        else:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
    attn = torch.softmax(scores, -1)
    if dropout_p > 0.0:
        attn = torch.dropout(attn, dropout_p, True)
    return torch.matmul(attn, value)
)JIT";

void set_callstack(jit::Node* n, const c10::optional<jit::InlinedCallStackPtr>& cs) {
  if (cs) n->setCallStack(*cs);
  for (jit::Block* b : n->blocks())
    for (jit::Node* inner : b->nodes()) set_callstack(inner, cs);
}

// Replaces every aten::scaled_dot_product_attention of the graph (any block) by its definition.
void decompose_attention(std::shared_ptr<jit::Graph>& graph) {
  static const c10::Symbol kSdpa = c10::Symbol::fromQualString("aten::scaled_dot_product_attention");
  std::vector<jit::Node*> found;
  std::function<void(jit::Block*)> collect = [&](jit::Block* b) {
    for (jit::Node* n : b->nodes()) {
      if (n->kind() == kSdpa) found.push_back(n);
      for (jit::Block* inner : n->blocks()) collect(inner);
    }
  };
  collect(graph->block());
  if (found.empty()) return;
  static const std::shared_ptr<jit::CompilationUnit> cu = torch::jit::compile(kAttentionSource);
  auto callee = jit::toGraphFunction(cu->get_function("attention")).graph();
  for (jit::Node* n : found) {
    if (n->inputs().size() < 3 || n->inputs().size() > 8 || n->outputs().size() != 1) continue;
    jit::WithInsertPoint guard(n);
    std::vector<jit::Value*> args(n->inputs().begin(), n->inputs().end());
    // the arguments an older schema lacks take their defaults
    const c10::IValue defaults[] = {c10::IValue(), 0.0, false, c10::IValue(), false};
    for (size_t i = args.size(); i < 8; ++i) args.push_back(graph->insertConstant(defaults[i - 3]));
    jit::Node* before = n->prev();
    std::vector<jit::Value*> out = jit::insertGraph(*graph, *callee, args);
    for (jit::Node* m = before->next(); m != n; m = m->next()) set_callstack(m, n->callstack());
    n->output()->replaceAllUsesWith(out.at(0));
    n->destroy();
  }
}

// aten op -> point kind. Ops that only move or reshape data (view, flatten, dropout in
// eval, size) are not points: quantizing them again would change nothing.
const std::unordered_map<std::string, std::string>& op_kinds() {
  static const std::unordered_map<std::string, std::string> m = {
      {"aten::conv1d", "conv"}, {"aten::conv2d", "conv"}, {"aten::conv3d", "conv"},
      {"aten::_convolution", "conv"}, {"aten::conv_transpose1d", "conv"},
      {"aten::conv_transpose2d", "conv"}, {"aten::conv_transpose3d", "conv"},
      {"aten::linear", "linear"}, {"aten::addmm", "linear"}, {"aten::matmul", "linear"},
      {"aten::mm", "linear"}, {"aten::bmm", "linear"}, {"aten::baddbmm", "linear"},
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

bool is_tensor(const jit::Value* v) { return v->type()->cast<c10::TensorType>() != nullptr; }

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

// True when a and b are certainly the same tensor object: the same value, equal constants,
// the same pure op on the same inputs, or outputs of one `if` that are the same in each branch
// (`query = key = value = x` through the batch-dimension check of multi-head attention).
bool same_value(jit::Value* a, jit::Value* b, int depth = 0) {
  if (a == b) return true;
  if (depth > 12) return false;
  jit::Node *na = a->node(), *nb = b->node();
  if (na->kind() == c10::prim::Constant && nb->kind() == c10::prim::Constant) {
    auto ia = jit::toIValue(a), ib = jit::toIValue(b);
    if (!ia || !ib) return false;
    if (ia->isInt() && ib->isInt()) return ia->toInt() == ib->toInt();
    if (ia->isBool() && ib->isBool()) return ia->toBool() == ib->toBool();
    if (ia->isNone() && ib->isNone()) return true;
    return false;
  }
  if (na == nb && na->kind() == c10::prim::If) {
    for (jit::Block* blk : na->blocks())
      if (!same_value(blk->outputs()[a->offset()], blk->outputs()[b->offset()], depth + 1)) return false;
    return true;
  }
  if (a->offset() != b->offset() || na->kind() != nb->kind() || na->inputs().size() != nb->inputs().size() ||
      !na->blocks().empty() ||
      na->kind() == c10::prim::Param || na->hasSideEffects() || na->isNondeterministic() ||
      na->kind().toQualString()[std::strlen(na->kind().toQualString()) - 1] == '_')
    return false;
  for (size_t i = 0; i < na->inputs().size(); ++i)
    if (!same_value(na->input(i), nb->input(i), depth + 1)) return false;
  return true;
}

// Whether v is None, where that is fixed for this module instance: a constant, or an
// attribute path from self (an Optional attribute such as nn.MultiheadAttention.bias_k).
bool fixed_none(jit::Value* v, jit::Value* self, const jit::Module& m, bool* is_none) {
  if (v->node()->kind() == c10::prim::Constant) {
    auto iv = jit::toIValue(v);
    if (!iv) return false;
    *is_none = iv->isNone();
    return true;
  }
  std::string ap;
  if (!attr_path(v, self, &ap)) return false;
  *is_none = resolve_attr(m, ap).isNone();
  return true;
}

// True when an op writes to v in place (a list changed by `l[0] = 0`, `l.append(x)`): its value
// is then not the one it was made with.
bool written_in_place(jit::Value* v) {
  for (const jit::Use& u : v->uses()) {
    const c10::FunctionSchema* schema = u.user->maybeSchema();
    if (!schema) {
      if (u.user->kind() == c10::prim::ListConstruct || u.user->kind() == c10::prim::TupleConstruct ||
          u.user->kind() == c10::prim::Return || u.user->kind() == c10::prim::If)
        continue;  // read (an If's block returning it is a read)
      return true;  // unknown: assume the worst
    }
    if (u.offset < schema->arguments().size()) {
      const auto* alias = schema->arguments()[u.offset].alias_info();
      if (alias && alias->isWrite()) return true;
    }
  }
  return false;
}

// The value of v where it is fixed for this module instance and not a tensor: a constant, an
// attribute path from self (`self.stride`, `self.shift_size`; `training` only with
// include_training), or a pure op on such values (`self.stride == 1`, `sum(self.shift_size) > 0`,
// `len(self.layers)`), which is run here. ShuffleNet's `if self.stride == 1` and Swin's shifted
// windows are decided this way.
bool fixed_value(jit::Value* v, jit::Value* self, const jit::Module& m, c10::IValue* out, bool include_training,
                 int depth = 0) {
  if (depth > 16 || is_tensor(v)) return false;
  // a list or dict may be changed in place after it is made (Swin's `shift_size[i] = 0` on a
  // copy of self.shift_size when the window covers the input): not fixed
  const auto tk = v->type()->kind();
  if ((tk == c10::TypeKind::ListType || tk == c10::TypeKind::DictType) && written_in_place(v)) return false;
  jit::Node* n = v->node();
  if (n->kind() == c10::prim::Constant) {
    auto iv = jit::toIValue(v);
    if (!iv) return false;
    *out = *iv;
    return true;
  }
  std::string ap;
  if (attr_path(v, self, &ap)) {
    if (!include_training && (ap == "training" || (ap.size() > 9 && ap.compare(ap.size() - 9, 9, ".training") == 0)))
      return false;
    c10::IValue iv = resolve_attr(m, ap);
    if (iv.isObject() || iv.isModule() || iv.isTensor() || iv.isTensorList()) return false;
    *out = iv;
    return true;
  }
  if (n->kind() == c10::prim::GetAttr || n->kind() == c10::prim::Param || !n->blocks().empty() ||
      n->hasSideEffects() || n->isNondeterministic() || n->outputs().size() != 1 || !n->maybeOperator())
    return false;
  jit::Stack stack;
  for (jit::Value* in : n->inputs()) {
    c10::IValue iv;
    if (!fixed_value(in, self, m, &iv, include_training, depth + 1)) return false;
    stack.push_back(std::move(iv));
  }
  try {
    n->getOperation()(stack);
  } catch (const std::exception&) {
    return false;  // left to run time
  }
  if (stack.size() != 1) return false;
  *out = std::move(stack.back());
  return true;
}

// Resolves a bool that is fixed for this module instance: identity tests (`k is v`, `x is None`)
// decided here, their negation, and whatever fixed_value decides (a constant, a bool attribute
// such as `self.use_res_connect`, a pure op on fixed values). `training` is left alone unless
// include_training, so that train()/eval() keep their meaning.
bool fixed_bool(jit::Value* v, jit::Value* self, const jit::Module& m, bool* out,
                bool include_training) {
  jit::Node* n = v->node();
  // `k is v` on one and the same value (self-attention's query, key and value after inlining)
  if ((n->kind() == c10::aten::__is__ || n->kind() == c10::aten::__isnot__) && n->inputs().size() == 2 &&
      same_value(n->input(0), n->input(1))) {
    *out = n->kind() == c10::aten::__is__;
    return true;
  }
  // `self.bias_k is not None` on an attribute that is None for this module instance
  if ((n->kind() == c10::aten::__is__ || n->kind() == c10::aten::__isnot__) && n->inputs().size() == 2) {
    bool none0, none1;
    if (fixed_none(n->input(0), self, m, &none0) && fixed_none(n->input(1), self, m, &none1)) {
      *out = (none0 && none1) == (n->kind() == c10::aten::__is__);
      if (!none0 && !none1) return false;  // two tensors: identity is not known
      return true;
    }
  }
  if (n->kind() == c10::aten::__not__) {
    bool b;
    if (!fixed_bool(n->input(0), self, m, &b, include_training)) return false;
    *out = !b;
    return true;
  }
  c10::IValue iv;
  if (!fixed_value(v, self, m, &iv, include_training) || !iv.isBool()) return false;
  *out = iv.toBool();
  return true;
}

// Replaces each prim::If on a fixed bool by the branch it always takes, so that the ops
// of, e.g., MobileNetV2's residual blocks appear in the flat graph and get their points.
void specialize_ifs(std::shared_ptr<jit::Graph>& graph_ptr, const jit::Module& m, bool include_training) {
  jit::Graph& graph = *graph_ptr;
  jit::Value* self = graph.inputs().at(0);
  // the first If that can be decided, in any block
  std::function<jit::Node*(jit::Block*, bool*)> decidable = [&](jit::Block* block, bool* cond) -> jit::Node* {
    for (jit::Node* n : block->nodes()) {
      if (n->kind() == c10::prim::If) {
        if (fixed_bool(n->input(0), self, m, cond, include_training)) return n;
        // a fused fast path on one side only: keep the decomposed side
        const bool f0 = contains_fused(n->blocks().at(0)), f1 = contains_fused(n->blocks().at(1));
        if (f0 != f1) {
          *cond = f1;
          return n;
        }
      }
      for (jit::Block* b : n->blocks())
        if (jit::Node* inner = decidable(b, cond)) return inner;
    }
    return nullptr;
  };
  // one If at a time, until none can be decided
  auto pass = [&]() {
    bool any = false;
    for (bool changed = true; changed;) {
      changed = false;
      bool cond = false;
      if (jit::Node* n = decidable(graph.block(), &cond)) {
        jit::Block* b = n->blocks().at(cond ? 0 : 1);
        while (b->nodes().begin() != b->nodes().end()) (*b->nodes().begin())->moveBefore(n);
        for (size_t i = 0; i < n->outputs().size(); ++i)
          n->outputs()[i]->replaceAllUsesWith(b->outputs()[i]);
        n->destroy();
        changed = any = true;
      }
    }
    return any;
  };
  // the branches taken make further conditions constant (a fast-path flag now False)
  if (!pass()) return;
  do {
    jit::ConstantPropagation(graph_ptr);
  } while (pass());
}

}  // namespace

void specialize_fixed_ifs(ModelGraph& g, bool include_training) {
  specialize_ifs(g.graph, g.module, include_training);
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
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(path + ": not a TorchScript model file (" + what +
                "); save one with torch.jit.script(model).save(path) or torch.jit.trace");
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

namespace {

// Linear algebra that should have points: the ops of kind conv and linear (convs, linear
// layers, matmuls), and the fused ops above that hide them.
bool is_linear_algebra(const std::string& op) {
  if (fused_ops().count(op)) return true;
  auto it = op_kinds().find(op);
  return it != op_kinds().end() && (it->second == "conv" || it->second == "linear");
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

// True when v is a point's value, possibly seen through ops that only move data (view,
// transpose, chunk, ...), so that quantizing v again would change nothing.
bool reaches_point(jit::Value* v, const std::vector<Point>& points, int depth = 0) {
  static const std::set<std::string> layout = {
      "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous", "aten::unsqueeze",
      "aten::squeeze", "aten::flatten", "aten::select", "aten::slice", "aten::expand", "aten::chunk",
      "aten::split", "aten::unbind", "prim::ListUnpack", "aten::t", "aten::unflatten", "aten::dropout",
      "prim::TupleUnpack"};
  for (; depth < 24 && v; ++depth) {
    for (const Point& p : points)
      if (p.value == v) return true;
    jit::Node* n = v->node();
    if (n->kind() == c10::prim::If) {  // every branch must reach one
      for (jit::Block* b : n->blocks())
        if (!reaches_point(b->outputs()[v->offset()], points, depth + 1)) return false;
      return true;
    }
    if (!layout.count(n->kind().toQualString()) || n->inputs().empty()) return false;
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
  std::unordered_map<jit::Value*, bool> shape_memo;
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
    auto fused = fused_ops().find(op);
    if (fused != fused_ops().end()) {
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
      std::string ap;
      if (!attr_path(v, self, &ap)) continue;  // Optional[Tensor] biases too
      c10::IValue t = resolve_attr(g.module, ap);
      if (!t.isTensor()) continue;
      if (slot == ws.weight) weight_attr = true;
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
    // a product of two activations (attention scores, attention times values) is a matmul
    if ((op == "aten::matmul" || op == "aten::mm" || op == "aten::bmm" || op == "aten::baddbmm") && !weight_attr)
      kind = "matmul";
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
    // the operands of a product of two activations, where they are not already a point's
    // value seen through layout-only ops (q / sqrt(d) in attention is not)
    if (kind == "matmul") {
      for (int i = 0; i < 2; ++i) {
        jit::Value* v = n->input(i);
        if (v->node()->kind() == c10::prim::Param || reaches_point(v, g.points)) continue;
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
        g.points.push_back(o);
      }
    }
    p.name = unique(base, ":out");
    p.value = n->output();
    p.node = n;
    p.channel_axis = 1;
    p.inplace = op.back() == '_';
    p.index = index++;
    g.points.push_back(p);
  }
}

}  // namespace anybit
