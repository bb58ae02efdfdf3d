// Block reconstruction (BRECQ + QDrop); see brecq.h for the objective, the partition and
// the sources.
#include "anybit/ptq/brecq.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

#include "anybit/data/file_read.h"
#include "anybit/data/progress.h"
#include "anybit/ptq/capture.h"
#include "anybit/quant/node.h"
#include "anybit/source/data_source.h"

namespace anybit {
namespace jit = torch::jit;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool is_quantizer(const jit::Node* n) { return qnode::is_quantizer(n); }

// What later ops read of a point's value: its quantizer's output where it has one.
jit::Value* quantized_value(jit::Value* v) {
  for (const jit::Use& u : v->uses())
    if (u.offset == 0 && is_quantizer(u.user)) return u.user->output();
  return v;
}

bool is_act(const Point& p) { return p.role == Role::kActivation || p.role == Role::kInput; }

struct RawBlock {
  std::string name;
  std::vector<const Point*> points;
  bool has_weight = false;
};

std::vector<RawBlock> raw_partition(const ModelGraph& q) {
  std::vector<const Point*> pts;
  for (const auto& p : q.points) pts.push_back(&p);
  std::stable_sort(pts.begin(), pts.end(), [](const Point* a, const Point* b) { return a->index < b->index; });
  std::vector<std::string> residual;  // module paths that own a residual add
  for (const Point* p : pts)
    if (p->kind == "add" && !p->module.empty() && is_act(*p) &&
        std::find(residual.begin(), residual.end(), p->module) == residual.end())
      residual.push_back(p->module);
  auto residual_of = [&](const std::string& m) {
    std::string best;
    for (const auto& r : residual)
      if ((m == r || starts_with(m, r + ".")) && r.size() > best.size()) best = r;
    return best;
  };
  std::vector<RawBlock> out;
  enum { kNone, kResidual, kLayer } cur = kNone;
  std::string layer_module;
  for (const Point* p : pts) {
    const std::string r = residual_of(p->module);
    if (!r.empty()) {
      if (cur != kResidual || out.back().name != r) out.push_back(RawBlock{r, {}, true});
      out.back().points.push_back(p);
      cur = kResidual;
      continue;
    }
    const std::string own = p->module.empty() ? p->name : p->module;
    if (p->role == Role::kWeight || p->role == Role::kBias) {
      if (cur == kLayer && !out.back().has_weight) {  // activation points waiting for their layer
        out.back().name = own;
        out.back().has_weight = true;
        layer_module = p->module;
      } else if (!(cur == kLayer && p->module == layer_module)) {
        out.push_back(RawBlock{own, {}, true});
        layer_module = p->module;
        cur = kLayer;
      }
    } else if (cur != kLayer) {
      out.push_back(RawBlock{p->name, {}, false});
      layer_module.clear();
      cur = kLayer;
    }
    out.back().points.push_back(p);
  }
  return out;
}

// The nodes computing `out` from `in`, self, constants and the values in `stops` (which
// are recorded in `reached`); false when they read another graph input.
bool slice(jit::Graph& g, jit::Value* out, jit::Value* in, const std::unordered_set<jit::Value*>& stops,
           std::vector<jit::Node*>* nodes, std::unordered_set<jit::Value*>* reached) {
  jit::Value* self = g.inputs().at(0);
  std::unordered_set<jit::Node*> seen;
  std::vector<jit::Value*> todo{out};
  bool ok = true;
  std::function<void(jit::Block*)> free_vars = [&](jit::Block* b) {
    for (jit::Node* m : b->nodes()) {
      for (jit::Value* v : m->inputs())
        if (v->node()->owningBlock() == g.block()) todo.push_back(v);
      for (jit::Block* bb : m->blocks()) free_vars(bb);
    }
    for (jit::Value* v : b->return_node()->inputs())
      if (v->node()->owningBlock() == g.block()) todo.push_back(v);
  };
  while (!todo.empty()) {
    jit::Value* v = todo.back();
    todo.pop_back();
    if (v == in || v == self) continue;
    if (stops.count(v)) {
      reached->insert(v);
      continue;
    }
    jit::Node* n = v->node();
    if (n->kind() == c10::prim::Param) {
      ok = false;
      continue;
    }
    if (!seen.insert(n).second) continue;
    for (jit::Value* i : n->inputs()) todo.push_back(i);
    for (jit::Block* b : n->blocks()) free_vars(b);
  }
  nodes->clear();
  for (jit::Node* n : g.nodes())
    if (seen.count(n)) nodes->push_back(n);
  return ok;
}

struct Block {
  std::string name;
  std::vector<const Point*> points;
  jit::Value* in = nullptr;   // in the quantized graph
  jit::Value* out = nullptr;
  std::vector<jit::Node*> nodes;
  std::unordered_set<jit::Value*> reached;
};

// Blocks with their cut values; adjacent blocks are merged until each one's graph reads
// only the previous cut.
std::vector<Block> cut_blocks(const ModelGraph& q, const std::unordered_set<jit::Value*>& stops) {
  jit::Graph& g = *q.graph;
  std::vector<RawBlock> raw = raw_partition(q);
  std::vector<Block> blocks;
  for (size_t i = 0; i < raw.size(); ++i) {
    Block b;
    b.name = raw[i].name;
    b.points = raw[i].points;
    if (i + 1 == raw.size()) {
      b.out = g.outputs().at(0);
    } else {
      for (const Point* p : raw[i].points)
        if (is_act(*p) && p->value) b.out = quantized_value(p->value);
    }
    blocks.push_back(b);
  }
  // a block without an activation point at its end joins the next one
  std::vector<Block> merged;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!merged.empty() && !merged.back().out) {
      Block& m = merged.back();
      m.name += "+" + blocks[i].name;
      m.points.insert(m.points.end(), blocks[i].points.begin(), blocks[i].points.end());
      m.out = blocks[i].out;
    } else {
      merged.push_back(blocks[i]);
    }
  }
  if (!merged.empty() && !merged.back().out) merged.back().out = g.outputs().at(0);
  if (g.inputs().size() < 2) throw Error("brecq: the model has no input");
  std::vector<Block> out;
  for (auto& b : merged) {
    while (true) {
      b.in = out.empty() ? g.inputs().at(1) : out.back().out;
      if (slice(g, b.out, b.in, stops, &b.nodes, &b.reached)) break;
      if (out.empty()) throw Error("brecq: cannot cut " + b.name + " out of the graph (several model inputs?)");
      Block prev = out.back();
      out.pop_back();
      prev.points.insert(prev.points.end(), b.points.begin(), b.points.end());
      prev.name += "+" + b.name;
      prev.out = b.out;
      b = prev;
    }
    out.push_back(b);
  }
  return out;
}

