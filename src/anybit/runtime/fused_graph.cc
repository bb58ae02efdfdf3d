// Compiles a frozen TorchScript graph into the Steps of fused evaluation; see fused_graph.h.
#include "anybit/runtime/fused_graph.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cmath>
#include <limits>
#include <unordered_map>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/node.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace fused {
namespace {
namespace jit = torch::jit;

// Whether every weight of each output channel is k * s_c with an integer |k| <= 127, as a
// fake-quantized weight of at most 8 bits is (a float weight is not): then s_c and k.
// s_c is recovered from the smallest nonzero |w| of the channel, w_min = m * s_c, trying
// m = 1..32; k = round(w / s_c) must then be integral for every weight to 1e-3.
bool integer_grid(const at::Tensor& w, at::Tensor* k_out, std::vector<float>* steps) {
  const int64_t channels = w.size(0), per = w.numel() / channels;
  const float* pw = w.data_ptr<float>();
  at::Tensor k = at::empty(w.sizes(), at::kChar);
  int8_t* pk = k.data_ptr<int8_t>();
  steps->assign(channels, 1.0f);
  for (int64_t c = 0; c < channels; ++c) {
    const float* v = pw + c * per;
    float vmin = std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < per; ++i)
      if (v[i] != 0.0f) vmin = std::min(vmin, std::fabs(v[i]));
    if (!std::isfinite(vmin)) {  // an all-zero channel
      std::fill(pk + c * per, pk + (c + 1) * per, 0);
      continue;
    }
    bool found = false;
    for (int m = 1; m <= 32 && !found; ++m) {
      const double step = static_cast<double>(vmin) / m;
      found = true;
      for (int64_t i = 0; i < per && found; ++i) {
        const double r = v[i] / step, q = std::nearbyint(r);
        found = std::fabs(r - q) <= 1e-3 && std::fabs(q) <= 127;
        pk[c * per + i] = static_cast<int8_t>(q);
      }
      if (found) (*steps)[c] = static_cast<float>(step);
    }
    if (!found) return false;
  }
  *k_out = k;
  return true;
}

// The fake-quantizer x^ = round(clamp(x * inv, lo, hi)) * s (fake_quant.h) as post-ops:
// the same float operations in the same order, so the result is the kernel's bit for bit.
void append_fake_quant(std::vector<PostOp>& post, const std::vector<AffineGrid>& g) {
  if (g.size() == 1) {
    post.push_back({PostOp::kLinear, g[0].inv, 0.0f});
    post.push_back({PostOp::kClip, g[0].lo, g[0].hi});
    post.push_back({PostOp::kRound});
    post.push_back({PostOp::kLinear, g[0].scale, 0.0f});
    return;
  }
  PostOp inv{PostOp::kMulChannel}, lo{PostOp::kMaxChannel}, hi{PostOp::kMinChannel}, sc{PostOp::kMulChannel};
  for (const AffineGrid& c : g) {
    inv.chan.push_back(c.inv);
    lo.chan.push_back(c.lo);
    hi.chan.push_back(c.hi);
    sc.chan.push_back(c.scale);
  }
  post.push_back(inv);
  post.push_back(lo);
  post.push_back(hi);
  post.push_back({PostOp::kRound});
  post.push_back(sc);
}


