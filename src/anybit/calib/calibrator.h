// Calibrators (observers): statistics gathered on calibration data, and the float range
// [lo, hi] a uniform quantizer then covers. Plain C++17, no LibTorch: inputs are
// `const float*` + count, or a contiguous array viewed as channels (observe_per_channel).
//
// Methods (parse_method names them; choose_range applies them):
//   minmax      [min, max] of everything observed.
//   ema         moving-average min/max, PyTorch's MovingAverageMinMaxObserver:
//                 first batch  m = batch_min;  later  m += c * (batch_min - m),  c = 0.01
//               (the same for the max).
//   percentile  the P-th percentile of |x| (symmetric target) or the (100-P)-th and P-th
//               percentiles (asymmetric), read from the histogram with linear
//               interpolation inside a bin. Default P = 99.99.
//   mse         the clip minimizing the expected squared error of quantizing the observed
//               distribution on THE TARGET'S GRID, rounding error inside the range and
//               clipping error outside both counted: Banner, Nahshan & Soudry 2019,
//               "Post training 4-bit quantization of convolutional networks for
//               rapid-deployment" (ACIQ), computed on the histogram as PyTorch's
//               HistogramObserver norm minimization does (torch/ao/quantization/observer.py,
//               _compute_quantization_error), see histogram_quant_mse.
//   entropy     the clip minimizing KL(P || Q) between the histogram P and its quantized
//               version Q: Migacz 2017, "8-bit Inference with TensorRT" (GTC), generalized
//               from 128 levels to the target's levels, see choose_range.
//
// The histogram covers [-R, R] with 2048 bins; R is a power of two greater than every
// |x| seen. When a batch exceeds R, R doubles (as often as needed) and adjacent bins merge
// pairwise. Because R and the bin width are powers of two, the bin of a sample is
// computed exactly, and merging gives exactly the counts binning at the larger R would
// have given: the histogram does not depend on how the data was split into batches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace anybit {
namespace calib {

struct Range {
  double lo = 0, hi = 0;
};

enum class Method { kMinMax, kEma, kPercentile, kMse, kEntropy };

// A method with its parameter (only percentile has one).
struct MethodSpec {
  Method method = Method::kMinMax;
  double percentile = 99.99;
};

// "minmax" | "ema" | "percentile" | "percentile:P" (0 < P <= 100) | "mse" | "entropy".
// Throws std::invalid_argument naming the text:
//   unknown calibrator 'x' (expected minmax, ema, percentile[:P], mse, entropy)
MethodSpec parse_method(const std::string& text);
// The canonical text: parse_method(method_name(m)) == m.
std::string method_name(const MethodSpec& m);

// The integer grid a range is chosen for (docs/design.md, "Numeric definitions"):
//   is_signed_data_range (symmetric)  s = max(|lo|, |hi|) / qmax,             z = 0
//   asymmetric                         s = (hi' - lo') / (qmax - qmin),
//                                      z = clamp(qmin - round(lo' / s), qmin, qmax),
//                                      with lo' = min(lo, 0), hi' = max(hi, 0)
//   neither (unsigned, zero point 0)   s = max(hi, 0) / qmax,                   z = 0
// and q = clamp(round(x / s) + z, qmin, qmax), x^ = (q - z) * s. `asymmetric` wins when
// both flags are set. With pow2_scale, s is rounded up to a power of two before z is
// chosen (`int4:pow2scale`); range searches leave it off and apply it to their result.
struct QuantTarget {
  int qmin = -128, qmax = 127;
  bool is_signed_data_range = true;
  bool asymmetric = false;
  bool pow2_scale = false;
};

// Scale and zero point of `range` on the target's grid, by the formulas above (the one
// place they are computed: quant/scheme.cc asks here too). Throws
// std::invalid_argument when the target's grid is empty or not representable.
struct Grid {
  double scale = 1, zero_point = 0;
};
Grid grid_for_range(double lo, double hi, const QuantTarget& t);

// Running statistics and a histogram over [-R, R] (see the top of this file).
// Non-finite values (inf, nan) are not binned nor counted; nonfinite() counts them.
// A batch summarized where its values are (on a GPU: anybit/calibrate/observe.h), for
// Histogram/Observer::observe_summarized: its finite extremes (lo > hi: none), the sum of
// their |x|, and the counts of finite and of other values.
struct BatchSummary {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  double sum_abs = 0;
  int64_t finite = 0, nonfinite = 0;
};
// Adds to counts[0, bins) the batch's finite values binned over [-range, range): value x in
// bin floor(x * (bins / 2) / range) + bins / 2 (range and bins are powers of two: exact).
using BinCounter = std::function<void(double range, int bins, int64_t* counts)>;

class Histogram {
 public:
  static constexpr int kDefaultBins = 2048;
  // `bins` must be a power of two >= 2 (exact binning needs a power-of-two bin width).
  explicit Histogram(int bins = kDefaultBins);

