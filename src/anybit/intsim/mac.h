// Multiply-accumulate models: the plug-in point where a hardware designer replaces the
// engine's exact dot product with their own unit (noisy analog crossbar, limited ADC,
// faulty bits, ...). A model is one of two kinds:
//   per product   it needs every product (dot(): integer vectors in, with the zero points
//                 already subtracted, integer out). The engine calls it once per output
//                 element of every conv2d and linear layer, on one thread.
//   sum-perturbing  SumPerturbingMac: a function of the exact dot product, optionally of
//                 sum_i (x_i w_i)^2, of the layer and of the element's place. The engine
//                 computes the exact sums on its fast multi-threaded kernels and hands them
//                 over in blocks (perturb()); random draws are keyed by (seed, layer, image,
//                 element), so a seed gives the same numbers at any thread count, batch size
//                 and kernel path (dot() of these models gives the same as perturb()).
// The bias is added by the engine after either.
//
// Built-in models, parsed from a short string (parse_mac_model), all sum-perturbing:
//   exact                             sum x[i] * w[i], every addition through the accumulator
//   gauss:sigma=S,rel=R,fs=F[,seed=K] exact + N(0, S^2 + R^2 sum_i (x_i w_i)^2 + (F * FS)^2),
//                                     rounded half-even (without R: exact + the noise
//                                     rounded); any of S, R, F (default 0); FS the layer's
//                                     full scale (MacLayer::full_scale)
//   adc:bits=B,range=F                exact read by a B-bit mid-tread ADC with full scale
//                                     [-F, F): step 2F/2^B, codes clipped to the B-bit range;
//   adc:bits=B,fs=F                   F times the layer's full scale;
//   adc:bits=B,range=auto[,pct=P]     the P-th percentile (default 99.99) of |exact| on
//                                     calibration data (Engine::calibrate), per layer
//   bitflip:rate=P[,seed=K]           exact, then each bit of the accumulator word flipped
//                                     independently with probability P
//   wnoise:rel=R[,seed=K]             weight programming noise: each integer weight w - z_w of
//                                     output channel o becomes round(w + R * max_k|w_ok| * z),
//                                     clamped to the weight's range, drawn once per seed; the
//                                     dot products are then exact
// Random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011; the generator of cuRAND and of PyTorch's CUDA RNG), counter (element / 4,
// image, layer, stream) and key seed; normals by the inverse CDF (inverse_normal below).
// docs/integer-format.md ("Noise models") has the units and examples.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "anybit/intsim/accumulator.h"

