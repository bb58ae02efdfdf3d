// Rewrites of the inlined forward graph before its points are named: attention decomposed
// into plain ops, and branches on values fixed for this module instance specialized.
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "anybit/graph/graph.h"
#include "anybit/graph/graph_internal.h"

namespace anybit {
namespace jit = torch::jit;

using detail::is_tensor;
using detail::specialize_ifs;

namespace {

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
}  // namespace

namespace detail {

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

}  // namespace detail

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

}  // namespace

namespace detail {

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

}  // namespace detail

void specialize_fixed_ifs(ModelGraph& g, bool include_training) {
  specialize_ifs(g.graph, g.module, include_training);
  jit::ConstantPropagation(g.graph);
  invalidate_plan(g);
  find_points(g);
}

}  // namespace anybit
