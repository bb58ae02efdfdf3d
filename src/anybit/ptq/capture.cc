// Capturing intermediate values of a model graph on calibration data.
#include "anybit/ptq/capture.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <optional>
#include <unordered_set>

#include "anybit/source/data_source.h"

namespace anybit {
namespace jit = torch::jit;

// Runs the graph on the first `samples` calibration inputs and returns the values `vals`
// took, as their producers made them (copies taken before any later in-place op),
// concatenated over batches. The graph's output is swapped for a tuple of those values while
// a copy of it is taken, then restored; the copy, with the model's own output gone, loses
// every op the values do not depend on (dead code elimination), so capturing the input of
// an early layer runs only the model up to it.
namespace {

// capture_values and capture_values_from: `from`, when set, stands for a graph input of
// its own whose values are `from_values`; nullopt when the values need the model's input.
std::optional<std::vector<at::Tensor>> capture(ModelGraph& g, const std::vector<jit::Value*>& vals,
                                               const DataSource* data, int64_t samples, jit::Value* from,
                                               const at::Tensor& from_values, int64_t batch,
                                               std::vector<bool>* batch_first = nullptr) {
  jit::Graph& graph = *g.graph;
  jit::Value* orig = graph.outputs().at(0);
  const size_t n_inputs = graph.inputs().size();
  std::vector<jit::Value*> all;
  // each value as its producer made it, before any in-place op later in the graph
  for (jit::Value* v : vals) all.push_back(insert_snapshot(graph, v));
  jit::Node* tup;
  {
    jit::WithInsertPoint guard(graph.return_node());
    tup = graph.insertNode(graph.createTuple(all));
  }
  graph.eraseOutput(0);
  graph.registerOutput(tup->output());
  jit::Value* known = nullptr;
  if (from) {
    known = graph.addInput()->setType(from->type());
    from->replaceAllUsesWith(known);
  }
  std::shared_ptr<jit::Graph> prefix = graph.copy();
  if (known) {
    known->replaceAllUsesWith(from);
    graph.eraseInput(n_inputs);
  }
  graph.eraseOutput(0);
  graph.registerOutput(orig);
  tup->destroy();
  for (size_t i = 0; i < all.size(); ++i) {
    jit::Node* copy = all[i]->node();
    jit::Node* none = copy->input(1)->node();
    copy->destroy();
    if (!none->hasUses()) none->destroy();
  }
  jit::EliminateDeadCode(prefix);
  if (from)
    for (size_t i = 1; i < n_inputs; ++i)
      if (prefix->inputs()[i]->hasUses()) return std::nullopt;  // `from` alone does not give them
  // each value's batches go straight into one tensor over all the samples (no list of
  // batches to concatenate at the end, which held every value twice), where the value has
  // the batch first; other values (a sequence-first attention input) are concatenated
  std::vector<at::Tensor> out(vals.size());
  std::vector<std::vector<at::Tensor>> parts(vals.size());
  jit::GraphFunction fn("anybit_capture", prefix, nullptr);
  torch::NoGradGuard no_grad;
  const c10::Device device = module_device(g.module);
  const std::vector<c10::IValue> defaults = default_inputs(g.module);
  const int64_t n = from ? from_values.size(0) : std::min(samples, data->size());
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t k = std::min(batch, n - b);
    jit::Stack stack{g.module._ivalue()};
    if (from) {
      for (size_t i = 1; i < n_inputs; ++i) stack.emplace_back(c10::IValue());
      stack.emplace_back(from_values.narrow(0, b, k).clone());  // the graph may change it in place
    } else {
      stack.emplace_back(data->batch(b, k).first.to(device));
      for (const c10::IValue& d : defaults) stack.push_back(d);
    }
    fn.run(stack);
    auto elems = stack.back().toTuple()->elements();
    for (size_t i = 0; i < vals.size(); ++i) {
      const at::Tensor t = elems[i].toTensor();
      if (b == 0 && t.dim() > 0 && t.size(0) == k) {
        std::vector<int64_t> shape = t.sizes().vec();
        shape[0] = n;
        out[i] = at::empty(shape, t.options().memory_format(at::MemoryFormat::Contiguous));
      }
      if (out[i].defined() && t.dim() > 0 && t.size(0) == k && t.sizes().slice(1) == out[i].sizes().slice(1)) {
        out[i].narrow(0, b, k).copy_(t);
      } else {
        if (out[i].defined()) parts[i].push_back(out[i].narrow(0, 0, b).clone()), out[i] = at::Tensor();
        parts[i].push_back(t);
      }
    }
  }
  if (batch_first) batch_first->assign(vals.size(), true);
  for (size_t i = 0; i < vals.size(); ++i)
    if (!out[i].defined()) {
      out[i] = at::cat(parts[i]);
      if (batch_first) (*batch_first)[i] = false;
    }
  return out;
}

}  // namespace

