// The integer-only inference engine: runs an exported integer model (model.h) on a batch
// of integer inputs with integers only, the way an accelerator would, and reports per
// layer what its accumulator and its multiply-accumulate unit did.
//
//   Model m = load_model("resnet_int8");
//   Engine e(m, {/*accumulator=*/{16, Overflow::kSaturate}, parse_mac_model("gauss:sigma=2")});
//   std::vector<Tensor> y = e.run({quantize_tensor(x.data(), {1, 3, 32, 32}, m.inputs[0].q)});
//   for (const LayerStats& s : e.stats()) ... s.overflows, s.mean_abs_error() ...
//
// Per conv2d/linear layer the engine picks one of four kernels (kernels.h):
//   fast       the MAC is exact and the layer's accumulator provably never leaves its range
//              (|bias| + max|x - z_x| * sum|w - z_w| fits, checked once per output channel):
//              int16/int32 operands, int32 accumulation, a vectorized GEMM (on x86 with
//              AVX2 or AVX-512 and int16 operands, a direct convolution that requantizes
//              its accumulators in registers). Then wrap and saturate agree and no overflow
//              can happen, so the result is the reference's exactly.
//   stepwise   the MAC is exact but the bound does not hold: every addition through the
//              declared accumulator (wrap or saturate, overflow events counted), in the
//              reference's order, vectorized across output positions (in 16-bit lanes
//              where the accumulator has at most 16 bits and the products fit int16); the
//              engine computes the exact dot products itself and does not call the MAC model.
//   per dot    a MAC model that needs every product (or KernelPath::kPerDotProduct):
//   product    every dot product through MacModel::dot, every addition through the
//              accumulator.
//   reference  only on request (KernelPath::kReference): the plain int64 reference loops.
// A sum-perturbing MAC model (mac.h) runs on the fast or stepwise kernel: the exact sums
// (without the bias) go to SumPerturbingMac::perturb in blocks, then into the accumulator,
// then the bias. Its draws are keyed by image (set_next_image), so the results equal the
// per-dot-product path's at any thread count and batch size. On a fast int16 convolution,
// an additive model (SumPerturbingMac::additive) has its noise added inside the kernel
// before the bias and the requantization in registers, for an image whose biased sums plus
// noise cannot leave the accumulator; a sparse one (SumPerturbingMac::sparse) gets the
// exact run, then only the elements it may change redone one by one. The same integers.
// Pooling sums go through the accumulator one addition at a time, unless no window's sum
// can leave it (then they are plain sums, the same numbers); KernelPath::kReference runs
// adaptive average pooling on its reference loops too.
//
// Threads (EngineOptions::threads): unless a layer calls MacModel::dot, the batch is cut
// into chunks of a few images, which threads take in turn through the whole network;
// every image is computed the same way whatever the chunking, so the results and the
// statistics do not depend on the thread count. With a per-product MAC model in use the
// run stays on the calling thread, layer by layer over the whole batch, so that the model
// sees its dot products in the documented order (mac.h) and a seed reproduces a run.
//
// Not thread-safe: one Engine runs one batch at a time (MAC models keep random state).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "anybit/intsim/accumulator.h"
#include "anybit/intsim/mac.h"
#include "anybit/intsim/model.h"

namespace anybit {
namespace intsim {

// A batch of integers: shape [N, ...] (the model's shapes with the batch in front), C order.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<int32_t> data;

  int64_t numel() const;
  static Tensor from_int8(std::vector<int64_t> shape, const std::vector<int8_t>& values);
  static Tensor from_int32(std::vector<int64_t> shape, std::vector<int32_t> values);
};

// q = clamp(round_half_even(x / s) + z, qmin, qmax) element-wise (requantize.h).
Tensor quantize_tensor(const float* x, std::vector<int64_t> shape, const QuantParams& q);
// x^ = (q - z) * s
std::vector<float> dequantize_tensor(const Tensor& t, const QuantParams& q);

enum class KernelPath {
  kAuto,          // fast where provably exact; stepwise (exact MAC) or per dot product elsewhere
  kPerDotProduct, // every conv2d/linear dot product through the MacModel
  kReference,     // the *_reference kernels (the MacModel is not used)
};

struct EngineOptions {
  AccumulatorSpec accumulator;       // width 8..32 (default 32) and overflow mode
  std::shared_ptr<MacModel> mac;     // null: exact
  KernelPath path = KernelPath::kAuto;
  // Threads a run may use: 0 one per hardware thread (std::thread::hardware_concurrency()),
  // 1 the calling thread only. Results do not depend on it.
  int threads = 0;
};

// The engine's options as the front ends spell them (the CLI's intsim flags, Python's
// keywords), parsed in one place (engine_options): an accumulator of acc_bits (8..32) that
// wraps or saturates on overflow, a MAC model spec (mac.h; "exact"), threads (0: one per
// hardware thread) and the kernel path (the reference loops, or one dot product at a time).
struct EngineSpec {
  int acc_bits = 32;
  std::string overflow = "wrap";  // wrap | saturate
  std::string mac = "exact";
  int threads = 0;
  bool reference_kernels = false;
  bool per_dot_product = false;
};
// Throws Error naming the field at fault.
EngineOptions engine_options(const EngineSpec& spec);

// What one op did, summed over every run since construction or reset_stats().
struct LayerStats {
  std::string name;  // the op's name
  std::string op;    // its kind, "conv2d"
  bool fast_path = false;     // conv2d/linear: the fast kernel is used (no overflow possible)
  int64_t dot_products = 0;   // conv2d/linear output elements computed
  int64_t overflows = 0;      // accumulator additions that left the declared range
  double sum_abs_error = 0;   // sum |mac - exact| (non-exact MAC only)
  int64_t max_abs_error = 0;
  int64_t clipped = 0;        // results the MAC model clipped (an ADC's full scale)
  double mean_abs_error() const {
    return dot_products ? sum_abs_error / static_cast<double>(dot_products) : 0.0;
  }
};

class Engine {
 public:
  // Validates the model (throws Error) and prepares every layer's weights.
  explicit Engine(Model model, EngineOptions options = {});
  ~Engine();
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;

  // Inputs in the order of model().inputs, each [N, ...shape] with values in the input's
  // [qmin, qmax]; returns the outputs in the order of model().outputs. Throws Error for a
  // wrong count, shape or value. With `tensors`, every tensor of the run is also returned
  // by name (for comparing layer by layer with the fake-quantized model).
  std::vector<Tensor> run(const std::vector<Tensor>& inputs,
                          std::map<std::string, Tensor>* tensors = nullptr);

  const Model& model() const;
  const EngineOptions& options() const;
  // One entry per op, in model order.
  const std::vector<LayerStats>& stats() const;
  void reset_stats();

  // The conv2d and linear layers as the MAC model sees them (MacModel::prepare).
  const std::vector<MacLayer>& mac_layers() const;
  // MacContext::image of the next run's first image; each run advances it by its batch,
  // so that a data set run in batches in order numbers its images 0, 1, ... whatever the
  // batch size (the key of a sum-perturbing model's draws). Starts at 0.
  void set_next_image(int64_t image);
  int64_t next_image() const;
  // Runs `inputs` exactly and records, per layer, the MacModel::calibration_percentile()
  // of |exact dot product| (MacLayer::calibrated); then prepares the MAC model. Required
  // before run() for a model with needs_calibration() (adc:range=auto).
  void calibrate(const std::vector<Tensor>& inputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A short table of the statistics, one line per op that accumulates.
std::string format_stats(const std::vector<LayerStats>& stats);

}  // namespace intsim
}  // namespace anybit