// The value of the reference graph that a cut of the quantized graph stands for.
jit::Value* reference_value(const ModelGraph& q, const ModelGraph& ref, jit::Value* v) {
  for (size_t i = 0; i < q.graph->inputs().size(); ++i)
    if (q.graph->inputs()[i] == v) return ref.graph->inputs().at(i);
  if (v == q.graph->outputs().at(0)) return ref.graph->outputs().at(0);
  jit::Value* base = is_quantizer(v->node()) ? v->node()->input(0) : v;
  for (const auto& p : q.points)
    if (is_act(p) && p.value == base) {
      const Point* rp = ref.find(p.name);
      return rp ? rp->value : nullptr;
    }
  return nullptr;
}

struct ScaleSlot {
  std::string attr;   // root-module tensor holding the step
  std::string point;
};

// Block objective of BRECQ's code: squared error summed over channels, averaged over
// samples and positions.
at::Tensor rec_loss(const at::Tensor& out, const at::Tensor& target) {
  at::Tensor d = (out - target).pow(2);
  return d.dim() >= 2 ? d.sum(1).mean() : d.mean();
}

}  // namespace

std::vector<BrecqBlock> brecq_partition(const ModelGraph& q) {
  std::vector<BrecqBlock> out;
  for (const Block& b : cut_blocks(q, {})) {
    BrecqBlock r{b.name, {}};
    for (const Point* p : b.points) r.points.push_back(p->name);
    out.push_back(r);
  }
  return out;
}

