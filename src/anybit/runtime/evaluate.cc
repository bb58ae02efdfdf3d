// Evaluation and probing; see evaluate.h.
#include "anybit/runtime/evaluate.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <map>

#include "anybit/base/error.h"
#include "anybit/data/progress.h"
#include "anybit/graph/graph.h"
#include "anybit/quant/node.h"
#include "anybit/runtime/fused_eval.h"

namespace anybit {
namespace jit = torch::jit;

namespace {
// A frozen copy of m (torch::jit::freeze copies the module and leaves m as it is).
torch::jit::Module frozen_copy(torch::jit::Module& m) {
  m.eval();
  try {
    return torch::jit::freeze(m);
  } catch (const std::exception&) {
    return m;  // models freezing cannot handle are evaluated as they are
  }
}
}  // namespace

std::vector<QuantizerOutput> probe_quantizers(torch::jit::Module& model, const at::Tensor& x) {
  std::map<std::string, std::string> names;
  if (model.hasattr("anybit_points"))
    for (const auto& kv : model.attr("anybit_points").toGenericDict())
      names[kv.key().toStringRef()] = kv.value().toStringRef();
  auto graph = jit::toGraphFunction(model.get_method("forward").function()).graph()->copy();
  std::vector<jit::Value*> outs;
  std::vector<QuantizerOutput> result;
  for (jit::Node* n : graph->nodes()) {
    if (!qnode::is_quantizer(n)) continue;
    QuantizerOutput q;
    q.op = n->kind().toQualString();
    if (n->inputs().size() > 1 && n->input(1)->node()->kind() == c10::prim::GetAttr) {
      auto it = names.find(n->input(1)->node()->s(c10::attr::name));
      if (it != names.end()) q.point = it->second;
    }
    outs.push_back(n->output());
    result.push_back(q);
  }
  // what each quantizer produced, before any in-place op later in the graph changes it
  for (jit::Value*& v : outs) v = insert_snapshot(*graph, v);
  graph->eraseOutput(0);
  graph->registerOutput(graph->insertNode(graph->createTuple(outs))->output());
  jit::GraphFunction fn("anybit_probe", graph, nullptr);
  jit::Stack stack{model._ivalue(), x};
  for (const c10::IValue& d : default_inputs(model)) stack.push_back(d);
  torch::NoGradGuard no_grad;
  fn.run(stack);
  auto elems = stack.back().toTuple()->elements();
  for (size_t i = 0; i < result.size(); ++i) result[i].value = elems[i].toTensor();
  return result;
}

namespace {
bool is_tensor_type(const c10::TypePtr& t) { return t->isSubtypeOf(*c10::TensorType::get()); }

bool parse_index(const std::string& s, int64_t* i) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end) return false;
  *i = v;
  return true;
}

// "GoogLeNetOutputs(logits: Tensor, aux_logits2: Optional[Tensor], ...)" or "Tuple[Tensor, Tensor]"
std::string tuple_str(const c10::TupleType& t) {
  const auto names = t.names();
  if (!t.name() || !names) return t.annotation_str();
  std::string s = t.name()->name() + "(";
  for (size_t i = 0; i < names->size(); ++i)
    s += (i ? ", " : "") + std::string((*names)[i]) + ": " + t.elements()[i]->annotation_str();
  return s + ")";
}

const char* const kPick = " (anybit eval --scores INDEX|NAME; Python: scores=)";

c10::TypePtr output_type(torch::jit::Module& model) {
  return jit::toGraphFunction(model.get_method("forward").function()).graph()->outputs().at(0)->type();
}
}  // namespace

bool ScoresPicker::returns_tensor(torch::jit::Module& model) { return is_tensor_type(output_type(model)); }