bool is_tensor(const jit::Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

// Ops whose uses of a tensor only read its metadata (shape checks that scripting inserts).
bool reads_metadata_only(const jit::Node* n) {
  const std::string k = n->kind().toQualString();
  return k == "aten::size" || k == "aten::dim" || k == "aten::len" || k == "aten::numel";
}

// Whether an op's first output may be a view of one of its inputs (reshape, permute,
// select, expand...), from its schema's alias annotation.
bool may_return_view(const jit::Node* n) {
  const c10::FunctionSchema* s = n->maybeSchema();
  return !s || s->returns().empty() || s->returns()[0].alias_info() != nullptr;
}

// Whether a value of type t may hold a tensor (itself, in a list or tuple, in an object).
bool may_hold_tensor(const c10::TypePtr& t) {
  switch (t->kind()) {
    case c10::TypeKind::TensorType:
    case c10::TypeKind::AnyType:
    case c10::TypeKind::ClassType:
    case c10::TypeKind::InterfaceType:
      return true;
    default:
      for (const c10::TypePtr& c : t->containedTypes())
        if (may_hold_tensor(c)) return true;
      return false;
  }
}

// Whether an ATen step's outputs may share memory with its arguments, or it writes one of
// them: may_return_view (which covers no schema: the list and tuple instructions, an If's
// select), any later output with an alias annotation, a mutable schema, or no outputs (a
// list written in place).
bool may_alias(const jit::Node* n) {
  if (may_return_view(n) || n->outputs().empty()) return true;
  const c10::FunctionSchema* s = n->maybeSchema();  // may_return_view is true without one
  if (s->is_mutable()) return true;
  for (const c10::Argument& r : s->returns())
    if (r.alias_info()) return true;
  return false;
}

class Compiler {
 public:
  std::vector<Step> steps;
  int num_values = 0;
  int output = -1;
  int fused = 0;
  int onednn_ops = 0;                  // tensor ops that run as oneDNN layers, post-ops or no-ops
  std::map<std::string, int> aten_ops;  // tensor ops that run through ATen, by name

  c10::IValue self;  // the module (the graph's input 0): what prim::GetAttr reads
  std::vector<bool> holds_tensor;  // value -> its type may hold a tensor

  void run(const std::shared_ptr<jit::Graph>& graph) {
    if (graph->inputs().size() != 2 || !is_tensor(graph->inputs()[1]))
      throw Unsupported("forward must take one tensor");
    self_ = graph->inputs()[0];
    add_value(graph->inputs()[1], -1);
    for (jit::Node* n : graph->nodes()) lower(n);
    if (graph->outputs().size() != 1 || !is_tensor(graph->outputs()[0]))
      throw Unsupported("forward must return one tensor");
    output = id(graph->outputs()[0]);
    // A shape check (size(), dim()) of a value that a later element-wise op was fused into
    // reads the chain's final value instead: the same shape, and the one that is computed.
    for (Step& s : steps)
      if (s.metadata_only)
        for (int& a : s.args)
          if (a >= 0 && producer_[a] >= 0 && steps[producer_[a]].kind != Step::kGeneric) a = steps[producer_[a]].out;
  }

 private:
  std::unordered_map<const jit::Value*, int> ids_;
  std::vector<int> producer_;  // value -> step writing it (-1: the input)
  std::vector<int> uses_;      // value -> graph uses that read its data
  std::vector<bool> view_;     // value -> may be a view of another value's memory
  std::vector<bool> onednn_root_;  // value -> its memory may be a oneDNN buffer (or the input's)
  std::vector<std::pair<int, bool>> guards_;  // the If branches the op being lowered is in
  const jit::Value* self_ = nullptr;

  static int data_uses(const jit::Value* v) {
    int n = 0;
    for (const jit::Use& u : v->uses())
      if (!reads_metadata_only(u.user)) ++n;
    return n;
  }
  int add_value(const jit::Value* v, int step) {
    ids_[v] = num_values;
    producer_.push_back(step);
    uses_.push_back(data_uses(v));
    view_.push_back(false);
    onednn_root_.push_back(true);
    holds_tensor.push_back(may_hold_tensor(v->type()));
    return num_values++;
  }
  int id(const jit::Value* v) const {
    auto it = ids_.find(v);
    if (it == ids_.end()) throw Unsupported("a tensor (%" + v->debugName() + ") is not computed by a lowered op");
    return it->second;
  }
  // An op output that is another name for its input (dropout in eval, contiguous).
  void alias(const jit::Value* out, const jit::Value* in) {
    const int i = id(in);
    ids_[out] = i;
    uses_[i] += data_uses(out) - 1;
  }

  static c10::IValue constant(const jit::Node* n, size_t i) {
    auto v = jit::toIValue(n->input(i));
    if (!v) throw Unsupported(std::string(n->kind().toQualString()) + ": argument " + std::to_string(i) +
                              " is computed at run time");
    return *v;
  }
  static at::Tensor constant_tensor(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isNone()) return {};
    if (!v.isTensor()) throw Unsupported(std::string(n->kind().toQualString()) + ": argument " + std::to_string(i) + " is not a tensor");
    return v.toTensor().detach().to(at::kFloat).contiguous();
  }
  static std::vector<int64_t> constant_ints(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isInt()) return {v.toInt(), v.toInt()};
    return v.toIntVector();
  }
  static double constant_double(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isTensor()) return v.toTensor().item<double>();
    return v.isInt() ? static_cast<double>(v.toInt()) : v.toDouble();
  }
  // A scalar operand: a number, or a 0-dim constant tensor (broadcasting keeps the shape).
  static bool scalar_operand(const jit::Node* n, size_t i, float* out) {
    auto v = jit::toIValue(n->input(i));
    if (!v) return false;
    if (v->isTensor()) {
      const at::Tensor& t = v->toTensor();
      if (t.dim() != 0 || !t.is_floating_point()) return false;
      *out = t.item<float>();
      return true;
    }
    if (!v->isDouble() && !v->isInt()) return false;
    *out = static_cast<float>(v->isInt() ? static_cast<double>(v->toInt()) : v->toDouble());
    return true;
  }

  int new_step(Step s, const jit::Value* out) {
    steps.push_back(std::move(s));
    const int idx = static_cast<int>(steps.size()) - 1;
    steps[idx].out = add_value(out, idx);
    steps[idx].op_name = out->node()->kind().toQualString();
    return idx;
  }
  // Whether the next element-wise op on value v can run as a post-op of v's producer: v
  // is the producer's current output and nothing else reads it.
  int open_step(int v) const {
    const int s = producer_[v];
    if (s < 0 || steps[s].out != v || uses_[v] != 1 || steps[s].kind == Step::kFlatten ||
        steps[s].kind == Step::kGeneric)
      return -1;
    return s;
  }
  void elementwise(const jit::Node* n, std::vector<PostOp> post) {
    const int v = id(n->input(0));
    const int s = open_step(v);
    if (s >= 0) {
      for (PostOp& p : post) steps[s].post.push_back(std::move(p));
      steps[s].out = add_value(n->output(), s);
      ++fused;
      return;
    }
    Step e{Step::kEltwise};
    e.in = v;
    e.post = std::move(post);
    new_step(std::move(e), n->output());
  }
  void add(const jit::Node* n) {
    if (n->inputs().size() > 2 && constant_double(n, 2) != 1.0) throw Unsupported("aten::add with alpha != 1");
    float c = 0;
    if (scalar_operand(n, 1, &c)) {
      elementwise(n, {{PostOp::kLinear, 1.0f, c}});
      return;
    }
    if (!is_tensor(n->input(1))) throw Unsupported("aten::add of a number computed at run time");
    const int a = id(n->input(0)), b = id(n->input(1));
    // an operand that ATen computed may broadcast (an attention mask): ATen adds it
    for (int v : {a, b})
      if (producer_[v] >= 0 && steps[producer_[v]].kind == Step::kGeneric) throw Unsupported("an add of an ATen result");
    // fuse into the producer of one operand when the other one is ready before it runs
    for (auto [x, other] : {std::pair<int, int>{a, b}, std::pair<int, int>{b, a}}) {
      const int s = open_step(x);
      if (s >= 0 && producer_[other] < s && x != other) {
        PostOp p{PostOp::kAddTensor};
        p.value = other;
        steps[s].post.push_back(p);
        steps[s].out = add_value(n->output(), s);
        ++fused;
        return;
      }
    }
    Step e{Step::kBinary};
    e.in = a;
    e.in2 = b;
    new_step(std::move(e), n->output());
  }
  void add_arg(Step& s, const jit::Value* v) const {  // a value, or a constant
    if (v == self_ && !self.isNone()) {
      s.args.push_back(-1);
      s.consts.push_back(self);
      return;
    }
    if (auto c = jit::toIValue(v)) {
      s.args.push_back(-1);
      s.consts.push_back(*c);
    } else {
      s.args.push_back(id(v));
      s.consts.emplace_back();
    }
  }
  // Appends an ATen step and names n's outputs as its values. A view shares the memory of
  // its inputs (a oneDNN buffer, maybe); anything else is ATen's own.
  void add_outputs(Step s, const jit::Node* n, bool view) {
    steps.push_back(std::move(s));
    const int idx = static_cast<int>(steps.size()) - 1;
    bool root = false;
    if (view)
      for (int a : steps[idx].args)
        if (a >= 0) root = root || onednn_root_[a];
    for (const jit::Value* o : n->outputs()) {
      const int v = add_value(o, idx);
      steps[idx].outs.push_back(v);
      view_[v] = view;
      onednn_root_[v] = root;
    }
    steps[idx].out = steps[idx].outs.empty() ? -1 : steps[idx].outs[0];
  }

  // The list and tuple ops that the interpreter runs as instructions, not operators
  // (torch/csrc/jit/runtime/vararg_functions.cpp does the same).
  static std::shared_ptr<jit::Operation> intrinsic(const jit::Node* n) {
    const size_t ins = n->inputs().size(), outs = n->outputs().size();
    const std::string k = n->kind().toQualString();
    if (k == "prim::ListUnpack")
      return std::make_shared<jit::Operation>([outs](jit::Stack& st) {
        c10::List<c10::IValue> list = st.back().toList();
        st.pop_back();
        if (list.size() != outs)
          throw Error("a list of " + std::to_string(list.size()) + " values unpacked into " + std::to_string(outs));
        for (size_t i = 0; i < outs; ++i) st.push_back(list.get(i));
      });
    if (k == "prim::GetAttr") {  // an attribute freezing kept (the module is frozen: a constant read)
      const std::string name = n->s(c10::attr::name);
      return std::make_shared<jit::Operation>([name](jit::Stack& st) {
        c10::IValue obj = st.back();
        st.pop_back();
        st.push_back(obj.toObjectRef().getAttr(name));
      });
    }
    if (k == "aten::warn")  // the interpreter's own instruction; its first batch has warned already
      return std::make_shared<jit::Operation>([ins](jit::Stack& st) { st.erase(st.end() - ins, st.end()); });
    if (k == "prim::TupleUnpack")
      return std::make_shared<jit::Operation>([](jit::Stack& st) {
        auto t = st.back().toTuple();
        st.pop_back();
        for (const c10::IValue& e : t->elements()) st.push_back(e);
      });
    if (k == "prim::TupleConstruct")
      return std::make_shared<jit::Operation>([ins](jit::Stack& st) {
        std::vector<c10::IValue> e(std::make_move_iterator(st.end() - ins), std::make_move_iterator(st.end()));
        st.erase(st.end() - ins, st.end());
        st.emplace_back(c10::ivalue::Tuple::create(std::move(e)));
      });
    if (k == "prim::ListConstruct") {
      const c10::TypePtr elem = n->output()->type()->expectRef<c10::ListType>().getElementType();
      return std::make_shared<jit::Operation>([ins, elem](jit::Stack& st) {
        c10::List<c10::IValue> list(elem);
        list.reserve(ins);
        for (auto it = st.end() - ins; it != st.end(); ++it) list.push_back(std::move(*it));
        st.erase(st.end() - ins, st.end());
        st.emplace_back(std::move(list));
      });
    }
    return nullptr;
  }

  // Any other op: its ATen operator on the values, as the interpreter calls it.
  void generic(jit::Node* n, bool counted) {
    const std::string k = n->kind().toQualString();
    Step s{Step::kGeneric};
    s.op_name = k;
    s.guards = guards_;
    s.metadata_only = reads_metadata_only(n);
    s.strided = k == "aten::view" || k == "aten::as_strided" || k == "aten::_unsafe_view";
    s.op = intrinsic(n);
    if (!s.op) {
      try {
        s.op = std::make_shared<jit::Operation>(n->getOperation());
      } catch (const std::exception&) {  // an op without an operator (c10::Error, jit::ErrorReport)
        throw Unsupported("op " + k + " is not lowered");
      }
    }
    for (const jit::Value* v : n->inputs()) add_arg(s, v);
    // a vararg op (aten::format) reads its input count from the stack, as the interpreter pushes it
    const c10::FunctionSchema* schema = n->maybeSchema();
    if (schema && schema->is_vararg()) {
      s.args.push_back(-1);
      s.consts.emplace_back(static_cast<int64_t>(n->inputs().size()));
    }
    s.aliases = may_alias(n);
    add_outputs(std::move(s), n, may_return_view(n));
    if (counted) ++aten_ops[k];
  }

  // The ops with a oneDNN lowering. Returns false for any other op; throws Unsupported,
  // before changing anything, when this instance cannot be lowered (an argument computed
  // at run time, a transposed conv...): the op then runs through ATen.
  bool lower_on_onednn(jit::Node* n, const std::string& k) {
    if (k == "aten::conv2d" || k == "aten::_convolution") {
      Step s{Step::kConv};
      s.in = id(n->input(0));
      s.weight = constant_tensor(n, 1);
      s.bias = constant_tensor(n, 2);
      s.stride = constant_ints(n, 3);
      s.dilation = constant_ints(n, 5);
      if (k == "aten::conv2d") {
        c10::IValue pad = constant(n, 4);
        if (pad.isString()) throw Unsupported("conv2d with padding='" + pad.toStringRef() + "'");
        s.padding = constant_ints(n, 4);
        s.groups = constant(n, 6).toInt();
      } else {
        s.padding = constant_ints(n, 4);
        if (constant(n, 6).toBool()) throw Unsupported("transposed convolution");
        s.groups = constant(n, 8).toInt();
      }
      if (!s.weight.defined() || s.weight.dim() != 4) throw Unsupported(k + " with a weight that is not 4-D");
      if (s.stride.size() != 2 || s.padding.size() != 2 || s.dilation.size() != 2) throw Unsupported(k + " that is not 2-D");
      new_step(std::move(s), n->output());
    } else if (k == "aten::linear") {
      Step s{Step::kLinear};
      s.in = id(n->input(0));
      s.weight = constant_tensor(n, 1);
      s.bias = constant_tensor(n, 2);
      if (!s.weight.defined() || s.weight.dim() != 2) throw Unsupported("aten::linear with a weight that is not 2-D");
      new_step(std::move(s), n->output());
    } else if (qnode::info(qnode::op_of(n)).uniform) {  // anybit's or aten's uniform fake-quantizer
      const qnode::OpInfo& q = qnode::info(qnode::op_of(n));
      const c10::IValue sv = constant(n, q.scale), zv = constant(n, q.zero_point);
      const at::Tensor scale = sv.isTensor() ? sv.toTensor().detach().contiguous() : at::full({1}, sv.toDouble());
      const at::Tensor zp = zv.isTensor() ? zv.toTensor().detach().contiguous()
                                          : at::full({1}, static_cast<double>(zv.toInt()));
      const int64_t axis = q.axis >= 0 ? constant(n, q.axis).toInt() : -1;
      if (q.rounding >= 0 && constant(n, q.rounding).toInt() != 0) throw Unsupported(k + " rounds other than half to even");
      if (q.group >= 0 && constant(n, q.group).toInt() > 0) throw Unsupported(k + " per group");
      if (scale.numel() > 1 && axis != 1) throw Unsupported(k + " per channel along axis " + std::to_string(axis));
      std::vector<PostOp> post;
      append_fake_quant(post, affine_grid(scale, zp, scale.numel(), constant(n, q.qmin).toInt(), constant(n, q.qmax).toInt()));
      elementwise(n, std::move(post));
    } else if (k == "aten::batch_norm") {
      if (constant(n, 5).toBool()) throw Unsupported("aten::batch_norm in training mode");
      const at::Tensor w = constant_tensor(n, 1), b = constant_tensor(n, 2), mean = constant_tensor(n, 3),
                       var = constant_tensor(n, 4);
      if (!mean.defined() || !var.defined()) throw Unsupported("aten::batch_norm without running statistics");
      const float eps = static_cast<float>(constant_double(n, 7));
      // ATen's inference BatchNorm: alpha = w / sqrt(var + eps), beta = b - mean * alpha,
      // y = x * alpha + beta (batch_norm_cpu_collect_linear_and_constant_terms)
      PostOp mul{PostOp::kMulChannel}, plus{PostOp::kAddChannel};
      for (int64_t c = 0; c < mean.numel(); ++c) {
        const float invstd = 1 / std::sqrt(var.data_ptr<float>()[c] + eps);
        const float alpha = invstd * (w.defined() ? w.data_ptr<float>()[c] : 1.0f);
        mul.chan.push_back(alpha);
        plus.chan.push_back((b.defined() ? b.data_ptr<float>()[c] : 0.0f) - mean.data_ptr<float>()[c] * alpha);
      }
      elementwise(n, {mul, plus});
    } else if (k == "aten::relu" || k == "aten::relu_") {
      elementwise(n, {{PostOp::kRelu}});
    } else if (k == "aten::relu6") {
      elementwise(n, {{PostOp::kClip, 0.0f, 6.0f}});
    } else if (k == "aten::silu" || k == "aten::silu_") {
      elementwise(n, {{PostOp::kSilu}});
    } else if (k == "aten::sigmoid" || k == "aten::sigmoid_") {
      elementwise(n, {{PostOp::kSigmoid}});
    } else if (k == "aten::hardswish" || k == "aten::hardswish_") {
      elementwise(n, {{PostOp::kHardswish}});
    } else if (k == "aten::hardsigmoid" || k == "aten::hardsigmoid_") {
      // ATen: min(max(x + 3, 0), 6) / 6, the same operations
      elementwise(n, {{PostOp::kLinear, 1.0f, 3.0f}, {PostOp::kClip, 0.0f, 6.0f}, {PostOp::kDiv, 6.0f}});
    } else if (k == "aten::gelu") {
      const std::string approx = n->inputs().size() > 1 ? constant(n, 1).toStringRef() : "none";
      if (approx != "none" && approx != "tanh") throw Unsupported("gelu with approximate='" + approx + "'");
      elementwise(n, {{approx == "tanh" ? PostOp::kGeluTanh : PostOp::kGeluErf}});
    } else if (k == "aten::mul") {
      float c = 0;
      if (scalar_operand(n, 1, &c)) {
        elementwise(n, {{PostOp::kLinear, c, 0.0f}});
      } else {  // a gate times a feature map (squeeze-excite): a oneDNN binary op, broadcasting
        if (!is_tensor(n->input(1))) throw Unsupported("aten::mul of a number computed at run time");
        const int a = id(n->input(0)), b = id(n->input(1));
        for (int v : {a, b})
          if (producer_[v] >= 0 && steps[producer_[v]].kind == Step::kGeneric) throw Unsupported("a product with an ATen result");
        Step e{Step::kBinary};
        e.in = a;
        e.in2 = b;
        e.binary = dnnl::algorithm::binary_mul;
        new_step(std::move(e), n->output());
      }
    } else if (k == "aten::hardtanh" || k == "aten::hardtanh_" || k == "aten::clamp" || k == "aten::clamp_") {
      c10::IValue lo = constant(n, 1), hi = constant(n, 2);
      if ((!lo.isNone() && !lo.isScalar()) || (!hi.isNone() && !hi.isScalar())) throw Unsupported(k + " with tensor bounds");
      const float inf = std::numeric_limits<float>::infinity();
      elementwise(n, {{PostOp::kClip, lo.isNone() ? -inf : static_cast<float>(lo.toScalar().toDouble()),
                       hi.isNone() ? inf : static_cast<float>(hi.toScalar().toDouble())}});
    } else if (k == "aten::add" || k == "aten::add_") {
      add(n);
    } else if (k == "aten::dropout" || k == "aten::feature_dropout") {
      if (constant(n, 2).toBool()) throw Unsupported(k + " in training mode");
      alias(n->output(), n->input(0));
    } else if (k == "aten::contiguous" || k == "aten::detach") {
      // a oneDNN value is dense already; an ATen value may be a strided view
      const int in = id(n->input(0));
      if (producer_[in] >= 0 && steps[producer_[in]].kind == Step::kGeneric) return false;
      alias(n->output(), n->input(0));
    } else if (k == "aten::adaptive_avg_pool2d") {
      Step s{Step::kPool};
      s.in = id(n->input(0));
      s.global_pool = true;
      s.kernel = constant_ints(n, 1);  // the output size; the plan needs it to divide the input
      new_step(std::move(s), n->output());
    } else if (k == "aten::max_pool2d" || k == "aten::avg_pool2d") {
      Step s{Step::kPool};
      s.in = id(n->input(0));
      s.max_pool = k == "aten::max_pool2d";
      s.kernel = constant_ints(n, 1);
      s.stride = constant_ints(n, 2);
      if (s.stride.empty()) s.stride = s.kernel;
      s.padding = constant_ints(n, 3);
      if (s.max_pool) {
        if (constant_ints(n, 4) != std::vector<int64_t>{1, 1}) throw Unsupported("dilated max_pool2d");
        if (constant(n, 5).toBool()) throw Unsupported("max_pool2d with ceil_mode");
      } else {
        if (constant(n, 4).toBool()) throw Unsupported("avg_pool2d with ceil_mode");
        s.count_include_pad = constant(n, 5).toBool();
        if (!constant(n, 6).isNone()) throw Unsupported("avg_pool2d with divisor_override");
      }
      new_step(std::move(s), n->output());
    } else if (k == "aten::flatten") {
      if (constant(n, 1).toInt() != 1 || constant(n, 2).toInt() != -1) throw Unsupported("flatten other than (1, -1)");
      const int in = id(n->input(0));
      if (producer_[in] >= 0 && steps[producer_[in]].kind == Step::kGeneric) throw Unsupported("flatten of an ATen result");
      Step s{Step::kFlatten};
      s.in = in;
      new_step(std::move(s), n->output());
    } else {
      return false;
    }
    return true;
  }

  // prim::If on a condition computed at run time (the shape checks and fast paths of
  // nn.MultiheadAttention): both branches are lowered, their ops through ATen and guarded by
  // the condition, and a select step names the taken branch's results as the If's outputs.
  void lower_if(jit::Node* n) {
    if (auto c = jit::toIValue(n->input(0))) {  // a constant condition: the branch taken, inline
      jit::Block* b = n->blocks()[c->toBool() ? 0 : 1];
      for (jit::Node* m : b->nodes()) lower(m);
      select(n, -1, b->outputs(), b->outputs());
      return;
    }
    const int cond = id(n->input(0));
    for (int branch = 0; branch < 2; ++branch) {
      guards_.push_back({cond, branch == 0});
      for (jit::Node* m : n->blocks()[branch]->nodes()) lower(m);
      guards_.pop_back();
    }
    select(n, cond, n->blocks()[0]->outputs(), n->blocks()[1]->outputs());
  }
  void select(const jit::Node* n, int cond, at::ArrayRef<jit::Value*> yes, at::ArrayRef<jit::Value*> no) {
    const size_t outs = n->outputs().size();
    Step s{Step::kGeneric};
    s.op_name = "prim::If";
    s.guards = guards_;
    s.op = std::make_shared<jit::Operation>([outs](jit::Stack& st) {
      const bool take_yes = st[st.size() - 2 * outs - 1].toBool();
      std::vector<c10::IValue> r(st.end() - 2 * outs + (take_yes ? 0 : outs), st.end() - (take_yes ? outs : 0));
      st.erase(st.end() - 2 * outs - 1, st.end());
      for (c10::IValue& v : r) st.push_back(std::move(v));
    });
    s.aliases = true;
    if (cond >= 0) {
      s.args.push_back(cond);
      s.consts.emplace_back();
    } else {
      s.args.push_back(-1);
      s.consts.emplace_back(true);
    }
    for (const jit::Value* v : yes) add_arg(s, v);
    for (const jit::Value* v : no) add_arg(s, v);
    add_outputs(std::move(s), n, /*view=*/true);  // each output is one of a branch's values
  }

  void lower(jit::Node* n) {
    const std::string k = n->kind().toQualString();
    if (n->kind() == c10::prim::Constant) return;
    bool tensor_out = false;
    for (const jit::Value* o : n->outputs()) tensor_out |= is_tensor(o);
    if (!n->blocks().empty()) {
      // an If runs as the interpreter runs it: a shape check that raises, a list written
      // in place (swin's shift sizes) and a branch computing tensors alike
      if (n->kind() != c10::prim::If) throw Unsupported(k + " (a loop) is not lowered");
      lower_if(n);
      return;
    }
    if (n->outputs().empty()) {  // a raise, a warning, a list written in place: run, as the interpreter does
      generic(n, false);
      return;
    }
    if (!tensor_out) {  // sizes, numbers and lists that later ops read: computed as the interpreter does
      generic(n, false);
      return;
    }
    const bool in_place = k.back() == '_';
    if (!guards_.empty()) {  // inside a branch every op runs through ATen, and only when taken
      if (in_place && onednn_root_[id(n->input(0))]) throw Unsupported(k + " in a branch writes a oneDNN buffer");
      generic(n, true);
      return;
    }
    if (in_place) {
      const int v = id(n->input(0));
      if (!onednn_root_[v]) {  // a tensor of ATen's own: the in-place op runs there, with ATen's aliasing
        generic(n, true);
        return;
      }
      if (uses_[v] != 1) throw Unsupported(k + " writes a tensor that is read again");
      if (view_[v]) throw Unsupported(k + " writes into a view of another tensor");
    }
    try {
      if (lower_on_onednn(n, k)) {
        ++onednn_ops;
        return;
      }
    } catch (const Unsupported&) {
    }
    // An in-place op through ATen writes the oneDNN buffer it reads, which nothing else
    // reads (checked above), except that the input's buffer can be the caller's tensor.
    if (in_place && id(n->input(0)) == 0) throw Unsupported("op " + k + " writes the model's input in place");
    generic(n, true);
  }
};

}  // namespace

