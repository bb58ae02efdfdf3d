// The fine-tuning loop; see finetune.h.
#include "anybit/train/finetune.h"

#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <sys/stat.h>

#include <torch/csrc/jit/passes/inliner.h>

#include "anybit/base/npy.h"
#include "anybit/data/progress.h"
#include "anybit/graph/graph.h"
#include "anybit/intsim/mac.h"
#include "anybit/ptq/fold_bn.h"
#include "anybit/quant/node.h"
#include "anybit/runtime/evaluate.h"
#include "anybit/source/data_source.h"

namespace anybit {

namespace {

std::string shape_string(at::IntArrayRef sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "x" : "") + std::to_string(sizes[i]);
  return s;
}

// The floor of learnable step sizes (LSQ), clips (PACT) and binary/ternary alphas.
constexpr double kMinQuantizerParameter = 1e-8;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Hinton et al. 2015, eq. 2 with the T^2 gradient scale: T^2 * KL(softmax(t/T) || softmax(s/T)),
// summed over classes and averaged over the batch (F.kl_div(..., reduction='batchmean')).
at::Tensor distillation_loss(const at::Tensor& student, const at::Tensor& teacher, double T) {
  at::Tensor log_s = at::log_softmax(student / T, 1);
  at::Tensor log_t = at::log_softmax(teacher / T, 1);
  return (log_t.exp() * (log_t - log_s)).sum(1).mean() * (T * T);
}

// The teacher's logits for the whole training set, computed once, in index order, by a
// frozen copy: the data has no augmentation, so they are the same every epoch, and a
// resumed run computes the same ones. Returns an undefined tensor (the caller then runs the
// teacher on every batch) when they would take more than `max_bytes`.
at::Tensor teacher_logits(torch::jit::Module& teacher, const DataSource& data, int64_t batch_size, int64_t max_bytes,
                          const c10::Device& device, bool progress, const ScoresPicker& pick) {
  torch::NoGradGuard no_grad;
  const int64_t n = data.size(), batches = (n + batch_size - 1) / batch_size;
  at::Tensor all;
  data::ProgressBar bar("teacher", batches, progress);
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t begin = b * batch_size, count = std::min(batch_size, n - begin);
    at::Tensor t = pick(teacher.forward({data.batch(begin, count).first.to(device)}));
    if (b == 0) {
      if (t.dim() < 1 || t.numel() / count * n * static_cast<int64_t>(t.element_size()) > max_bytes)
        return at::Tensor();
      auto sizes = t.sizes().vec();
      sizes[0] = n;
      all = at::empty(sizes, t.options());
    }
    all.narrow(0, begin, count).copy_(t);
    bar.update(b + 1);
  }
  bar.finish();
  return all;
}

// Sums the gradients of `params` over all processes: one allreduce of one flat buffer. A
// parameter the backward pass did not reach gets a zero gradient (on every process alike).
void all_reduce_gradients(Communicator& comm, std::vector<at::Tensor>& params) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  flat.reserve(params.size());
  for (auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    flat.push_back(p.grad().reshape(-1));
  }
  std::vector<at::Tensor> buffer{at::cat(flat)};
  comm.allreduce_sum(buffer);
  int64_t offset = 0;
  for (auto& p : params) {
    const int64_t k = p.numel();
    p.mutable_grad().copy_(buffer[0].narrow(0, offset, k).view_as(p));
    offset += k;
  }
}

torch::jit::Module frozen_teacher(const torch::jit::Module& teacher, const c10::Device& device) {
  torch::jit::Module t = teacher.clone();
  t.to(device);  // before freezing: frozen weights are constants of the graph
  t.eval();
  try {
    return torch::jit::freeze(t);
  } catch (const std::exception&) {
    return t;  // a model freezing cannot handle runs as it is
  }
}