ScoresPicker::ScoresPicker(torch::jit::Module& model, const std::string& select) {
  const c10::TypePtr t = output_type(model);
  if (is_tensor_type(t)) {
    if (!select.empty())
      throw Error("--scores " + select + ": the model returns one tensor, its class scores; drop --scores");
    return;
  }
  if (auto tt = t->cast<c10::TupleType>()) {
    const std::string out = "the model returns " + tuple_str(*tt);
    const auto& elems = tt->elements();
    std::vector<std::string> names;
    if (auto n = tt->names())
      for (auto f : *n) names.emplace_back(f);
    auto field = [&](const std::string& f) {
      auto it = std::find(names.begin(), names.end(), f);
      return it == names.end() ? int64_t{-1} : int64_t(it - names.begin());
    };
    int64_t i = -1;
    if (select.empty()) {
      i = field("logits");
      if (i < 0) {
        std::vector<int64_t> tensors;
        for (size_t k = 0; k < elems.size(); ++k)
          if (is_tensor_type(elems[k])) tensors.push_back(int64_t(k));
        if (tensors.size() != 1)
          throw Error(out + ": which element holds the class scores? Pick it by index or field" + kPick);
        i = tensors[0];
      }
    } else if (parse_index(select, &i)) {
      if (i < 0 || i >= int64_t(elems.size()))
        throw Error("--scores " + select + ": " + out + ", " + std::to_string(elems.size()) + " elements");
    } else if ((i = field(select)) < 0) {
      throw Error("--scores " + select + ": " + out + ", which has no field '" + select + "'");
    }
    if (!is_tensor_type(elems[i]))
      throw Error("--scores: element " + std::to_string(i) + " of what the model returns is " +
                  elems[i]->annotation_str() + ", not the class scores (" + tuple_str(*tt) + ")");
    kind_ = Kind::kTuple;
    index_ = i;
    what_ = (names.empty() ? "element " + std::to_string(i) : "field '" + names[i] + "' (element " + std::to_string(i) + ")") +
            " of the model's " + (tt->name() ? tt->name()->name() : tt->annotation_str());
  } else if (auto lt = t->cast<c10::ListType>(); lt && is_tensor_type(lt->getElementType())) {
    if (!parse_index(select, &index_))
      throw Error("the model returns " + t->annotation_str() + ": which element holds the class scores? Pick it by index" + kPick);
    kind_ = Kind::kList;
    what_ = "element " + select + " of the model's list";
  } else if (auto dt = t->cast<c10::DictType>();
             dt && dt->getKeyType()->kind() == c10::TypeKind::StringType && is_tensor_type(dt->getValueType())) {
    kind_ = Kind::kDict;
    key_ = select.empty() ? "logits" : select;
    what_ = "key '" + key_ + "' of the model's dict";
  } else {
    throw Error("the model returns " + t->annotation_str() + "; evaluation needs class scores [N, classes], a tensor");
  }
}

at::Tensor ScoresPicker::operator()(const c10::IValue& v) const {
  switch (kind_) {
    case Kind::kTensor:
      return v.toTensor();
    case Kind::kTuple:
      return v.toTupleRef().elements().at(index_).toTensor();
    case Kind::kList: {
      const auto list = v.toList();
      const int64_t n = int64_t(list.size());
      if (index_ >= n || index_ < -n)
        throw Error("--scores " + std::to_string(index_) + ": the model returned a list of " + std::to_string(n) + " tensors");
      return list.get(index_ < 0 ? index_ + n : index_).toTensor();
    }
    case Kind::kDict: {
      const auto dict = v.toGenericDict();
      auto it = dict.find(key_);
      if (it != dict.end()) return it->value().toTensor();
      std::string keys;
      for (const auto& kv : dict) keys += (keys.empty() ? "" : ", ") + kv.key().toStringRef();
      throw Error("the model returned a dict without the key '" + key_ + "' (its keys: " + keys + "); pick the key" + kPick);
    }
  }
  return {};
}

