// Histogram and Observer: what a calibration saw at one point, independent of how the data
// was split into batches; see calibrator.h. Range selection on them is calibrator.cc.
#include "anybit/calib/calibrator.h"

#include <omp.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "anybit/calib/calib_internal.h"

namespace anybit {
namespace calib {

using detail::check_view;
using detail::gather_channel;
using detail::kInf;
using detail::num;

namespace {

// The smallest histogram range: FLT_MIN, so every non-zero normal float grows it.
const double kMinRange = std::ldexp(1.0, -126);

// floor(a / 2^k) for k >= 0, exact for every int64 a.
int64_t floor_div_pow2(int64_t a, int k) {
  if (k >= 62) return a < 0 ? -1 : 0;
  const int64_t d = int64_t{1} << k;
  return a >= 0 ? a / d : -((-a + d - 1) / d);
}

}  // namespace

// ---- histogram ----------------------------------------------------------------------

Histogram::Histogram(int bins) {
  if (bins < 2 || (bins & (bins - 1)) != 0)
    throw std::invalid_argument("Histogram: the bin count must be a power of two >= 2, got " +
                                std::to_string(bins));
  counts_.assign(bins, 0);
}

// [-R, R] becomes [-R', R'], R' = 2^k R: bin j (x*half/R in [j - half, j - half + 1))
// lands in bin half + floor((j - half) / 2^k). Integer arithmetic: exact.
void Histogram::grow_to_range(double r) {
  if (r <= range_) return;
  const int k = std::ilogb(r) - std::ilogb(range_);
  const int half = bins() / 2;
  std::vector<int64_t> merged(counts_.size(), 0);
  for (int j = 0; j < bins(); ++j)
    if (counts_[j]) merged[half + floor_div_pow2(j - half, k)] += counts_[j];
  counts_.swap(merged);
  range_ = r;
}

void Histogram::grow_to_cover(double amax) {
  int e = 0;
  std::frexp(amax, &e);  // amax = m * 2^e, m in [0.5, 1): 2^e > amax
  const double r = amax > 0 ? std::max(std::ldexp(1.0, e), kMinRange) : kMinRange;
  if (range_ == 0)
    range_ = r;
  else
    grow_to_range(r);
}

namespace {

// floor(v) as an integer for |v| < 2^62, without a libm call (which -O2 on the x86-64
// baseline would make for std::floor).
inline int64_t floor_to_int(double v) {
  const int64_t t = static_cast<int64_t>(v);  // truncates toward zero
  return t - (static_cast<double>(t) > v);
}

// One pass over x: min, max and sum |x| of the finite values and the count of the others.
// Eight independent lanes, so the loop vectorizes without reassociating anything: the
// result is the same whatever the vector width (the lanes are combined in a fixed order).
struct Summary {
  double lo, hi, sum_abs;
  int64_t nonfinite;
};

Summary summarize(const float* x, int64_t n) {
  constexpr int kLanes = 8;
  constexpr float kFltMax = std::numeric_limits<float>::max();
  float lo[kLanes], hi[kLanes];
  double sa[kLanes];
  int64_t bad[kLanes];
  for (int j = 0; j < kLanes; ++j) lo[j] = kFltMax, hi[j] = -kFltMax, sa[j] = 0, bad[j] = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      lo[j] = v < lo[j] ? v : lo[j];
      hi[j] = v > hi[j] ? v : hi[j];
      sa[j] += std::fabs(static_cast<double>(v));
      bad[j] += !(std::fabs(v) <= kFltMax);  // inf or NaN
    }
  }
  int64_t nonfinite = 0;
  for (int j = 0; j < kLanes; ++j) nonfinite += bad[j];
  auto add = [](Summary& s, double v) {
    s.lo = std::min(s.lo, v);
    s.hi = std::max(s.hi, v);
    s.sum_abs += std::fabs(v);
  };
  if (nonfinite == 0) {
    Summary s{kInf, -kInf, 0, 0};
    for (int j = 0; j < kLanes && i > 0; ++j) {
      s.lo = std::min<double>(s.lo, lo[j]);
      s.hi = std::max<double>(s.hi, hi[j]);
      s.sum_abs += sa[j];
    }
    bool tail_finite = true;
    for (; i < n && tail_finite; ++i) {
      tail_finite = std::isfinite(static_cast<double>(x[i]));
      add(s, x[i]);
    }
    if (tail_finite) return s;
  }
  // Something was inf or NaN (rare): the plain loop, skipping those.
  Summary s{kInf, -kInf, 0, 0};
  for (int64_t k = 0; k < n; ++k) {
    const double v = x[k];
    if (!std::isfinite(v)) {
      ++s.nonfinite;
      continue;
    }
    add(s, v);
  }
  return s;
}

}  // namespace