// The forward graph with the engine's per-product noise after every conv and linear op
// (FinetuneOptions::noise_rel), run on the model's own parameters (its `self`).
std::unique_ptr<torch::jit::GraphFunction> noisy_forward(torch::jit::Module& model, double rel, int* layers) {
  namespace jit = torch::jit;
  std::shared_ptr<jit::Graph> g = model.get_method("forward").graph()->copy();
  jit::Inline(*g);
  std::vector<jit::Node*> ops;
  for (jit::Node* n : g->nodes()) {
    // the convolutions (not transposed) and linear layers: weight input 1, bias input 2
    const WeightSlots ws = weight_slots(n);
    if (ws.weight == 1 && ws.bias == 2 && ws.axis == 0) ops.push_back(n);
  }
  for (jit::Node* n : ops) {
    jit::WithInsertPoint guard(n->next());
    jit::Value* x = n->input(0);
    jit::Value* w = n->input(1);
    jit::Value* y = n->output();
    jit::Value* x2 = g->insert(c10::aten::mul, {x, x});
    jit::Value* w2 = g->insert(c10::aten::mul, {w, w});
    jit::Value* none = g->insertConstant(c10::IValue());
    // the same op on the squares, without bias: sum_i (x_i w_i)^2 per output element
    jit::Node* sq = g->insertNode(g->createClone(n, [&](jit::Value* v) {
      return v == x ? x2 : v == w ? w2 : v == n->input(2) ? none : v;
    }));
    jit::Value* sd = g->insert(c10::aten::mul, {g->insert(c10::aten::sqrt, {sq->output()}), rel});
    jit::Value* noise = g->insert(c10::aten::detach, {g->insert(c10::aten::mul, {sd, g->insert(c10::aten::randn_like, {y})})});
    jit::Value* y2 = g->insert(c10::aten::add, {y, noise});
    y->replaceAllUsesAfterNodeWith(y2->node(), y2);
  }
  *layers = static_cast<int>(ops.size());
  return std::make_unique<jit::GraphFunction>("anybit_noisy_forward", g, nullptr);
}

}  // namespace

double noise_rel_of(const std::string& spec) {
  std::unique_ptr<intsim::MacModel> m;
  try {
    m = intsim::parse_mac_model(spec);
  } catch (const Error& e) {
    throw Error(std::string("--noise: ") + e.what());
  }
  const auto* g = dynamic_cast<const intsim::GaussianMac*>(m.get());
  if (!g || g->sigma() != 0 || g->fs() != 0 || g->rel() == 0)
    throw Error("--noise '" + spec + "': fine-tuning injects gauss:rel=R (the noise relative to each product, "
                "docs/noise.md); sigma, fs and other models are in accumulator units that the float model does not have");
  return g->rel();
}

double scheduled_learning_rate(const std::string& schedule, double peak, int64_t step, int64_t total) {
  if (schedule == "constant" || total <= 0) return peak;
  if (schedule == "cosine") return 0.5 * peak * (1 + std::cos(M_PI * static_cast<double>(step) / total));
  if (schedule == "onecycle") {
    // OneCycleLR (torch/optim/lr_scheduler.py): phase ends at pct_start * total - 1 and
    // total - 1; _annealing_cos(start, end, pct) = end + (start - end) / 2 * (cos(pi pct) + 1)
    const double initial = peak / 25.0, min_lr = initial / 1e4;
    const double warm_end = 0.3 * static_cast<double>(total) - 1, last = static_cast<double>(total) - 1;
    auto anneal = [](double from, double to, double pct) { return to + (from - to) / 2 * (std::cos(M_PI * pct) + 1); };
    const double s = static_cast<double>(step);
    if (s <= warm_end) return anneal(initial, peak, s / warm_end);
    return anneal(peak, min_lr, (s - warm_end) / (last - warm_end));
  }
  throw Error("finetune: unknown schedule '" + schedule + "' (expected cosine, onecycle or constant)");
}

