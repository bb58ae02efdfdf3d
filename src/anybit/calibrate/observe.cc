// The observation step of calibration; see observe.h.
#include "anybit/calibrate/observe.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/library.h>
#include <torch/script.h>

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <memory>
#include <mutex>

#include "anybit/base/error.h"
#include "anybit/data/progress.h"
#include "anybit/rewrite/quantizers.h"

namespace anybit {
namespace jit = torch::jit;

void observe_where_it_is(calib::Observer& observer, const at::Tensor& x) {
  if (x.numel() == 0) return;
  at::Tensor v = x.detach().reshape(-1);
  if (v.scalar_type() != at::kFloat) v = v.to(at::kFloat);
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor finite = at::isfinite(v);
  // one copy of four numbers: the finite extremes, sum |x| (in double) and the finite count
  const at::Tensor summary =
      at::stack({at::where(finite, v, at::scalar_tensor(inf, v.options())).min().to(at::kDouble),
                 at::where(finite, v, at::scalar_tensor(-inf, v.options())).max().to(at::kDouble),
                 at::where(finite, v.abs(), at::zeros({}, v.options())).to(at::kDouble).sum(),
                 finite.sum().to(at::kDouble)})
          .cpu();
  const double* d = summary.data_ptr<double>();
  calib::BatchSummary s;
  s.finite = static_cast<int64_t>(d[3]);
  s.nonfinite = v.numel() - s.finite;
  if (s.finite > 0) s.lo = d[0], s.hi = d[1], s.sum_abs = d[2];
  observer.observe_summarized(s, [&](double range, int bins, int64_t* counts) {
    const at::Tensor values = s.nonfinite ? v.masked_select(finite) : v;
    // x * (bins / 2) / range in double is exact (a power of two), and so is its floor; in
    // chunks, so that the double and index copies stay small
    constexpr int64_t kChunk = int64_t{1} << 24;
    for (int64_t b = 0; b < values.numel(); b += kChunk) {
      const at::Tensor chunk = values.slice(0, b, std::min(values.numel(), b + kChunk));
      const at::Tensor idx = at::floor(chunk.to(at::kDouble) * (bins / 2 / range)).to(at::kLong) + bins / 2;
      const at::Tensor c = at::bincount(idx, {}, bins).to(at::kCPU, at::kLong).contiguous();
      const int64_t* cp = c.data_ptr<int64_t>();
      for (int64_t j = 0; j < std::min<int64_t>(bins, c.numel()); ++j) counts[j] += cp[j];
    }
  });
}

namespace {

struct Slot {
  calib::Observer observer;
  int64_t per_sample_numel = 0;
};

std::mutex g_slots_mu;
std::map<int64_t, std::shared_ptr<Slot>> g_slots;
int64_t g_next_slot = 1;

at::Tensor op_observe(const at::Tensor& x, int64_t slot) {
  std::shared_ptr<Slot> s;
  {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    auto it = g_slots.find(slot);
    if (it != g_slots.end()) s = it->second;
  }
  if (s) {
    if (x.device().is_cpu()) {
      const at::Tensor c = x.detach().to(at::kFloat).contiguous();
      s->observer.observe(c.data_ptr<float>(), c.numel());
    } else {
      // on a device the statistics are computed there; only they come to the host
      observe_where_it_is(s->observer, x);
    }
    if (x.dim() >= 1 && x.size(0) > 0) s->per_sample_numel = x.numel() / x.size(0);
  }
  return x;
}

}  // namespace
}  // namespace anybit

TORCH_LIBRARY_FRAGMENT(anybit, m) {
  m.def("observe(Tensor(a) x, int slot) -> Tensor(a)", &anybit::op_observe);
}

namespace anybit {
namespace {

// RAII: slots live for one calibration.
struct SlotScope {
  std::vector<int64_t> ids;
  int64_t add() {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    int64_t id = g_next_slot++;
    g_slots[id] = std::make_shared<Slot>();
    ids.push_back(id);
    return id;
  }
  std::shared_ptr<Slot> get(int64_t id) {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    return g_slots.at(id);
  }
  ~SlotScope() {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    for (int64_t id : ids) g_slots.erase(id);
  }
};


}  // namespace

std::map<size_t, Observed> observe_points(ModelGraph& g, const std::vector<size_t>& points, const DataSource& data,
                                          const ObserveOptions& options) {
  std::map<size_t, Observed> out;
  if (points.empty()) return out;
  const int64_t total = std::min(data.size(), options.samples);
  if (total <= 0) throw Error(data.describe() + ": no calibration samples");
  jit::Graph& graph = *g.graph;
  SlotScope slots;
  std::map<size_t, int64_t> slot_of;  // point index -> slot
  std::vector<jit::Node*> observers;
  for (size_t i : points) {
    const int64_t id = slots.add();
    slot_of[i] = id;
    jit::Value* y = insert_at_point(graph, g.points[i], [&](jit::Value* x) {
      jit::Node* n = graph.create(c10::Symbol::fromQualString("anybit::observe"), {x, graph.insertConstant(id)});
      graph.insertNode(n);
      n->output()->setType(x->type());
      return n->output();
    });
    observers.push_back(y->node());
  }
  {
    jit::GraphFunction fn("anybit_calibrate", g.graph, nullptr);
    torch::NoGradGuard no_grad;
    // the passes run on the device; the model comes back to the CPU after them (or on an
    // error), where its quantizer parameters are computed
    const ModulesOnDevice on_device({g.module}, options.device);
    data::ProgressBar bar("calibrate", total, options.progress);
    const std::vector<c10::IValue> defaults = default_inputs(g.module);
    for (int64_t b = 0; b < total; b += options.batch_size) {
      auto batch = data.batch(b, std::min(options.batch_size, total - b));
      jit::Stack stack{g.module._ivalue(), batch.first.to(options.device)};
      for (const c10::IValue& d : defaults) stack.push_back(d);
      try {
        fn.run(stack);
      } catch (const std::exception& e) {
        std::string what = e.what();
        throw Error(data.describe() + ": the model rejects inputs of shape " + c10::str(batch.first.sizes()) + ": " +
                    error_summary(what));
      }
      bar.update(b + batch.first.size(0));
    }
    bar.finish();
  }
  for (jit::Node* n : observers) {
    n->output()->replaceAllUsesWith(n->input(0));
    jit::Node* c = n->input(1)->node();
    n->destroy();
    if (!c->hasUses()) c->destroy();
  }
  for (const auto& [i, id] : slot_of) {
    const Slot& slot = *slots.get(id);
    out[i] = Observed{slot.observer, slot.per_sample_numel};
  }
  return out;
}

}  // namespace anybit