std::pair<torch::jit::Module, ScoresPicker> ScoresPicker::returning_scores(torch::jit::Module& model) const {
  if (kind_ != Kind::kTuple) return {model, *this};  // lists and dicts are picked from at run time
  torch::jit::Module copy = model.clone();
  auto graph = jit::toGraphFunction(copy.get_method("forward").function()).graph();
  jit::WithInsertPoint guard(graph->return_node());
  jit::Value* scores = graph->insertNode(graph->createTupleIndex(graph->outputs()[0], graph->insertConstant(index_),
                                                                 c10::TensorType::get()))->output();
  graph->eraseOutput(0);
  graph->registerOutput(scores);
  return {copy, ScoresPicker()};
}

namespace {
// Runs a frozen model on the fused oneDNN layers when it compiles, else in the
// interpreter; the first batch runs both ways and the compiled model is kept only if
// its argmax agrees with the interpreter's on at least 99% of the samples.
class FusedRunner {
 public:
  // `r` (optional) receives the runtime and its note.
  FusedRunner(torch::jit::Module& m, const ScoresPicker& scores, bool fuse, EvalResult* r)
      : module_(m), scores_(scores), result_(r) {
    if (!fuse) return;
    std::string why;
    fused_ = FusedModel::compile(m, &why);
    note(fused_ ? "" : why);
  }
  at::Tensor operator()(const at::Tensor& x) {
    if (!fused_) return scores_(module_.forward({x}));
    if (checked_) return fused_->forward(x);
    at::Tensor expect = scores_(module_.forward({x}));
    at::Tensor got;
    std::string why;
    try {
      got = fused_->forward(x);
    } catch (const Error& e) {
      why = e.what();
    }
    if (why.empty() && got.sizes() != expect.sizes()) why = "the compiled layers give another output shape";
    if (why.empty() && expect.dim() == 2 && expect.size(0) > 0) {
      const double agree = (got.argmax(1) == expect.argmax(1)).to(at::kDouble).mean().item<double>();
      if (agree < 0.99) {
        const double sqnr = 10 * std::log10(expect.pow(2).sum().item<double>() / (got - expect).pow(2).sum().item<double>());
        why = "the compiled layers agree with the interpreter on " + std::to_string(100 * agree) +
              "% of the first batch's argmax (SQNR " + std::to_string(sqnr) + " dB)";
      }
    }
    checked_ = true;
    if (!why.empty()) {
      fused_.reset();
      note(why);
    } else {
      note(fused_->summary(x));
    }
    return expect;
  }

 private:
  void note(const std::string& why) {
    if (!result_) return;
    result_->runtime = fused_ ? "onednn" : "torchscript";
    result_->runtime_note = why;
  }
  torch::jit::Module& module_;
  const ScoresPicker& scores_;
  EvalResult* result_;
  std::unique_ptr<FusedModel> fused_;
  bool checked_ = false;
};
}  // namespace