// CompiledGraph::last_read and buffer_end. Values that may share memory (a view and its
// base, a list and its elements, the arguments of an op writing one of them, a flatten
// that keeps the bytes) are one group, union-find, and a buffer lives until the group's
// last read.
static void liveness(const std::vector<Step>& steps, int num_values, int output,
                     const std::vector<bool>& holds_tensor, std::vector<int>* last_read,
                     std::vector<int>* buffer_end) {
  std::vector<int>& last = *last_read;
  last.assign(num_values, -1);
  std::vector<int> group(num_values);
  for (int v = 0; v < num_values; ++v) group[v] = v;
  auto find = [&](int v) {
    while (group[v] != v) v = group[v] = group[group[v]];
    return v;
  };
  auto unite = [&](int a, int b) { group[find(a)] = find(b); };
  auto read = [&](int v, int i) {
    if (v >= 0) last[v] = std::max(last[v], i);
  };
  for (size_t si = 0; si < steps.size(); ++si) {
    const int i = static_cast<int>(si);
    const Step& s = steps[si];
    for (int o : s.outs) read(o, i);
    read(s.out, i);
    for (const auto& g : s.guards) read(g.first, i);
    read(s.in, i);
    read(s.in2, i);
    for (int a : s.args) read(a, i);
    for (const PostOp& p : s.post) read(p.value, i);
    if (s.kind == Step::kFlatten) unite(s.out, s.in);
    if (s.kind == Step::kGeneric && s.aliases) {
      int first = -1;
      for (const std::vector<int>* vs : {&s.args, &s.outs})
        for (int v : *vs)
          if (v >= 0 && holds_tensor[v]) {
            if (first < 0) first = v;
            unite(v, first);
          }
    }
  }
  last[0] = last[output] = std::numeric_limits<int>::max();
  std::vector<int> end(num_values, -1);
  for (int v = 0; v < num_values; ++v) end[find(v)] = std::max(end[find(v)], last[v]);
  buffer_end->resize(num_values);
  for (int v = 0; v < num_values; ++v) (*buffer_end)[v] = end[find(v)];
}