namespace anybit {
namespace intsim {

// What the engine tells a model about one conv2d or linear layer (MacModel::prepare).
struct MacLayer {
  std::string name;           // op name, e.g. "layer1.0.conv1"
  std::string op;             // "conv2d" or "linear"
  int64_t index = 0;          // among the model's conv2d and linear layers, in model order
  int64_t out_channels = 0;   // O
  int64_t positions = 1;      // output positions per channel (H * W; 1 for linear)
  int64_t depth = 0;          // K, the length of one dot product
  // The layer's full scale: the largest |dot product| its integer ranges allow,
  // max_o max|x - z_x| * sum_k |w_ok - z_w| (the weights as the engine runs them).
  double full_scale = 0;
  // |exact dot product| at the calibration percentile (Engine::calibrate); -1: none.
  double calibrated = -1;
};

// What the engine tells a model about the dot product it asks for.
struct MacContext {
  std::string_view layer;  // op name, e.g. "layer1.0.conv1"
  std::string_view op;     // "conv2d" or "linear"
  int64_t batch = 0;       // image in the batch
  int64_t channel = 0;     // output channel
  int64_t y = 0, x = 0;    // output position (0, 0 for linear)
  int64_t image = 0;       // the image counted over the engine's runs (Engine::set_next_image)
  int64_t index = 0;       // the element in the image's output: channel * positions + y * W + x
  const MacLayer* info = nullptr;  // the layer (null outside the engine)
  int64_t* clipped = nullptr;      // a model that clips a result may count it here
  // The layer's accumulator (declared width and overflow mode). Call acc->add() for every
  // addition the unit performs; it wraps or saturates and counts overflow events.
  Accumulator* acc = nullptr;
};

class MacModel {
 public:
  virtual ~MacModel() = default;
  // sum_i x[i] * w[i] as the modelled unit computes it; x = q_x - z_x, w = q_w - z_w.
  // The engine brings the result into the accumulator range (counting an overflow if it
  // was outside) and then adds the bias.
  virtual int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) = 0;
  // True only when dot() is the exact sum: the engine may then use its fast kernels.
  virtual bool is_exact() const { return false; }
  // The string that parse_mac_model turns back into this model.
  virtual std::string describe() const = 0;
  // Restarts the random stream (so two runs can see the same noise).
  virtual void reset() {}
  // The seed of a model that draws random numbers (describe() then ends in ",seed=K");
  // nullopt for one that draws none.
  virtual std::optional<uint64_t> seed() const { return std::nullopt; }
  // Called by the engine before any run with every conv2d/linear layer (and again after
  // Engine::calibrate). Throws Error if the model cannot run on them.
  virtual void prepare(const std::vector<MacLayer>& layers) { (void)layers; }
  // True when prepare() needs MacLayer::calibrated (Engine::calibrate must run first).
  virtual bool needs_calibration() const { return false; }
  // The percentile of |exact| that Engine::calibrate records (in (0, 100]).
  virtual double calibration_percentile() const { return 99.99; }
  // Weight programming noise: changes w - z_w of a layer ([O][K]) once, when the engine
  // prepares it; each value must stay in [lo, hi] (the weight range minus the zero point
  // of its channel, lo/hi[o]). Default: none.
  virtual bool perturbs_weights() const { return false; }
  virtual void perturb_weights(const MacLayer& layer, int32_t* w, const int32_t* lo,
                               const int32_t* hi) const {
    (void)layer, (void)w, (void)lo, (void)hi;
  }
};

// The exact dot product under the accumulator model: acc = 0, then acc = acc (+) x[i]*w[i]
// for i = 0..n-1, each (+) wrapping or saturating. The semantics every kernel reproduces.
inline int64_t dot_exact(const int32_t* x, const int32_t* w, size_t n, Accumulator& acc) {
  int64_t s = 0;
  for (size_t i = 0; i < n; ++i) s = acc.add(s, static_cast<int64_t>(x[i]) * w[i]);
  return s;
}

// sum_i (x[i] * w[i])^2, exact while the sum stays below 2^64 (then as a double: rounded).
double dot_squares(const int32_t* x, const int32_t* w, size_t n);

// Exact dot products of a layer handed to a sum-perturbing model: elements first_index ..
// first_index + count - 1 of image `image`'s output (MacContext::index).
struct SumBlock {
  const MacLayer* layer = nullptr;
  int64_t image = 0;
  int64_t first_index = 0, count = 0;
  const int32_t* exact = nullptr;     // in the accumulator's range (no bias)
  const double* squares = nullptr;    // sum_i (x_i w_i)^2 when needs_squares(), else null
  int accumulator_bits = 32;
  int64_t* out = nullptr;             // the unit's results, before the accumulator's fit
  int64_t clipped = 0;                // results the model clipped (an ADC's full scale)
};

class SumPerturbingMac : public MacModel {
 public:
  // Writes b.out from b.exact (and b.squares). Called from several threads at once on
  // disjoint blocks: keeps no state but what prepare() set.
  virtual void perturb(SumBlock& b) const = 0;
  virtual bool needs_squares() const { return false; }
  // False for a model whose sums are exact (weight noise only): the engine then runs its
  // exact kernels and does not call perturb().
  virtual bool perturbs_sums() const { return true; }
  // True when perturb() adds to each exact sum a value that does not depend on it (b.out[k]
  // = b.exact[k] + noise[k], noise from draw_noise): the engine may then draw the noise
  // first and add it as the sums come out of its convolution kernel, where they are
  // requantized in registers (engine.h).
  virtual bool additive() const { return false; }
  // noise[k] for elements first .. first + count - 1 of image `image`'s output of `layer`
  // (MacContext::index), saturated to +-(2^31 - 1), for a model that is additive(); returns
  // the largest |noise[k]| (2^31 - 1: perhaps saturated) and their sum. Thread-safe as
  // perturb().
  struct NoiseSize {
    int64_t max = 0;
    double sum = 0;
  };
  virtual NoiseSize draw_noise(const MacLayer& layer, int64_t image, int64_t first, int64_t count,
                               int32_t* noise) const;
  // True when perturb() changes few sums and can name beforehand every one it may change
  // (may_change): the engine then runs the exact run's kernel and redoes only those
  // elements, while they are few (engine.h).
  virtual bool sparse() const { return false; }
  // Appends to `elements` those of first .. first + count - 1 of image `image`'s output of
  // `layer` (MacContext::index) whose result perturb() may make differ from the exact sum,
  // in order; the others it must leave exact. Thread-safe as perturb().
  virtual void may_change(const MacLayer& layer, int64_t image, int64_t first, int64_t count,
                          std::vector<int64_t>& elements) const;
  // One element as a block of one: the same result as perturb() gives it in a block.
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override;
};

class ExactMac : public MacModel {
 public:
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override {
    return dot_exact(x, w, n, *ctx.acc);
  }
  bool is_exact() const override { return true; }
  std::string describe() const override { return "exact"; }
};

// --- counter-based random numbers --------------------------------------------------------

// Philox4x32-10: four 32-bit words from a 128-bit counter and a 64-bit key.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Draws keyed by (seed, stream, layer, image, element): word (element % 32) / 8 of Philox
// at counter (8 (element / 32) + element % 8, image, layer, stream), key (seed low, seed
// high) (the layout eight SIMD lanes produce); for elements first .. first + n - 1. The
// same element gets the same draw whatever the block.
void keyed_words(uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image, uint64_t first,
                 int64_t n, uint32_t* words);
// Standard normals from keyed_words: inverse_normal((word + 0.5) / 2^32).
void keyed_normals(uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image, uint64_t first,
                   int64_t n, double* z);
// Phi^-1(u) for u in (0, 1) to about 1e-15 (Acklam's rational approximation and one
// Halley step on erfc).
double inverse_normal_exact(double u);
// Phi^-1((word + 0.5) / 2^32): linear interpolation (in float32) in a table of 4096 cells,
// exact (inverse_normal_exact) in the 16 outermost cells at each end; |error| < 2e-4.
double normal_from_word(uint32_t word);

// --- the built-in models ------------------------------------------------------------------

class GaussianMac : public SumPerturbingMac {
 public:
  GaussianMac(double sigma, double rel, double fs, uint64_t seed);
  GaussianMac(double sigma, double rel, uint64_t seed) : GaussianMac(sigma, rel, 0, seed) {}
  void perturb(SumBlock& b) const override;
  bool needs_squares() const override { return rel_ != 0; }
  // Without rel, the noise round(sd * z) (sd the layer's standard deviation) is added to
  // the exact sum.
  bool additive() const override { return rel_ == 0; }
  NoiseSize draw_noise(const MacLayer& layer, int64_t image, int64_t first, int64_t count,
                       int32_t* noise) const override;