// Observation splits large batches across OpenMP threads (the count set by
// at::set_num_threads). The summary is taken over fixed chunks combined in order, so the
// statistics do not depend on the thread count; bin counts are integers and add up the same
// in any order.
constexpr int64_t kSummaryChunk = int64_t{1} << 16;

void Histogram::observe(const float* x, int64_t n, double* batch_lo, double* batch_hi) {
  const int64_t chunks = (n + kSummaryChunk - 1) / kSummaryChunk;
  const int threads = chunks > 1 ? std::min<int64_t>(omp_get_max_threads(), chunks) : 1;
  Summary sum{kInf, -kInf, 0, 0};
  if (chunks <= 1) {
    sum = summarize(x, n);
  } else {
    std::vector<Summary> part(chunks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < chunks; ++c)
      part[c] = summarize(x + c * kSummaryChunk, std::min(kSummaryChunk, n - c * kSummaryChunk));
    for (const Summary& p : part) {
      sum.lo = std::min(sum.lo, p.lo);
      sum.hi = std::max(sum.hi, p.hi);
      sum.sum_abs += p.sum_abs;
      sum.nonfinite += p.nonfinite;
    }
  }
  if (batch_lo) *batch_lo = sum.lo;
  if (batch_hi) *batch_hi = sum.hi;
  BatchSummary s;
  s.lo = sum.lo;
  s.hi = sum.hi;
  s.sum_abs = sum.sum_abs;
  s.finite = n > 0 ? n - sum.nonfinite : 0;
  s.nonfinite = sum.nonfinite;
  const bool all_finite = sum.nonfinite == 0;
  observe_summarized(s, [&](double, int, int64_t* counts) {
    if (threads <= 1) {
      count_into(x, n, all_finite, counts);
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      std::vector<int64_t> local(counts_.size(), 0);
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      count_into(x + b, e - b, all_finite, local.data());
#pragma omp critical(anybit_histogram_counts)
      for (size_t j = 0; j < local.size(); ++j) counts[j] += local[j];
    }
  });
}

void Histogram::observe_summarized(const BatchSummary& s, const BinCounter& count) {
  nonfinite_ += s.nonfinite;
  if (s.finite == 0) return;
  grow_to_cover(std::max(-s.lo, s.hi));
  count(range_, bins(), counts_.data());
  min_ = count_ ? std::min(min_, s.lo) : s.lo;
  max_ = count_ ? std::max(max_, s.hi) : s.hi;
  count_ += s.finite;
  sum_abs_ += s.sum_abs;
}

void Histogram::count_into(const float* x, int64_t n, bool all_finite, int64_t* out) const {
  // R and the bin width are powers of two, so x * half / R is exact and so is its floor;
  // |x| < R keeps the index inside [0, bins).
  const int half = bins() / 2;
  const double inv_w = half / range_;
  int64_t* counts = out + half;
  if (all_finite && n >= 4 * bins()) {
    // Four interleaved partial histograms: runs of equal values (the zeros after a ReLU)
    // would otherwise make every increment wait for the previous one to the same bin.
    std::vector<int32_t> part(4 * static_cast<size_t>(bins()), 0);
    int32_t* p0 = part.data() + half;
    const int64_t b = bins();
    int64_t i = 0;
    for (int64_t done = 0; done < n;) {
      const int64_t end = std::min<int64_t>(n, done + (int64_t{1} << 30));  // int32 parts never overflow
      for (i = done; i + 4 <= end; i += 4) {
        ++p0[floor_to_int(x[i] * inv_w)];
        ++p0[b + floor_to_int(x[i + 1] * inv_w)];
        ++p0[2 * b + floor_to_int(x[i + 2] * inv_w)];
        ++p0[3 * b + floor_to_int(x[i + 3] * inv_w)];
      }
      for (; i < end; ++i) ++p0[floor_to_int(x[i] * inv_w)];
      for (int64_t j = 0; j < b; ++j) {
        out[j] += int64_t{part[j]} + part[b + j] + part[2 * b + j] + part[3 * b + j];
        part[j] = part[b + j] = part[2 * b + j] = part[3 * b + j] = 0;
      }
      done = end;
    }
  } else if (all_finite) {
    for (int64_t i = 0; i < n; ++i) ++counts[floor_to_int(x[i] * inv_w)];
  } else {
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) ++counts[floor_to_int(x[i] * inv_w)];
  }
}