std::vector<at::Tensor> capture_values(ModelGraph& g, const std::vector<jit::Value*>& vals, const DataSource& data,
                                       int64_t samples, int64_t batch) {
  return *capture(g, vals, &data, samples, nullptr, at::Tensor(), batch);
}

std::optional<std::vector<at::Tensor>> capture_values_from(ModelGraph& g, jit::Value* from,
                                                           const at::Tensor& from_values,
                                                           const std::vector<jit::Value*>& vals, int64_t batch,
                                                           std::vector<bool>* batch_first) {
  // a view of another value would miss the in-place ops on what it views; the output of an
  // in-place op (relu_) is its input, changed: fine as long as nothing else of the model's
  // input is read (checked below)
  const c10::FunctionSchema* schema = from->node()->maybeSchema();
  if (from->node()->kind() != c10::prim::Param) {
    if (!schema || from->offset() >= schema->returns().size()) return std::nullopt;
    const c10::AliasInfo* alias = schema->returns()[from->offset()].alias_info();
    if (alias && !alias->isWrite()) return std::nullopt;
  }
  return capture(g, vals, nullptr, 0, from, from_values, batch, batch_first);
}

CaptureChain::CaptureChain(ModelGraph& g, const DataSource& data, int64_t samples, int64_t batch)
    : g_(g), data_(data), samples_(samples), batch_(batch) {}

std::vector<at::Tensor> CaptureChain::get(const std::vector<jit::Value*>& vals, bool forward_only) {
  std::vector<at::Tensor> got;
  std::vector<bool> batch_first;
  size_t used = 0;
  for (size_t c = cuts_.size(); c-- > 0;) {
    if (vals.size() == 1 && cuts_[c].value == vals[0]) {
      got = {cuts_[c].x};
      batch_first = {true};
    } else if (auto from = capture_values_from(g_, cuts_[c].value, cuts_[c].x, vals, batch_, &batch_first)) {
      got = std::move(*from);
    } else {
      continue;
    }
    used = c + 1;
    break;
  }
  if (!used) got = *capture(g_, vals, &data_, samples_, nullptr, at::Tensor(), batch_, &batch_first);
  // keeps memory bounded: what was captured before the cut used is not needed again
  cuts_.erase(cuts_.begin(), cuts_.begin() + static_cast<std::ptrdiff_t>(used == 0 ? cuts_.size()
                                                                         : forward_only ? used : used - 1));
  // only values with the batch first can be cut along it again
  for (size_t i = 0; i < vals.size(); ++i)
    if (batch_first[i] && std::none_of(cuts_.begin(), cuts_.end(), [&](const Cut& c) { return c.value == vals[i]; }))
      cuts_.push_back(Cut{vals[i], got[i]});
  return got;
}

void CaptureChain::changed(const jit::Node* n) {
  cuts_.erase(std::remove_if(cuts_.begin(), cuts_.end(), [&](const Cut& c) { return depends_on(c.value, n); }),
              cuts_.end());
}

bool depends_on(jit::Value* v, const jit::Node* n) {
  std::unordered_set<const jit::Node*> seen;
  std::vector<jit::Value*> todo{v};
  while (!todo.empty()) {
    jit::Node* m = todo.back()->node();
    todo.pop_back();
    if (m == n) return true;
    if (!seen.insert(m).second) continue;
    for (jit::Value* i : m->inputs()) todo.push_back(i);
    std::vector<jit::Block*> blocks(m->blocks().begin(), m->blocks().end());
    while (!blocks.empty()) {
      jit::Block* b = blocks.back();
      blocks.pop_back();
      for (jit::Node* k : b->nodes()) {
        if (k == n) return true;
        for (jit::Value* i : k->inputs()) todo.push_back(i);
        for (jit::Block* bb : k->blocks()) blocks.push_back(bb);
      }
      for (jit::Value* i : b->return_node()->inputs()) todo.push_back(i);
    }
  }
  return false;
}

}  // namespace anybit