std::vector<EpochReport> finetune(torch::jit::Module& model, const DataSource& train, const FinetuneOptions& o) {
  if (o.epochs < 1) throw Error("finetune: epochs must be at least 1");
  check_one_input(model, "finetune");
  if (o.teacher) check_one_input(*o.teacher, "finetune, the teacher");
  if (o.freeze_bn_epoch < -1 || o.freeze_bn_epoch >= o.epochs)
    throw Error("finetune: freeze-bn epoch " + std::to_string(o.freeze_bn_epoch) + " is not in [0, epochs - 1 = " +
                std::to_string(o.epochs - 1) + "]");
  if (o.optimizer != "sgd" && o.optimizer != "adam")
    throw Error("finetune: unknown optimizer '" + o.optimizer + "' (expected sgd or adam)");
  scheduled_learning_rate(o.schedule, o.lr, 0, 1);  // throws on an unknown schedule name
  if (o.kd_weight < 0 || o.kd_weight > 1)
    throw Error("finetune: kd weight " + std::to_string(o.kd_weight) + " is not in [0, 1]");
  if (!(o.kd_temperature > 0))
    throw Error("finetune: kd temperature " + std::to_string(o.kd_temperature) + " must be positive");
  Communicator comm(o.distributed);
  const bool root = comm.rank() == 0;
  const bool progress = o.progress && root;
  if (comm.size() > o.batch_size)
    throw Error("finetune: " + std::to_string(comm.size()) + " processes need a batch size of at least as many, got " +
                std::to_string(o.batch_size));
  std::optional<torch::jit::Module> teacher;
  if (!o.device.is_cpu() && comm.size() > 1)
    throw Error("finetune: data-parallel processes (--nproc) train on the CPU; --device " + o.device.str() +
                " trains in one process");
  if (o.teacher) teacher = frozen_teacher(*o.teacher, o.device);
  const std::string ckpt_model = o.checkpoint_dir + "/checkpoint.pt";
  const std::string ckpt_opt = o.checkpoint_dir + "/optimizer.pt";
  const std::string ckpt_state = o.checkpoint_dir + "/epoch.txt";
  int start_epoch = 0;
  if (o.resume) {
    if (o.checkpoint_dir.empty() || !exists(ckpt_state))
      throw Error("finetune: --resume needs a checkpoint directory with a finished epoch (" + ckpt_state + ")");
    model = load_module(ckpt_model);
    std::ifstream f(ckpt_state);
    f >> start_epoch;
  }
  model.to(o.device);  // parameters, buffers and the optimizer's state live there from here on
  // weight decay for weights only: quantizer steps/clips and biases are not decayed
  std::vector<at::Tensor> positive;
  std::vector<at::Tensor> trained;  // the parameters whose gradients are summed over processes
  std::unique_ptr<torch::optim::Optimizer> opt;
  auto build_optimizer = [&]() {
    std::vector<at::Tensor> decay, no_decay;
    positive.clear();
    trained.clear();
    for (const auto& p : model.named_parameters(true)) {
      if (!p.value.requires_grad()) continue;
      trained.push_back(p.value);
      const bool quantizer = !qnode::what_of(p.name).empty();
      if (qnode::is_range_parameter(p.name)) positive.push_back(p.value);
      const bool bias = ends_with(p.name, "bias");
      (quantizer || bias || p.value.dim() <= 1 ? no_decay : decay).push_back(p.value);
    }
    if (o.optimizer == "sgd") {
      std::vector<torch::optim::OptimizerParamGroup> groups;
      groups.emplace_back(decay, std::make_unique<torch::optim::SGDOptions>(
                                     torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.momentum > 0)
                                         .weight_decay(o.weight_decay)));
      groups.emplace_back(no_decay, std::make_unique<torch::optim::SGDOptions>(
                                        torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.momentum > 0)));
      opt = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(o.lr));
    } else {
      std::vector<torch::optim::OptimizerParamGroup> groups;
      groups.emplace_back(decay, std::make_unique<torch::optim::AdamOptions>(
                                     torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay)));
      groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(o.lr)));
      opt = std::make_unique<torch::optim::Adam>(groups, torch::optim::AdamOptions(o.lr));
    }
  };
  build_optimizer();
  if (o.resume) torch::load(*opt, ckpt_opt, o.device);
  if (comm.size() > 1) {  // every process starts from rank 0's weights and buffers
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> state;
    for (const auto& p : model.parameters(true)) state.push_back(p);
    for (const auto& b : model.buffers(true)) state.push_back(b);
    comm.broadcast_from_root(state);
  }

  const int64_t n = train.size();
  at::Tensor teacher_cache;
  // the class scores of each; a teacher returning a tensor needs no --scores
  const ScoresPicker pick(model, o.scores);
  ScoresPicker teacher_pick;
  if (teacher) {
    teacher_pick = ScoresPicker(*teacher, ScoresPicker::returns_tensor(*teacher) ? "" : o.scores);
    teacher_cache = teacher_logits(*teacher, train, o.batch_size, o.teacher_cache_bytes, o.device, progress, teacher_pick);
  }
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  // the schedule always spans all epochs; max_steps only stops early, like a kill would
  const int64_t schedule_steps = steps_per_epoch * o.epochs;
  const int64_t total_steps = o.max_steps > 0 ? std::min<int64_t>(o.max_steps, schedule_steps) : schedule_steps;
  int64_t step = static_cast<int64_t>(start_epoch) * steps_per_epoch;
  std::vector<EpochReport> reports;
  for (int epoch = start_epoch; epoch < o.epochs && step < total_steps; ++epoch) {
    int bn_folded = 0;
    if (epoch == o.freeze_bn_epoch) {
      ModelGraph g = analyze_module(model);
      bn_folded = fold_batch_norm(g);  // in eval mode: the running statistics, frozen
      if (bn_folded) {
        model = g.module;
        build_optimizer();
      }
    }
    model.train();
    std::unique_ptr<torch::jit::GraphFunction> noisy;
    if (o.noise_rel > 0) {
      int layers = 0;
      noisy = noisy_forward(model, o.noise_rel, &layers);
      if (layers == 0) throw Error("finetune --noise: the model has no conv or linear op to add noise to");
      at::manual_seed(o.seed + static_cast<uint64_t>(epoch));  // the noise draws of this epoch
    }
    const auto t0 = std::chrono::steady_clock::now();
    at::Generator gen = at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(epoch));
    at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    data::ProgressBar bar("epoch " + std::to_string(epoch + 1), steps_per_epoch, progress);
    EpochReport r;
    r.epoch = epoch + 1;
    r.bn_folded = bn_folded;
    double loss_sum = 0, kd_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b, ++step) {
      const int64_t begin = b * o.batch_size, count = std::min(o.batch_size, n - begin);
      // this process's part of the global batch; a process left without a sample (a last
      // batch smaller than the process count) runs one sample with weight 0 so that it
      // still produces the same gradient tensors for the allreduce
      const int64_t lo = count * comm.rank() / comm.size(), hi = count * (comm.rank() + 1) / comm.size();
      const int64_t mine = hi - lo;
      const double share = static_cast<double>(mine) / static_cast<double>(count);
      at::Tensor idx = perm.narrow(0, begin + (mine ? lo : 0), std::max<int64_t>(mine, 1));
      auto [x_host, y_host] = train.gather(idx);
      const at::Tensor x = x_host.to(o.device), y = y_host.to(o.device);
      const double lr = scheduled_learning_rate(o.schedule, o.lr, step, schedule_steps);
      for (auto& g : opt->param_groups()) g.options().set_lr(lr);
      at::Tensor out;
      if (noisy) {
        torch::jit::Stack st{model._ivalue(), x};
        noisy->run(st);
        out = pick(st.back());
      } else {
        out = pick(model.forward({x}));
      }
      at::Tensor loss = torch::nn::functional::cross_entropy(
          out, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
      if (teacher) {
        at::Tensor t;
        if (teacher_cache.defined()) {
          t = teacher_cache.index_select(0, idx.to(teacher_cache.device()));
        } else {
          torch::NoGradGuard no_grad;
          t = teacher_pick(teacher->forward({x}));
        }
        if (t.sizes() != out.sizes())
          throw Error("finetune: the teacher's output " + shape_string(t.sizes()) + " differs from the model's " +
                      shape_string(out.sizes()));
        at::Tensor kd = distillation_loss(out, t, o.kd_temperature);
        kd_sum += kd.item<double>() * mine;
        loss = (1 - o.kd_weight) * loss + o.kd_weight * kd;
      }
      opt->zero_grad();
      if (comm.size() > 1) {
        (loss * share).backward();
        all_reduce_gradients(comm, trained);
      } else {
        loss.backward();
      }
      opt->step();
      {
        // a step size, clip or alpha that an update pushes through zero would flip or break
        // its quantizer for good (seen with LSQ at lr 0.1): keep them positive
        torch::NoGradGuard no_grad;
        for (auto& p : positive) p.clamp_min_(kMinQuantizerParameter);
      }
      if (mine) {
        loss_sum += loss.item<double>() * mine;
        correct += (out.argmax(1) == y).sum().item<int64_t>();
        seen += mine;
      }
      r.steps++;
      bar.update(b + 1);
    }
    bar.finish();
    if (comm.size() > 1) {  // the epoch's statistics over all processes
      std::vector<at::Tensor> sums{at::tensor({loss_sum, kd_sum, static_cast<double>(correct), static_cast<double>(seen)},
                                              at::TensorOptions().dtype(at::kDouble))};
      comm.allreduce_sum(sums);
      loss_sum = sums[0][0].item<double>();
      kd_sum = sums[0][1].item<double>();
      correct = static_cast<int64_t>(sums[0][2].item<double>());
      seen = static_cast<int64_t>(sums[0][3].item<double>());
    }
    r.train_loss = seen ? loss_sum / seen : 0;
    r.train_kd_loss = seen ? kd_sum / seen : 0;
    r.train_top1 = seen ? 100.0 * correct / seen : 0;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    reports.push_back(r);
    if (root && !o.checkpoint_dir.empty() && r.steps == steps_per_epoch) {  // only whole epochs
      ::mkdir(o.checkpoint_dir.c_str(), 0755);
      save_module(model, ckpt_model);  // loads onto the CPU (load_module), then moves to the device
      torch::save(*opt, ckpt_opt + ".tmp");
      std::rename((ckpt_opt + ".tmp").c_str(), ckpt_opt.c_str());
      write_text_atomic(ckpt_state, std::to_string(epoch + 1) + "\n");
    }
    comm.barrier();  // no process starts the next epoch (or returns) before the checkpoint is written
  }
  model.eval();
  model.to(at::kCPU);  // the caller saves and evaluates it
  return reports;
}

void to_json(nlohmann::json& j, const EpochReport& r) {
  j = {{"epoch", r.epoch},         {"train_loss", r.train_loss}, {"train_top1", r.train_top1},
       {"train_kd_loss", r.train_kd_loss}, {"bn_folded", r.bn_folded}, {"steps", r.steps},
       {"seconds", r.seconds}};
}

}  // namespace anybit