namespace {


// A block's checkpoint: what it changed in the model, its report, the generators' states.
void save_checkpoint(const std::string& path, const c10::impl::GenericDict& d) {
  const std::vector<char> bytes = jit::pickle_save(d);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(path + ": cannot write the BRECQ checkpoint");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write the BRECQ checkpoint");
  }
}

c10::impl::GenericDict load_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    return jit::pickle_load(bytes).toGenericDict();
  } catch (const std::exception&) {
    throw Error(path + ": not a BRECQ checkpoint (remove it to learn that block again)");
  }
}

}  // namespace

std::vector<BrecqReport> brecq(ModelGraph& q, ModelGraph& ref, const std::vector<AdaRoundLayer>& layers,
                               const DataSource& calib, const BrecqOptions& o) {
  if (!o.checkpoint_dir.empty()) {
    ::mkdir(o.checkpoint_dir.c_str(), 0755);
    if (!o.resume && data::path_exists(o.checkpoint_dir + "/brecq_block_0.pt"))
      throw Error(o.checkpoint_dir + ": holds BRECQ checkpoints already; pass --resume to continue that run or "
                  "choose another --checkpoint-dir");
  }
  jit::Graph& g = *q.graph;
  jit::Value* self = g.inputs().at(0);
  // what the blocks' graphs take as inputs instead of computing: the quantized weights
  // of `layers` (replaced by AdaRound's soft weights) and the steps of the activation quantizers
  std::unordered_map<jit::Value*, size_t> weight_of;
  for (size_t i = 0; i < layers.size(); ++i) weight_of[layers[i].qnode->input(1)] = i;
  std::unordered_map<jit::Value*, ScaleSlot> scale_of;
  if (o.learn_scales)
    for (const auto& p : q.points) {
      if (!is_act(p) || !p.value) continue;
      jit::Value* y = quantized_value(p.value);
      if (y == p.value || qnode::op_of(y->node()) != qnode::Op::kAffine) continue;
      jit::Value* s = y->node()->input(qnode::info(qnode::Op::kAffine).scale);
      if (s->node()->kind() != c10::prim::GetAttr || s->node()->input(0) != self) continue;
      const std::string attr = s->node()->s(c10::attr::name);
      if (!q.module.hasattr(attr) || !q.module.attr(attr).isTensor() || q.module.attr(attr).toTensor().numel() != 1)
        continue;
      scale_of[s] = ScaleSlot{attr, p.name};
    }
  std::unordered_set<jit::Value*> stops;
  for (const auto& kv : weight_of) stops.insert(kv.first);
  for (const auto& kv : scale_of) stops.insert(kv.first);
  std::vector<Block> blocks = cut_blocks(q, stops);

  std::vector<BrecqReport> reports;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  // each block's input in the quantized model from the previous block's: one block runs
  CaptureChain quantized(q, calib, o.samples);
  CaptureChain floats(ref, calib, o.samples);  // the float model's, likewise
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const Block& B = blocks[bi];
    std::vector<size_t> wl;  // layers in the block, forward order
    std::vector<jit::Value*> svals;
    for (jit::Node* n : B.nodes)
      for (jit::Value* v : n->inputs())
        if (B.reached.count(v)) {
          if (weight_of.count(v) && std::find(wl.begin(), wl.end(), weight_of[v]) == wl.end())
            wl.push_back(weight_of[v]);
          if (scale_of.count(v) && std::find(svals.begin(), svals.end(), v) == svals.end()) svals.push_back(v);
        }
    // the block's weights or steps now hold other values: kept captures through them go
    auto block_changed = [&] {
      for (size_t l : wl) quantized.changed(layers[l].qnode);
      for (jit::Value* sv : svals) quantized.changed(sv->node());
    };
    jit::Value* rin = reference_value(q, ref, B.in);
    jit::Value* rout = reference_value(q, ref, B.out);
    if ((wl.empty() && svals.empty()) || !rin || !rout) continue;
    const std::string ckpt =
        o.checkpoint_dir.empty() ? "" : o.checkpoint_dir + "/brecq_block_" + std::to_string(bi) + ".pt";
    if (!ckpt.empty() && o.resume && data::path_exists(ckpt)) {
      const c10::impl::GenericDict d = load_checkpoint(ckpt);
      if (d.at("name").toStringRef() != B.name)
        throw Error(ckpt + ": the checkpoint of block " + d.at("name").toStringRef() + ", not of " + B.name +
                    " (another model or config): choose another --checkpoint-dir");
      for (size_t l : wl) {
        const at::Tensor& old = resolve_attr(q.module, layers[l].weight_path).toTensor();
        assign_attr(q.module, layers[l].weight_path, d.at("w:" + layers[l].weight_path).toTensor().to(old.device()));
      }
      for (jit::Value* sv : svals) q.module.attr(scale_of[sv].attr).toTensor().copy_(d.at("s:" + scale_of[sv].attr).toTensor());
      block_changed();
      gen.set_state(d.at("generator").toTensor());
      BrecqReport r;
      r.name = B.name;
      r.weights = static_cast<int>(wl.size());
      r.scales = static_cast<int>(svals.size());
      r.mse_nearest = d.at("mse_nearest").toDouble();
      r.mse_brecq = d.at("mse_brecq").toDouble();
      r.kept_nearest = d.at("kept_nearest").toBool();
      r.kept_steps = d.at("kept_steps").toBool();
      r.resumed = true;
      reports.push_back(r);
      continue;
    }
    // the block as a graph of its own: (self, x, soft weights..., steps...) -> output
    auto sub = std::make_shared<jit::Graph>();
    std::unordered_map<jit::Value*, jit::Value*> vmap;
    vmap[self] = sub->addInput("self")->setType(self->type());
    vmap[B.in] = sub->addInput("x")->setType(B.in->type());
    for (size_t l : wl) vmap[layers[l].qnode->input(1)] = sub->addInput()->setType(c10::TensorType::get());
    for (jit::Value* s : svals) vmap[s] = sub->addInput()->setType(c10::TensorType::get());
    // QDrop inside the block: each learned activation quantizer's output is, element-wise
    // with probability `drop`, its unquantized input (0 when evaluating). The quantizer
    // becomes anybit::fake_quant_affine_drop, which draws its mask from (seed, its stream,
    // the element) in the kernel: no random tensor, comparison and select per quantizer.
    jit::Value* drop = o.drop_inside ? sub->addInput("drop")->setType(c10::FloatType::get()) : nullptr;
    jit::Value* drop_seed = o.drop_inside ? sub->addInput("seed")->setType(c10::IntType::get()) : nullptr;
    const std::unordered_set<jit::Value*> learned(svals.begin(), svals.end());
    int64_t stream = 0;
    for (jit::Node* n : B.nodes) {
      jit::Node* c = sub->insertNode(sub->createClone(n, [&](jit::Value* v) { return vmap.at(v); }));
      for (size_t i = 0; i < n->outputs().size(); ++i) vmap[n->output(i)] = c->output(i);
      if (drop && qnode::op_of(n) == qnode::Op::kAffine && learned.count(n->input(1))) {
        const auto in = c->inputs();
        jit::Node* d = sub->create(c10::Symbol::fromQualString("anybit::fake_quant_affine_drop"),
                                   {in[0], in[1], in[2], in[3], in[4], in[5], in[6], drop, drop_seed,
                                    sub->insertConstant(stream++), in[7], in[8]});
        sub->insertNode(d)->output()->setType(c10::TensorType::get());
        vmap[n->output()] = d->output();
      }
    }
    sub->registerOutput(vmap.at(B.out));
    jit::EliminateDeadCode(sub);
    jit::GraphFunction fn("anybit_brecq_block", sub, nullptr);
    auto run = [&](const at::Tensor& x, const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& ss,
                   double p = 0, int64_t seed = 0) {
      jit::Stack st{q.module._ivalue(), x};
      for (const auto& w : ws) st.emplace_back(w);
      for (const auto& s : ss) st.emplace_back(s);
      if (drop) {
        st.emplace_back(p);
        st.emplace_back(seed);
      }
      fn.run(st);
      return st.back().toTensor();
    };

    // the block input in the quantized model, earlier blocks done
    at::Tensor xq = quantized.get(B.in, /*forward_only=*/true);
    // the float block's output (and input, where QDrop mixes it into the block input)
    const bool mix_input = o.drop_prob > 0 && !o.drop_inside;
    const std::vector<at::Tensor> fp =
        floats.get(mix_input ? std::vector<jit::Value*>{rin, rout} : std::vector<jit::Value*>{rout},
                   /*forward_only=*/true);
    const at::Tensor xfp = mix_input ? fp[0] : at::Tensor(), yfp = fp.back();
    const int64_t n = xq.size(0);

    // AdaRound's rounding variables (adaround.h)
    std::vector<LearnedRounding> R;
    std::vector<at::Tensor> V;
    for (size_t l : wl) {
      R.emplace_back(resolve_attr(q.module, layers[l].weight_path).toTensor(), layers[l]);
      V.push_back(R.back().v);
    }
    std::vector<at::Tensor> s0, U;
    for (jit::Value* sv : svals) {
      at::Tensor s = q.module.attr(scale_of[sv].attr).toTensor().detach().to(at::kFloat).clone();
      s0.push_back(s);
      U.push_back(s.clamp_min(1e-12).log().requires_grad_(true));
    }
    auto soft_weights = [&]() {
      std::vector<at::Tensor> ws;
      for (const auto& r : R) ws.push_back(r.soft(r.h()));
      return ws;
    };
    auto steps = [&]() {
      std::vector<at::Tensor> ss;
      for (const auto& u : U) ss.push_back(u.exp());
      return ss;
    };
    std::unique_ptr<torch::optim::Adam> adam_v, adam_s;
    if (!V.empty()) adam_v = std::make_unique<torch::optim::Adam>(V, torch::optim::AdamOptions(o.lr_rounding));
    if (!U.empty()) adam_s = std::make_unique<torch::optim::Adam>(U, torch::optim::AdamOptions(o.lr_scale));
    const int warmup = o.iterations / 5;
    // one bar per block, with its own rate and time left
    data::ProgressBar bar("brecq " + B.name + " (" + std::to_string(bi + 1) + "/" + std::to_string(blocks.size()) + ")",
                          o.iterations, o.progress);
    const auto learn_start = std::chrono::steady_clock::now();
    for (int it = 0; it < o.iterations; ++it) {
      // drawn on the CPU, so that a seed picks the same samples (and masks) on any device
      at::Tensor idx = at::randint(n, {std::min(o.batch_size, n)}, gen, at::TensorOptions().dtype(at::kLong))
                           .to(xq.device());
      at::Tensor x = xq.index_select(0, idx);
      if (o.drop_prob > 0 && !o.drop_inside) {
        at::Tensor keep_fp = (at::rand(x.sizes(), gen) < o.drop_prob).to(x.device());  // QDrop
        x = at::where(keep_fp, xfp.index_select(0, idx), x);
      }
      std::vector<at::Tensor> ws = soft_weights();
      // the QDrop masks of (seed, block, iteration): a resumed run draws the same ones
      const int64_t seed = static_cast<int64_t>((o.seed << 40) ^ (static_cast<uint64_t>(bi) << 24) ^
                                                static_cast<uint64_t>(it));
      at::Tensor loss = rec_loss(run(x, ws, steps(), o.drop_prob, seed), yfp.index_select(0, idx));
      if (it >= warmup && !V.empty()) {
        // beta decays linearly from 20 to 2 after the warm-up (BRECQ's LinearTempDecay)
        const double t = static_cast<double>(it - warmup) / std::max(1, o.iterations - warmup);
        const double beta = 20 + (2 - 20) * t;
        for (const auto& r : R) loss = loss + o.reg_weight * LearnedRounding::regularizer(r.h(), beta);
      }
      if (adam_v) adam_v->zero_grad();
      if (adam_s) adam_s->zero_grad();
      loss.backward();
      if (adam_v) adam_v->step();
      if (adam_s) {
        adam_s->step();
        const double lr = o.lr_scale * 0.5 * (1 + std::cos(M_PI * (it + 1) / o.iterations));
        for (auto& grp : adam_s->param_groups()) static_cast<torch::optim::AdamOptions&>(grp.options()).lr(lr);
      }
      bar.update(it + 1);
    }
    const double learn_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - learn_start).count();
    bar.finish();

    // harden, and compare with nearest rounding and the calibrated steps on x_q
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> whard, wnear, slearn;
    for (const auto& r : R) {
      whard.push_back(r.hard());
      wnear.push_back(r.nearest());
    }
    for (const auto& u : U) slearn.push_back(u.exp().detach());
    auto objective = [&](const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& ss) {
      double total = 0;
      for (int64_t b = 0; b < n; b += 128) {
        const int64_t k = std::min<int64_t>(128, n - b);
        total += rec_loss(run(xq.narrow(0, b, k), ws, ss), yfp.narrow(0, b, k)).item<double>() * k;
      }
      return total / n;
    };
    BrecqReport r;
    r.name = B.name;
    r.weights = static_cast<int>(wl.size());
    r.scales = static_cast<int>(svals.size());
    r.seconds_per_iteration = learn_seconds / std::max(1, o.iterations);
    r.mse_nearest = objective(wnear, s0);
    r.mse_brecq = objective(whard, slearn);
    // the learned rounding with the calibrated steps is a third candidate: the step
    // gradient (LSQ, straight-through) is biased, and at 2 bits it can move a step away
    // from where the block is best
    const double mse_steps = svals.empty() ? r.mse_brecq + 1 : objective(whard, s0);
    if (mse_steps < r.mse_brecq) {
      r.kept_steps = true;
      r.mse_brecq = mse_steps;
      slearn = s0;
    }
    if (r.mse_brecq <= r.mse_nearest) {
      for (size_t k = 0; k < wl.size(); ++k) {
        const at::Tensor& old = resolve_attr(q.module, layers[wl[k]].weight_path).toTensor();
        assign_attr(q.module, layers[wl[k]].weight_path, whard[k].reshape(old.sizes()).to(old.scalar_type()));
      }
      for (size_t k = 0; k < svals.size(); ++k) {
        at::Tensor t = q.module.attr(scale_of[svals[k]].attr).toTensor();
        t.copy_(slearn[k].reshape(t.sizes()));
      }
      block_changed();
    } else {
      r.kept_nearest = true;
      r.kept_steps = !svals.empty();
      r.mse_brecq = r.mse_nearest;
    }
    if (!ckpt.empty()) {
      c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
      d.insert("name", B.name);
      // on the CPU: a checkpoint resumes on any device
      for (size_t l : wl)
        d.insert("w:" + layers[l].weight_path, resolve_attr(q.module, layers[l].weight_path).toTensor().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
      for (jit::Value* sv : svals)
        d.insert("s:" + scale_of[sv].attr, q.module.attr(scale_of[sv].attr).toTensor().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
      d.insert("generator", gen.get_state());
      d.insert("mse_nearest", r.mse_nearest);
      d.insert("mse_brecq", r.mse_brecq);
      d.insert("kept_nearest", r.kept_nearest);
      d.insert("kept_steps", r.kept_steps);
      save_checkpoint(ckpt, d);
    }
    reports.push_back(r);
  }
  return reports;
}

}  // namespace anybit
