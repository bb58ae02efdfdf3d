// Quantization-aware fine-tuning of an anybit-quantized TorchScript model: the
// quantizers stay in the graph (straight-through gradients, LSQ steps and PACT clips are
// parameters and learn), the float weights behind them are updated.
//
// SGD (momentum, Nesterov) or Adam, a cosine, one-cycle or constant learning-rate
// schedule, weight decay that skips quantizer parameters (anybit__*) and biases, optional
// label smoothing, optional knowledge distillation from a teacher (the float model).
// Learnable step sizes, clips and alphas are kept >= 1e-8 after every update. Each
// epoch shuffles with seed + epoch, so a run resumed from its checkpoint (written after
// every epoch: model, optimizer state, epoch) continues exactly as an uninterrupted run would.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/script.h>

#include "anybit/train/distributed.h"

namespace anybit {

class DataSource;

struct FinetuneOptions {
  int epochs = 1;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";  // sgd | adam
  double lr = 0.01;                // peak learning rate of the schedule
  std::string schedule = "cosine";  // cosine | onecycle | constant (see scheduled_learning_rate)
  double momentum = 0.9;
  double weight_decay = 5e-4;
  double label_smoothing = 0.0;
  int64_t max_steps = -1;          // stop after this many steps in total; the learning-rate
                                   // schedule is still the one of `epochs`
  uint64_t seed = 0;
  // Knowledge distillation (Hinton et al. 2015): with a teacher the loss is
  //   (1 - kd_weight) * CE(student, labels) + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T)),
  // the KL averaged over the batch, T = kd_temperature. A frozen copy of the teacher runs in
  // eval mode without gradients; it is typically the float model. Its logits for the whole
  // training set are computed once before the first epoch (the data has no augmentation)
  // when they fit in teacher_cache_bytes, else on every batch.
  std::optional<torch::jit::Module> teacher;
  double kd_weight = 1.0;
  double kd_temperature = 1.0;
  int64_t teacher_cache_bytes = int64_t{1} << 30;
  // BatchNorm of a model quantized without --fold-bn trains in training mode (batch
  // statistics, running statistics updated) for the first freeze_bn_epoch epochs; then its
  // statistics freeze and it is folded into the conv before it, together with the conv's
  // per-channel weight quantizer (ptq/fold_bn.h), so training goes on, and the result
  // deploys, without BatchNorm. The optimizer restarts its state (momentum) at the fold.
  // -1: never (BatchNorm stays as the model has it).
  int freeze_bn_epoch = -1;
  // Noise-aware training (docs/noise.md): with noise_rel > 0, every conv and linear output
  // gets, during training only, the noise of the integer engine's gauss:rel=R MAC model in
  // real units: y + R * sqrt(conv(x^2, w^2)) * N(0, 1) element-wise (x, w the fake-quantized
  // input and weight; the square sums by the layer's own op without bias; the noise term
  // carries no gradient). Draws come from torch's default generator, seeded with `seed`;
  // the saved model has no noise in it.
  double noise_rel = 0;
  // where training runs (quant/device.h parse_device): the model, the teacher and each batch
  // move there; the model comes back to the CPU at the end (one process: not with --nproc)
  c10::Device device = c10::kCPU;
  // which element of a tuple, list or dict output is the class scores (runtime/evaluate.h
  // ScoresPicker), of the model and of the teacher
  std::string scores;
  std::string checkpoint_dir;      // "" = no checkpoints
  bool resume = false;
  bool progress = true;
  // Data-parallel training (distributed.h): run finetune() in world_size processes with the
  // same options and model and their own rank. Each global batch of batch_size samples is
  // cut into world_size contiguous parts; each process back-propagates its part, weighted by
  // its share of the batch, the gradients are summed over the processes (Gloo allreduce)
  // and every process takes the same step, so the weights equal those of one process with
  // the same batch_size up to float summation order (BatchNorm in training mode is the
  // exception: its batch statistics are per process, as in DistributedDataParallel). Rank 0
  // alone writes checkpoints and shows progress; the reports are over the global batch.
  DistributedOptions distributed;
};

struct EpochReport {
  int epoch = 0;
  double train_loss = 0, train_top1 = 0, seconds = 0;
  double train_kd_loss = 0;  // mean T^2 * KL(teacher || student) term; 0 without a teacher
  int64_t steps = 0;
  int bn_folded = 0;  // BatchNorm layers folded at the start of this epoch (freeze_bn_epoch)
};
// {epoch, train_loss, train_top1, train_kd_loss, bn_folded, steps, seconds} (graph/point.h)
void to_json(nlohmann::json& j, const EpochReport& r);

// The learning rate of step `step` (0-based) of a run of `total_steps` steps:
//   cosine:   peak/2 * (1 + cos(pi * step / total))
//   onecycle: torch.optim.lr_scheduler.OneCycleLR with its defaults (pct_start 0.3,
//             anneal_strategy 'cos', div_factor 25, final_div_factor 1e4, two phases):
//             cosine from peak/25 up to peak over the first 0.3 * total - 1 steps, then
//             cosine down to peak/25/1e4 at step total - 1 (momentum is not cycled)
//   constant: peak
double scheduled_learning_rate(const std::string& schedule, double peak, int64_t step, int64_t total_steps);

std::vector<EpochReport> finetune(torch::jit::Module& model, const DataSource& train,
                                  const FinetuneOptions& options);

// The R of a --noise spec: "gauss:rel=R" (a seed is allowed and ignored: training draws
// from torch's generator); any other MAC model is an Error naming what is accepted.
double noise_rel_of(const std::string& spec);

}  // namespace anybit