EvalResult evaluate(torch::jit::Module& model_in, const DataSource& data, const EvalOptions& opt,
                    torch::jit::Module* reference_in) {
  check_one_input(model_in, "evaluate");
  if (reference_in) check_one_input(*reference_in, "evaluate, the reference model");
  EvalResult r;
  const int64_t batch_size = opt.batch_size;
  const bool progress = opt.progress;
  torch::NoGradGuard no_grad;
  const bool on_device = !opt.device.is_cpu();
  // a copy on the device, moved before freezing (frozen weights are constants of the graph)
  auto prepared = [&](torch::jit::Module& m) {
    torch::jit::Module src = m;
    if (on_device) {
      src = m.clone();
      src.to(opt.device);
    }
    return opt.freeze ? frozen_copy(src) : src;
  };
  // the class scores: a copy returning them when they are a tuple's element
  // scored(): {the module returning the scores, the picker that reads them from it}
  auto scored = [&](torch::jit::Module& m, const std::string& select) {
    const ScoresPicker p(m, select);
    if (&m == &model_in) r.scores = p.describe();
    return p.returning_scores(m);
  };
  ScoresPicker pick, ref_pick;
  // (a copy made for the scores is dropped once freezing has copied it again)
  torch::jit::Module model = [&] {
    auto [s, picker] = scored(model_in, opt.scores);
    pick = picker;
    return prepared(s);
  }();
  torch::jit::Module ref_module;
  torch::jit::Module* reference = nullptr;
  if (reference_in) {
    // --scores is the model's; a reference that returns a tensor needs none
    auto [s, picker] = scored(*reference_in, ScoresPicker::returns_tensor(*reference_in) ? "" : opt.scores);
    ref_pick = picker;
    ref_module = prepared(s);
    reference = &ref_module;
  }
  const auto t0 = std::chrono::steady_clock::now();
  // the fused oneDNN layers are the CPU's; on a device the interpreter runs the model there
  FusedRunner run(model, pick, opt.freeze && opt.fused && !on_device, &r);
  FusedRunner run_ref(ref_module, ref_pick, reference && opt.freeze && opt.fused && !on_device, nullptr);
  if (on_device) r.runtime_note = "on " + opt.device.str();
  int64_t correct1 = 0, correct5 = 0, agree = 0;
  double loss = 0;
  data::ProgressBar bar("evaluate", data.size(), progress);
  for (int64_t b = 0; b < data.size(); b += batch_size) {
    auto batch = data.batch(b, batch_size);
    at::Tensor out;
    try {
      out = run(batch.first.to(opt.device)).to(at::kCPU);
    } catch (const Error&) {
      throw;  // anybit's own message (the class scores not where --scores says)
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error(data.describe() + ": the model rejects inputs of shape " + c10::str(batch.first.sizes()) +
                  ": " + error_summary(what));
    }
    if (out.dim() != 2 || out.size(0) != batch.first.size(0))
      throw Error("the model's output has shape " + c10::str(out.sizes()) +
                  "; evaluation expects class scores [N, classes]");
    const at::Tensor& y = batch.second;
    if (y.min().item<int64_t>() < 0)
      throw Error(data.describe() + ": the data has no labels; evaluation needs them (npy:X.npy:LABELS.npy)");
    if (y.max().item<int64_t>() >= out.size(1))
      throw Error(data.describe() + ": label " + std::to_string(y.max().item<int64_t>()) +
                  " is outside the model's " + std::to_string(out.size(1)) + " classes");
    at::Tensor pred = out.argmax(1);
    correct1 += (pred == y).sum().item<int64_t>();
    const int64_t k = std::min<int64_t>(5, out.size(1));
    at::Tensor top = std::get<1>(out.topk(k, 1));
    correct5 += (top == y.unsqueeze(1)).any(1).sum().item<int64_t>();
    loss += at::cross_entropy_loss(out, y, {}, at::Reduction::Sum).item<double>();
    if (reference) {
      at::Tensor ref = run_ref(batch.first.to(opt.device)).to(at::kCPU);
      agree += (ref.argmax(1) == pred).sum().item<int64_t>();
    }
    r.samples += batch.first.size(0);
    bar.update(r.samples);
  }
  bar.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.samples) {
    r.top1 = 100.0 * correct1 / r.samples;
    r.top5 = 100.0 * correct5 / r.samples;
    r.loss = loss / r.samples;
    if (reference) r.agreement = 100.0 * agree / r.samples;
  }
  return r;
}

void to_json(nlohmann::json& j, const EvalResult& r) {
  j = {{"samples", r.samples}, {"top1", r.top1},       {"top5", r.top5},
       {"loss", r.loss},       {"seconds", r.seconds}, {"runtime", r.runtime}};
  if (r.agreement >= 0) j["agreement"] = r.agreement;
  if (!r.runtime_note.empty()) j["runtime_note"] = r.runtime_note;
  if (!r.scores.empty()) j["scores"] = r.scores;
}

}  // namespace anybit