  // batch_lo / batch_hi (optional) receive this call's finite min and max (inf / -inf
  // when it had no finite value).
  void observe(const float* x, int64_t n, double* batch_lo = nullptr, double* batch_hi = nullptr);
  // The same for a batch summarized elsewhere: the range grows to cover s, then `count` bins it.
  void observe_summarized(const BatchSummary& s, const BinCounter& count);
  // Adds another histogram's samples (same bin count): the result equals observing both
  // inputs into one histogram.
  void merge(const Histogram& other);

  int bins() const { return static_cast<int>(counts_.size()); }
  double range() const { return range_; }  // R; 0 before the first finite sample
  double bin_width() const { return 2 * range_ / bins(); }
  double bin_lower(int i) const { return -range_ + i * bin_width(); }
  double bin_center(int i) const { return -range_ + (i + 0.5) * bin_width(); }
  const std::vector<int64_t>& counts() const { return counts_; }

  int64_t count() const { return count_; }  // finite samples seen
  int64_t nonfinite() const { return nonfinite_; }
  double min() const { return count_ ? min_ : 0.0; }
  double max() const { return count_ ? max_ : 0.0; }
  double amax() const { return count_ ? std::max(-min_, max_) : 0.0; }
  double sum_abs() const { return sum_abs_; }
  double mean_abs() const { return count_ ? sum_abs_ / count_ : 0.0; }
  bool has_negative() const { return count_ && min_ < 0; }
  // The share of the finite samples below v (above v), the samples taken as spread evenly
  // inside each bin; exact at bin edges (0 is one: share_below(0) is the negative share).
  double share_below(double v) const;
  double share_above(double v) const;

 private:
  // Makes R the smallest power of two > amax (at least 2^-126), merging bins.
  void grow_to_cover(double amax);
  void grow_to_range(double r);
  // Adds the bin counts of x[0, n) to out (bins() entries); with all_finite false, only
  // the finite values.
  void count_into(const float* x, int64_t n, bool all_finite, int64_t* out) const;

  double range_ = 0;
  std::vector<int64_t> counts_;
  int64_t count_ = 0, nonfinite_ = 0;
  double min_ = 0, max_ = 0, sum_abs_ = 0;
};

// One observer per tensor (or per channel): a Histogram plus the moving-average
// min/max of the batch extremes (PyTorch MovingAverageMinMaxObserver semantics).
class Observer {
 public:
  static constexpr double kDefaultAveragingConstant = 0.01;
  explicit Observer(int bins = Histogram::kDefaultBins,
                    double averaging_constant = kDefaultAveragingConstant);

  // One call is one batch for the moving average. A batch without finite values is
  // ignored by the average.
  void observe(const float* x, int64_t n);
  // The same for a batch summarized elsewhere (Histogram::observe_summarized).
  void observe_summarized(const BatchSummary& s, const BinCounter& count);

  int64_t count() const { return hist_.count(); }
  int64_t batches() const { return batches_; }
  double min() const { return hist_.min(); }
  double max() const { return hist_.max(); }
  double mean_abs() const { return hist_.mean_abs(); }
  bool has_negative() const { return hist_.has_negative(); }
  Range ema() const { return {ema_lo_, ema_hi_}; }
  const Histogram& histogram() const { return hist_; }

 private:
  void update_ema(double lo, double hi);