 private:
  // Standard normals of elements first .. first + count - 1 (the thread's buffer) and the
  // layer's standard deviation without rel.
  const double* normals(const MacLayer& layer, int64_t image, int64_t first, int64_t count) const;
  double sd(const MacLayer& layer) const;

 public:
  std::string describe() const override;
  std::optional<uint64_t> seed() const override { return seed_; }
  double sigma() const { return sigma_; }
  double rel() const { return rel_; }
  double fs() const { return fs_; }

 private:
  double sigma_, rel_, fs_;
  uint64_t seed_;
};

class AdcMac : public SumPerturbingMac {
 public:
  enum class Range { kAbsolute, kFullScale, kCalibrated };
  AdcMac(int bits, double range, Range kind = Range::kAbsolute, double pct = 99.99);
  void perturb(SumBlock& b) const override;
  std::string describe() const override;
  void prepare(const std::vector<MacLayer>& layers) override;
  bool needs_calibration() const override { return kind_ == Range::kCalibrated; }
  double calibration_percentile() const override { return pct_; }
  // The full scale F of each layer after prepare() (by MacLayer::index).
  const std::vector<double>& ranges() const { return ranges_; }

 private:
  int bits_;
  double range_, pct_;
  Range kind_;
  std::vector<double> ranges_;
};

class BitFlipMac : public SumPerturbingMac {
 public:
  BitFlipMac(double rate, uint64_t seed);
  void perturb(SumBlock& b) const override;
  // An element keeps its exact sum unless its first draw says a bit flips.
  bool sparse() const override { return true; }
  void may_change(const MacLayer& layer, int64_t image, int64_t first, int64_t count,
                  std::vector<int64_t>& elements) const override;
  std::string describe() const override;
  std::optional<uint64_t> seed() const override { return seed_; }

 private:
  // The largest first word with which no bit of an accumulator of `bits` bits flips;
  // nullopt when every word may flip one.
  std::optional<uint32_t> keep_max(int bits) const;
  std::optional<uint32_t> find_keep_max(int bits) const;
  double rate_;
  uint64_t seed_;
  std::array<std::optional<uint32_t>, 65> keep_max_;  // by bits
};

// Weight programming noise; the dot products themselves are exact.
class WeightNoiseMac : public SumPerturbingMac {
 public:
  WeightNoiseMac(double rel, uint64_t seed);
  void perturb(SumBlock& b) const override;
  bool perturbs_weights() const override { return true; }
  bool perturbs_sums() const override { return false; }
  void perturb_weights(const MacLayer& layer, int32_t* w, const int32_t* lo,
                       const int32_t* hi) const override;
  std::string describe() const override;
  std::optional<uint64_t> seed() const override { return seed_; }

 private:
  double rel_;
  uint64_t seed_;
};

// "exact", "gauss:sigma=2.5", "gauss:rel=0.01,seed=7", "adc:bits=8,range=4096",
// "adc:bits=8,range=auto,pct=99.9", "bitflip:rate=1e-4,seed=3", "wnoise:rel=0.02". Throws
// Error naming the text, the unknown model or parameter, and what is accepted.
std::unique_ptr<MacModel> parse_mac_model(const std::string& text);

// A noise sweep: "gauss:rel=0.001,0.01,0.1" (one parameter given several values, listed
// after its key) is one model string per value, in order, the other parameters kept;
// `key` gets the swept parameter ("" when the text names one model). Validates each.
std::vector<std::string> expand_mac_levels(const std::string& text, std::string* key,
                                           std::vector<double>* values);
// The spec with its seed replaced (or added): models that draw nothing (MacModel::seed()
// empty) are returned as they are. Throws Error for a malformed spec.
std::string with_mac_seed(const std::string& text, uint64_t seed);

}  // namespace intsim
}  // namespace anybit