double Histogram::share_below(double v) const {
  if (count_ == 0 || v <= min_) return 0.0;
  if (v > max_) return 1.0;
  const double k = (v + range_) / bin_width();  // bins below, fractional
  const int full = static_cast<int>(std::min<double>(std::floor(k), bins()));
  double below = 0;
  for (int i = 0; i < full; ++i) below += static_cast<double>(counts_[i]);
  if (full < bins()) below += static_cast<double>(counts_[full]) * (k - full);
  return std::min(1.0, below / static_cast<double>(count_));
}

double Histogram::share_above(double v) const {
  if (count_ == 0 || v >= max_) return 0.0;
  if (v < min_) return 1.0;
  return std::max(0.0, 1.0 - share_below(v));
}

void Histogram::merge(const Histogram& other) {
  if (other.bins() != bins())
    throw std::invalid_argument("Histogram::merge: " + std::to_string(other.bins()) +
                                " bins into " + std::to_string(bins()));
  nonfinite_ += other.nonfinite_;
  if (other.count_ == 0) return;
  if (count_ == 0) {
    const int64_t nf = nonfinite_;
    *this = other;
    nonfinite_ = nf;
    return;
  }
  Histogram o = other;
  const double r = std::max(range_, o.range_);
  grow_to_range(r);
  o.grow_to_range(r);
  for (int j = 0; j < bins(); ++j) counts_[j] += o.counts_[j];
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
  count_ += o.count_;
  sum_abs_ += o.sum_abs_;
}

// ---- observer -----------------------------------------------------------------------

Observer::Observer(int bins, double averaging_constant)
    : hist_(bins), averaging_constant_(averaging_constant) {
  if (!(averaging_constant > 0 && averaging_constant <= 1))
    throw std::invalid_argument("Observer: the averaging constant must be in (0, 1], got " +
                                num(averaging_constant));
}

void Observer::observe(const float* x, int64_t n) {
  double lo = kInf, hi = -kInf;  // this batch's finite extremes
  hist_.observe(x, n, &lo, &hi);
  update_ema(lo, hi);
}

void Observer::observe_summarized(const BatchSummary& s, const BinCounter& count) {
  hist_.observe_summarized(s, count);
  update_ema(s.lo, s.hi);
}

void Observer::update_ema(double lo, double hi) {
  if (lo > hi) return;  // no finite value
  // MovingAverageMinMaxObserver: the first batch sets the average, later ones move it.
  if (batches_ == 0) {
    ema_lo_ = lo;
    ema_hi_ = hi;
  } else {
    ema_lo_ += averaging_constant_ * (lo - ema_lo_);
    ema_hi_ += averaging_constant_ * (hi - ema_hi_);
  }
  ++batches_;
}

void observe_per_channel(std::vector<Observer>& observers, const float* x, int64_t outer,
                         int64_t channels, int64_t inner) {
  check_view("observe_per_channel", outer, channels, inner);
  if (static_cast<int64_t>(observers.size()) != channels)
    throw std::invalid_argument("observe_per_channel: " + std::to_string(observers.size()) +
                                " observers for " + std::to_string(channels) + " channels");
  std::vector<float> buf;
  for (int64_t c = 0; c < channels; ++c) {
    gather_channel(x, outer, channels, inner, c, buf);
    observers[c].observe(buf.data(), static_cast<int64_t>(buf.size()));
  }
}

}  // namespace calib
}  // namespace anybit