  Histogram hist_;
  double averaging_constant_;
  int64_t batches_ = 0;
  double ema_lo_ = 0, ema_hi_ = 0;
};

// Observes a contiguous array of outer * channels * inner values as `channels` channels:
// element i belongs to channel (i / inner) % channels (NCHW activations: outer = N,
// inner = H*W; an [O, I, kh, kw] weight: outer = 1, channels = O, inner = I*kh*kw).
// Each call is one batch for every channel. `observers` must hold `channels` observers.
void observe_per_channel(std::vector<Observer>& observers, const float* x, int64_t outer,
                         int64_t channels, int64_t inner);

// The range the method picks for the target (see the top of this file). With no data
// observed it returns {0, 0}.
//   entropy: TensorRT's search, generalized. P is the histogram restricted to a candidate
//   window of bins, the mass outside folded into its edge bins; Q is the window's own
//   counts (outliers excluded) merged into the target's rounding cells (step
//   s = window / (levels - 1) bins, cell of bin j = round(centre_j / s)) and spread
//   evenly back over each cell's non-empty bins. The window minimizing KL(P || Q) wins.
//   Symmetric targets use the |x| histogram with qmax + 1 magnitude levels (TensorRT's
//   128 for int8) and windows [0, i); unsigned targets the x >= 0 half (negative mass is
//   clipped to the first bin); asymmetric targets windows around zero, both tails shrunk
//   in proportion, then each tail alone.
Range choose_range(const Observer& obs, const MethodSpec& method, const QuantTarget& target);
// The same with the method's default parameter (percentile 99.99).
Range choose_range(const Observer& obs, Method method, const QuantTarget& target);

// Expected squared quantization error, summed over the samples, of quantizing the
// histogram's distribution on the grid of [lo, hi] (grid_for_range), assuming the
// samples are spread uniformly inside each bin (PyTorch HistogramObserver's assumption):
//   sum_bins  count_b / width * integral over the bin of (x - Q(x))^2 dx,
//   Q(x) = (clamp(round(x/s) + z, qmin, qmax) - z) * s.
// The integral is closed-form (rounding noise inside the grid, (x - edge)^2 beyond it).
double histogram_quant_mse(const Histogram& h, double lo, double hi, const QuantTarget& t);
// The plain twin: the same integral by the midpoint rule with `samples_per_bin` points.
double histogram_quant_mse_reference(const Histogram& h, double lo, double hi,
                                     const QuantTarget& t, int samples_per_bin = 256);

// Real squared error, summed, of fake-quantizing x on the grid of [lo, hi], computed as
// the fake-quant kernel does in float: v = clamp(x * (1/s), qmin - z, qmax - z),
// x^ = round_half_even(v) * s. x must be finite.
double quant_squared_error(const float* x, int64_t n, double lo, double hi,
                           const QuantTarget& t);

// Exact MSE clipping on raw data (weights; call once per channel). Candidate ranges are
// the observed range scaled by a = k / 100, k = 1..100 (a = 1 is the plain max-abs /
// min-max range, so the result is never worse than it), then a = a* + j / 1000,
// j = -10..10, around the best; the range with the smallest quant_squared_error wins.
// Throws std::invalid_argument on a non-finite value.
// The candidate range for a is:
//   symmetric target   [-a * max|x|, a * max|x|]
//   unsigned target    [0, a * max(x)]
//   asymmetric target  [a * min(x, 0), a * max(x, 0)]
Range mse_optimal_range(const float* x, int64_t n, const QuantTarget& t);
// The clip c of the range above, for a symmetric grid q = clamp(round(x / s), qmin, qmax),
// s = c / qmax (symmetric = true), or an asymmetric one (symmetric = false; returns
// a* * max|x|). Returns 0 for empty or all-zero data.
double mse_optimal_clip(const float* x, int64_t n, int qmin, int qmax, bool symmetric);
// mse_optimal_range for each channel of a contiguous outer * channels * inner array
// (channel of element i: (i / inner) % channels), e.g. an [O, I, kh, kw] conv weight
// with outer = 1, channels = O, inner = I * kh * kw.
std::vector<Range> mse_optimal_range_per_channel(const float* x, int64_t outer,
                                                 int64_t channels, int64_t inner,
                                                 const QuantTarget& t);

}  // namespace calib
}  // namespace anybit
