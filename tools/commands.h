// The anybit command line's subcommands (commands.cc), called by main (anybit.cc), which
// only parses flags into these structs.
#pragma once

#include <string>
#include <vector>

#include "anybit/train/finetune.h"
#include "anybit/api/quantize.h"
#include "anybit/study/search.h"
#include "anybit/study/sweep.h"

namespace anybit_cli {

struct Common {
  std::string model, config, data, out, calib_data;
  std::vector<std::string> rules;
  int64_t calib_batches = 8, batch_size = 128, eval_batch_size = 100;
  std::string eval_data;
  bool json = false, dry_run = false, portable = false, no_progress = false, no_freeze = false, no_fuse = false;
  bool fold_bn = false, bias_correction = false, int32_bias = false, cle = false, cle_relu6 = false;
  bool strict = false;
  int adaround = 0;
  int brecq = 0;
  bool gptq = false, gptq_quantized_target = false;
  std::string brecq_checkpoint;
  bool brecq_resume = false;
  int64_t calib_samples = 0;
  int threads = 0;
  std::string device = "cpu";  // --device (quant/device.h parse_device)
  std::string scores;          // --scores (runtime/evaluate.h ScoresPicker)
};

struct IntsimFlags {
  int acc_bits = 32;
  std::string overflow = "wrap", mac = "exact", reference, calib_data, out;
  bool reference_kernels = false, resume = false, per_dot = false;
  int seeds = 1;
  int64_t calib_samples = 256;
};

// a progress bar unless --no-progress or stderr is not a terminal
bool progress_on(const Common& c);
anybit::EvalOptions eval_options(const Common& c);
int cmd_inspect(const std::string& model, bool as_json);
int cmd_quantize(const Common& c);
int cmd_eval(const Common& c, const std::string& reference);
int cmd_export(const Common& c, const std::string& input_shape);
int cmd_intsim(const Common& c, const IntsimFlags& f);
int run_sweep_cli(anybit::SweepOptions o);
int cmd_search(anybit::SearchOptions o);
int cmd_demo(const Common& c);
int cmd_finetune(const Common& c, anybit::FinetuneOptions ft, const std::string& teacher, int nproc,
                 const std::vector<std::string>& args);

}  // namespace anybit_cli
