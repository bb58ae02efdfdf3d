// The anybit command line: parse flags into commands.h's structs and run the subcommand.
#include <CLI/CLI.hpp>
#include <ATen/Parallel.h>

#include <string>
#include <vector>

#include "commands.h"

using namespace anybit_cli;

int main(int argc, char** argv) {
  CLI::App app{"anybit: quantize any TorchScript model to any bit width, from outside the model"};
  app.require_subcommand(1);
  Common c;
  std::string reference;
  app.add_option("--threads", c.threads, "threads for LibTorch and the integer engine (default: LibTorch's; intsim: one per core)")->check(CLI::NonNegativeNumber);

  auto* inspect = app.add_subcommand("inspect", "list the quantization points of a model in forward order");
  inspect->add_option("model", c.model, "TorchScript model file (.pt)")->required();
  inspect->add_flag("--json", c.json, "print JSON");

  auto* quant = app.add_subcommand("quantize", "quantize a model by config rules and calibrate it");
  quant->add_option("model", c.model, "TorchScript model file (.pt)")->required();
  quant->add_option("-c,--config", c.config, "config file (YAML or JSON)");
  quant->add_option("-r,--rule", c.rules, "a rule as key=value pairs, e.g. kind=conv,role=weight,spec=int4 (repeatable, after --config's rules)");
  quant->add_option("-d,--data", c.data, "calibration data spec, e.g. fmnist:/usr/share/datasets/fashion-mnist:train");
  quant->add_option("--calib-batches", c.calib_batches, "calibration batches")->check(CLI::PositiveNumber);
  quant->add_option("-b,--batch-size", c.batch_size, "batch size")->check(CLI::PositiveNumber);
  quant->add_option("-o,--output", c.out, "output TorchScript file");
  quant->add_flag("--dry-run", c.dry_run, "print which spec each point gets and stop");
  quant->add_flag("--fold-bn", c.fold_bn, "fold BatchNorm into the preceding convs before quantizing");
  quant->add_flag("--cle", c.cle, "cross-layer equalization of conv/linear pairs joined by ReLU or nothing (with --fold-bn)");
  quant->add_flag("--cle-relu6", c.cle_relu6,
                  "also equalize across ReLU6, turning it into ReLU (changes the float model; implies --cle)");
  quant->add_option("--adaround", c.adaround, "learn the rounding of int weights with AdaRound for N iterations per layer")
      ->check(CLI::NonNegativeNumber);
  quant->add_flag("--gptq", c.gptq, "GPTQ: quantize the int weights column by column from each layer's input Hessian (Frantar et al. 2023)");
  quant->add_option("--calib-samples", c.calib_samples,
                    "calibration samples (instead of --calib-batches; AdaRound, BRECQ and GPTQ keep as many, whatever -b is)")
      ->check(CLI::PositiveNumber);
  quant->add_option("--checkpoint-dir", c.brecq_checkpoint, "with --brecq: a checkpoint after every block in this directory");
  quant->add_flag("--resume", c.brecq_resume, "with --brecq: continue a killed run from its --checkpoint-dir at the next block");
  quant->add_flag("--gptq-quantized-target", c.gptq_quantized_target,
                  "GPTQ with the paper's objective (the layer's own output on the quantized input) instead of the float model's output");
  quant->add_option("--brecq", c.brecq, "block reconstruction (BRECQ + QDrop): learn the rounding of int weights and the activation steps, N iterations per block")
      ->check(CLI::PositiveNumber);
  quant->add_flag("--bias-correction", c.bias_correction, "correct the per-channel output mean shift of quantized weights");
  quant->add_flag("--strict", c.strict,
                  "fail (and write nothing) when a quantizer's spec clips more than 1% of its calibration data, "
                  "or an op that computes linear algebra has no points");
  quant->add_flag("--int32-bias", c.int32_bias, "quantize conv/linear biases as integer hardware adds them: int32 at s_in * s_w");
  quant->add_option("--eval", c.eval_data, "evaluate the quantized model on this data spec too");
  quant->add_option("--eval-batch-size", c.eval_batch_size, "evaluation batch size")->check(CLI::PositiveNumber);
  quant->add_flag("--no-freeze", c.no_freeze, "evaluate without freezing (slower; bit-identical to the saved graph)");
  quant->add_flag("--no-fuse", c.no_fuse, "evaluate the frozen graph in the TorchScript interpreter, not as fused oneDNN layers");
  quant->add_option("--device", c.device, "where to run: cpu (default), cuda or cuda:N (loads the CUDA kernels; needs a GPU)");
  quant->add_option("--scores", c.scores, "which element of a tuple, list or dict output is the class scores: an index or a field/key name (default: a named tuple's or dict's logits, or a tuple's only tensor)");
  quant->add_flag("--portable", c.portable, "use only stock aten::fake_quantize_* ops (loads without anybit)");
  quant->add_flag("--json", c.json, "print JSON");
  quant->add_flag("--no-progress", c.no_progress, "no progress bar");

  auto* eval = app.add_subcommand("eval", "evaluate a (quantized) model on labelled data");
  eval->add_option("model", c.model, "TorchScript model file (.pt)")->required();
  eval->add_option("-d,--data", c.data, "data spec, e.g. fmnist:/usr/share/datasets/fashion-mnist:test")->required();
  eval->add_option("--reference", reference, "float model to measure prediction agreement against");
  eval->add_option("-b,--batch-size", c.eval_batch_size, "batch size")->check(CLI::PositiveNumber);
  eval->add_flag("--no-freeze", c.no_freeze, "evaluate without freezing (slower; bit-identical to the saved graph)");
  eval->add_flag("--no-fuse", c.no_fuse, "evaluate the frozen graph in the TorchScript interpreter, not as fused oneDNN layers");
  eval->add_option("--device", c.device, "where to run: cpu (default), cuda or cuda:N (loads the CUDA kernels; needs a GPU)");
  eval->add_option("--scores", c.scores, "which element of a tuple, list or dict output is the class scores: an index or a field/key name (default: a named tuple's or dict's logits, or a tuple's only tensor)");
  eval->add_flag("--json", c.json, "print JSON");
  eval->add_flag("--no-progress", c.no_progress, "no progress bar");

  anybit::FinetuneOptions ft;
  std::string teacher;
  int nproc = 1;
  auto* fine = app.add_subcommand("finetune", "quantization-aware fine-tuning of a model anybit quantized");
  fine->add_option("model", c.model, "quantized TorchScript model (from anybit quantize)")->required();
  fine->add_option("-d,--data", c.data, "training data spec, e.g. fmnist::train")->required();
  fine->add_option("--eval", c.eval_data, "evaluate on this data spec after training");
  fine->add_option("--epochs", ft.epochs, "epochs")->check(CLI::PositiveNumber);
  fine->add_option("--lr", ft.lr, "peak learning rate of the schedule");
  fine->add_option("--schedule", ft.schedule, "learning-rate schedule: cosine, onecycle (as torch OneCycleLR) or constant");
  fine->add_option("--optimizer", ft.optimizer, "sgd or adam");
  fine->add_option("--weight-decay", ft.weight_decay, "weight decay (not on quantizer parameters or biases)");
  fine->add_option("--label-smoothing", ft.label_smoothing, "label smoothing");
  fine->add_option("-b,--batch-size", ft.batch_size, "batch size")->check(CLI::PositiveNumber);
  fine->add_option("--max-steps", ft.max_steps, "stop after this many steps");
  fine->add_option("--seed", ft.seed, "shuffling seed");
  std::string fine_noise;
  fine->add_option("--noise", fine_noise,
                   "noise-aware training: gauss:rel=R, the integer engine's per-product noise on every conv and "
                   "linear output while training (docs/noise.md)");
  auto* teacher_opt =
      fine->add_option("--teacher", teacher, "distil from this model (typically the float one) on the same batches");
  fine->add_option("--kd-weight", ft.kd_weight, "weight of the distillation loss; 1 - it weighs the label loss")
      ->check(CLI::Range(0.0, 1.0))->needs(teacher_opt);
  fine->add_option("--kd-temperature", ft.kd_temperature, "softmax temperature of the distillation loss")
      ->check(CLI::PositiveNumber)->needs(teacher_opt);
  fine->add_option("--freeze-bn", ft.freeze_bn_epoch, "after N epochs with BatchNorm in training mode, freeze its "
                   "statistics and fold it into the convs and their per-channel weight quantizers")
      ->check(CLI::NonNegativeNumber);
  fine->add_option("--checkpoint-dir", ft.checkpoint_dir, "write a checkpoint after every epoch here");
  fine->add_flag("--resume", ft.resume, "continue from the checkpoint in --checkpoint-dir");
  fine->add_option("-o,--output", c.out, "output TorchScript file")->required();
  fine->add_option("--device", c.device, "where to run: cpu (default), cuda or cuda:N (loads the CUDA kernels; needs a GPU)");
  fine->add_option("--scores", c.scores, "which element of a tuple, list or dict output is the class scores: an index or a field/key name (default: a named tuple's or dict's logits, or a tuple's only tensor)");
  fine->add_flag("--no-progress", c.no_progress, "no progress bar");
  fine->add_option("--nproc", nproc, "data-parallel training in N processes on this host (Gloo); -b stays the "
                   "global batch, --threads is per process")->check(CLI::PositiveNumber);

  anybit::SweepOptions sw;
  std::vector<std::string> sweep_models;
  std::string wlist = "8,6,4,3,2", alist = "8,6,4,3,2", pairs, methods = "minmax,mse";
  bool no_fold = false;
  auto* sweep = app.add_subcommand("sweep", "post-training quantization at many bit widths and methods: table, CSV, JSON, SVG");
  sweep->add_option("models", sweep_models, "TorchScript model files")->required();
  sweep->add_option("-d,--data", sw.calib_data, "calibration data spec");
  sweep->add_option("--eval", sw.eval_data, "evaluation data spec");
  sweep->add_option("--weights", wlist, "weight bit widths, e.g. 8,6,4");
  sweep->add_option("--acts", alist, "activation bit widths");
  sweep->add_option("--pairs", pairs, "explicit pairs instead of the grid, e.g. W4A4,W2A4");
  std::string formats;
  sweep->add_option("--formats", formats,
                    "number formats for weights and activations instead of bit pairs, e.g. "
                    "int4,fp4:e2m1,mxfp4,nvfp4,nf4,lut4 (docs/formats.md)");
  sweep->add_option("--method", methods, "methods: minmax, mse, percentile, entropy, adaround, brecq, gptq (comma-separated)");
  sweep->add_option("--adaround-iters", sw.adaround_iterations, "AdaRound iterations per layer")->check(CLI::PositiveNumber);
  sweep->add_option("--brecq-iters", sw.brecq_iterations, "BRECQ iterations per block")->check(CLI::PositiveNumber);
  sweep->add_option("--calib-batches", sw.calib_batches, "calibration batches")->check(CLI::PositiveNumber);
  sweep->add_flag("--no-fold-bn", no_fold, "keep BatchNorm (default: fold it into the convs first)");
  sweep->add_flag("--first-last-8bit", sw.first_last_8bit, "keep the first conv (its weights and the data it reads), the last linear's weights and the input at 8 bits");
  sweep->add_option("-o,--output", sw.out_dir, "output directory")->required();
  sweep->add_flag("--resume", sw.resume, "continue a sweep that was interrupted");
  sweep->add_option("--device", sw.device, "where to run: cpu (default), cuda or cuda:N (loads the CUDA kernels; needs a GPU)");
  sweep->add_option("--scores", sw.scores, "which element of a tuple, list or dict output is the class scores: an index or a field/key name (default: a named tuple's or dict's logits, or a tuple's only tensor)");
  sweep->add_flag("--no-progress", c.no_progress, "no progress bar");

  auto* demo = app.add_subcommand("demo", "quantize the shipped Fashion-MNIST model at 8..2 bits and print the accuracy table");
  demo->add_option("--model", c.model, "model (default: the shipped one)");
  demo->add_option("--calib-batches", c.calib_batches, "calibration batches")->check(CLI::PositiveNumber);
  demo->add_option("-d,--data", c.data,
                   "calibration data spec (default fmnist::train; e.g. fmnist::train:mean=0.286:std=0.353)");
  demo->add_option("--eval", c.eval_data, "evaluation data spec (default fmnist::test)");
  demo->add_flag("--no-progress", c.no_progress, "no progress bar");
  demo->add_option("-o,--output", c.out, "output directory (default anybit-demo)");

  anybit::SearchOptions so;
  std::string search_w = "2,3,4,6,8", search_a;
  auto* search = app.add_subcommand("search", "mixed precision: the bit width per layer that loses least within a budget");
  search->add_option("model", so.model, "TorchScript model file (.pt)")->required();
  search->add_option("-d,--data", so.calib_data, "calibration data spec (sensitivities and calibration)");
  search->add_option("--eval", so.eval_data, "evaluation data spec");
  search->add_option("--budget", so.budget, "avg-wbits=B, size=N[B|KiB|MiB] or bops=R (share of W8A8)")->required();
  search->add_option("--weights", search_w, "candidate weight widths (default 2,3,4,6,8)");
  search->add_option("--acts", search_a, "candidate activation widths, e.g. 4,6,8 (default: all at --acts-fixed)");
  search->add_option("--acts-fixed", so.acts_fixed, "activation width when --acts is not given (default 8)");
  search->add_option("--metric", so.metric, "sensitivity: kl (default), sqnr or hessian");
  search->add_option("--method", so.method, "calibration of the evaluated configs: minmax, mse (default), percentile, entropy, adaround, brecq, gptq");
  search->add_option("--adaround-iters", so.adaround_iterations, "AdaRound iterations per layer")->check(CLI::PositiveNumber);
  search->add_option("--brecq-iters", so.brecq_iterations, "BRECQ iterations per block")->check(CLI::PositiveNumber);
  search->add_option("--calib-batches", so.calib_batches, "calibration batches")->check(CLI::PositiveNumber);
  search->add_option("--sensitivity-samples", so.sensitivity_samples, "calibration samples the sensitivities are measured on (default 512)")->check(CLI::PositiveNumber);
  search->add_option("--hessian-iters", so.hessian_iterations, "Hutchinson probes for --metric hessian (default 16)")->check(CLI::PositiveNumber);
  std::string search_u;
  search->add_option("--uniform", search_u, "the uniform weight widths to evaluate beside the search at their budgets (default: every --weights candidate)");
  bool search_no_fold = false;
  search->add_flag("--no-fold-bn", search_no_fold, "keep BatchNorm (default: fold it into the convs first)");
  search->add_option("-o,--output", so.out_dir, "output directory")->required();
  search->add_flag("--resume", so.resume, "continue a search that was interrupted");
  search->add_option("--scores", so.scores, "which element of a tuple, list or dict output is the class scores: an index or a field/key name (default: a named tuple's or dict's logits, or a tuple's only tensor)");
  search->add_flag("--no-progress", c.no_progress, "no progress bar");

  std::string input_shape;
  auto* exp = app.add_subcommand("export", "write the integer model (manifest.json + .npy) of a quantized model");
  exp->add_option("model", c.model, "quantized TorchScript model (from anybit quantize or finetune)")->required();
  exp->add_option("-o,--output", c.out, "output directory")->required();
  exp->add_option("--input-shape", input_shape, "input shape without the batch, e.g. 1,28,28 (default: recorded at calibration)");
  exp->add_flag("--json", c.json, "print JSON");

  IntsimFlags isf;
  auto* isim = app.add_subcommand("intsim", "run an integer export with the integer-only engine on labelled data");
  isim->add_option("model", c.model, "integer model directory (from anybit export)")->required();
  isim->add_option("-d,--data", c.data, "data spec, e.g. fmnist:/usr/share/datasets/fashion-mnist:test")->required();
  isim->add_option("--acc-bits", isf.acc_bits, "accumulator width in bits (8..32)");
  isim->add_option("--overflow", isf.overflow, "accumulator overflow: wrap or saturate");
  isim->add_option("--mac", isf.mac,
                   "multiply-accumulate model: exact, gauss:sigma=S,rel=R,fs=F[,seed=K], adc:bits=B,range=F|fs=F|range=auto[,pct=P], "
                   "bitflip:rate=P[,seed=K], wnoise:rel=R[,seed=K]; several values of one parameter sweep it "
                   "(gauss:rel=0.001,0.01,0.1); docs/noise.md");
  isim->add_option("--seeds", isf.seeds, "runs per noise level, seeds K..K+N-1 (mean, std, min, max)")->check(CLI::PositiveNumber);
  isim->add_option("-o,--output", isf.out, "noise sweep directory: results.jsonl, noise.csv, noise.json, noise.svg");
  isim->add_flag("--resume", isf.resume, "continue a noise sweep in -o DIR");
  isim->add_option("--calib-data", isf.calib_data, "data for MAC models that calibrate (adc:range=auto)");
  isim->add_option("--calib-samples", isf.calib_samples, "calibration images (default 256)")->check(CLI::PositiveNumber);
  isim->add_option("--reference", isf.reference, "the quantized TorchScript model to compare outputs with");
  isim->add_flag("--reference-kernels", isf.reference_kernels, "use the plain int64 reference kernels (slow)");
  isim->add_flag("--per-dot-product", isf.per_dot,
                 "every dot product through the MAC model one at a time, as for a model that needs every product "
                 "(same numbers, slow; for checks and timing)");
  isim->add_option("-b,--batch-size", c.eval_batch_size, "batch size")->check(CLI::PositiveNumber);
  isim->add_flag("--json", c.json, "print JSON");
  isim->add_flag("--no-progress", c.no_progress, "no progress bar");

  CLI11_PARSE(app, argc, argv);
  try {
    if (c.threads > 0) at::set_num_threads(c.threads);
    if (*inspect) return cmd_inspect(c.model, c.json);
    if (*quant) return cmd_quantize(c);
    if (*eval) return cmd_eval(c, reference);
    if (*demo) return cmd_demo(c);
    if (*search) {
      so.weights = anybit::parse_bits_list(search_w, "--weights");
      if (!search_a.empty()) so.acts = anybit::parse_bits_list(search_a, "--acts");
      if (!search_u.empty()) so.uniform = anybit::parse_bits_list(search_u, "--uniform");
      so.fold_bn = !search_no_fold;
      so.progress = progress_on(c);
      return cmd_search(so);
    }
    if (*exp) return cmd_export(c, input_shape);
    if (*isim) return cmd_intsim(c, isf);
    if (*fine) {
      if (!fine_noise.empty()) ft.noise_rel = anybit::noise_rel_of(fine_noise);
      ft.scores = c.scores;
      return cmd_finetune(c, ft, teacher, nproc, std::vector<std::string>(argv, argv + argc));
    }
    if (*sweep) {
      sw.models = sweep_models;
      sw.fold_bn = !no_fold;
      sw.progress = progress_on(c);
      sw.methods.clear();
      std::stringstream ms(methods);
      for (std::string m; std::getline(ms, m, ',');) sw.methods.push_back(m);
      if (!formats.empty()) {
        if (!pairs.empty() || sweep->count("--weights") || sweep->count("--acts"))
          throw anybit::Error("sweep: --formats replaces --weights/--acts/--pairs; give one or the other");
        std::stringstream fs(formats);
        for (std::string f; std::getline(fs, f, ',');) sw.formats.push_back(f);
      } else if (!pairs.empty()) {
        std::stringstream ps(pairs);
        for (std::string p; std::getline(ps, p, ',');) {
          int w = 0, a = 0;
          char tail = 0;
          if (std::sscanf(p.c_str(), "W%dA%d%c", &w, &a, &tail) != 2 || w < 2 || a < 2 || w > 16 || a > 16)
            throw anybit::Error("--pairs: '" + p + "' is not of the form W4A4 with widths in 2..16");
          sw.pairs.push_back({w, a});
        }
      } else {
        for (int w : anybit::parse_bits_list(wlist, "--weights"))
          for (int a : anybit::parse_bits_list(alist, "--acts")) sw.pairs.push_back({w, a});
      }
      return run_sweep_cli(sw);
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "anybit: error: " << what.substr(0, what.find("\nException raised from")) << "\n";
    return 1;
  }
  return 0;
}