CompiledGraph compile_graph(const std::shared_ptr<jit::Graph>& graph, const c10::IValue& self, bool int8) {
  Compiler c;
  c.self = self;
  c.run(graph);
  if (c.output == 0) throw Unsupported("forward returns its input");
  // an element-wise step on an ATen result lays its output out as the linear layer
  // reading it wants it (rows), which an int8 linear layer needs (ConvNeXt's LayerNorm,
  // quantizer, linear)
  std::vector<int> producer(c.num_values, -1);
  for (size_t i = 0; i < c.steps.size(); ++i)
    if (c.steps[i].kind != Step::kGeneric) producer[c.steps[i].out] = static_cast<int>(i);
  for (const Step& s : c.steps)
    if (s.kind == Step::kLinear && producer[s.in] >= 0) c.steps[producer[s.in]].rows_for_linear = true;
  if (int8)
    for (Step& s : c.steps)
      if ((s.kind == Step::kConv || s.kind == Step::kLinear) && !integer_grid(s.weight, &s.qweight, &s.wstep))
        s.qweight = at::Tensor();
  CompiledGraph g;
  liveness(c.steps, c.num_values, c.output, c.holds_tensor, &g.last_read, &g.buffer_end);
  g.steps = std::move(c.steps);
  g.num_values = c.num_values;
  g.output = c.output;
  g.fused = c.fused;
  g.onednn_ops = c.onednn_ops;
  g.aten_ops = c.aten_ops;
  return g;
}

}  // namespace fused
}  // namespace anybit
