// Quantization-aware fine-tuning of an anybit-quantized TorchScript model: the
// quantizers stay in the graph (straight-through gradients, LSQ steps and PACT clips are
// parameters and learn), the float weights behind them are updated.
//
// SGD (momentum, Nesterov) or Adam, cosine learning-rate schedule, weight decay that
// skips quantizer parameters (anybit__*) and biases, optional label smoothing. Each epoch
// shuffles with seed + epoch, so a run resumed from its checkpoint (written after every
// epoch: model, optimizer state, epoch) continues exactly as an uninterrupted run would.
#pragma once

#include <string>
#include <vector>

#include <torch/script.h>

namespace anybit {

class DataSource;

struct FinetuneOptions {
  int epochs = 1;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";  // sgd | adam
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  double label_smoothing = 0.0;
  int64_t max_steps = -1;          // stop after this many steps in total; the learning-rate
                                   // schedule is still the one of `epochs`
  uint64_t seed = 0;
  std::string checkpoint_dir;      // "" = no checkpoints
  bool resume = false;
  bool progress = true;
};

struct EpochReport {
  int epoch = 0;
  double train_loss = 0, train_top1 = 0, seconds = 0;
  int64_t steps = 0;
};

std::vector<EpochReport> finetune(torch::jit::Module& model, const DataSource& train,
                                  const FinetuneOptions& options);

}  // namespace anybit
