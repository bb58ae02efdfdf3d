// Multiply-accumulate models: the plug-in point where a hardware designer replaces the
// engine's exact dot product with their own unit (noisy analog crossbar, limited ADC,
// faulty bits, ...). The engine hands the model every dot product of every conv2d and
// linear layer: integer vectors in (activations and weights with their zero points
// already subtracted), integer accumulator out; the bias is added by the engine after.
//
// Built-in models, parsed from a short string (parse_mac_model):
//   exact                          sum x[i] * w[i], every addition through the accumulator
//   gauss:sigma=S[,rel=R][,seed=K] exact + N(0, S^2 + (R * |exact|)^2), rounded half-even
//   adc:bits=B,range=F             exact read by a B-bit mid-tread ADC with full scale
//                                  [-F, F): step 2F/2^B, codes clipped to the B-bit range
//   bitflip:rate=P[,seed=K]        exact, then each bit of the accumulator word flipped
//                                  independently with probability P
// Random draws come from std::mt19937_64 (fully specified by the standard) and are turned
// into uniforms and Gaussians here rather than by <random>'s distributions, whose output
// differs between standard libraries: a seed reproduces a run on any platform.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "anybit/intsim/accumulator.h"

namespace anybit {
namespace intsim {

// What the engine tells a MAC model about the dot product it asks for.
struct MacContext {
  std::string_view layer;  // op name, e.g. "layer1.0.conv1"
  std::string_view op;     // "conv2d" or "linear"
  int64_t batch = 0;       // image in the batch
  int64_t channel = 0;     // output channel
  int64_t y = 0, x = 0;    // output position (0, 0 for linear)
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
};

// The exact dot product under the accumulator model: acc = 0, then acc = acc (+) x[i]*w[i]
// for i = 0..n-1, each (+) wrapping or saturating. The semantics every kernel reproduces.
inline int64_t dot_exact(const int32_t* x, const int32_t* w, size_t n, Accumulator& acc) {
  int64_t s = 0;
  for (size_t i = 0; i < n; ++i) s = acc.add(s, static_cast<int64_t>(x[i]) * w[i]);
  return s;
}

class ExactMac : public MacModel {
 public:
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override {
    return dot_exact(x, w, n, *ctx.acc);
  }
  bool is_exact() const override { return true; }
  std::string describe() const override { return "exact"; }
};

// Uniform doubles and standard normals from mt19937_64, identical on every platform.
class PortableRng {
 public:
  explicit PortableRng(uint64_t seed) : seed_(seed), engine_(seed) {}
  double uniform();   // [0, 1), 53 random bits
  double gaussian();  // N(0, 1), Box-Muller
  void reset() { engine_.seed(seed_), has_spare_ = false; }
  uint64_t seed() const { return seed_; }

 private:
  uint64_t seed_;
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

class GaussianMac : public MacModel {
 public:
  GaussianMac(double sigma, double rel, uint64_t seed);
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override;
  std::string describe() const override;
  void reset() override { rng_.reset(); }

 private:
  double sigma_, rel_;
  PortableRng rng_;
};

class AdcMac : public MacModel {
 public:
  AdcMac(int bits, double range);
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override;
  std::string describe() const override;
  int64_t clipped() const { return clipped_; }  // results outside the full scale so far

 private:
  int bits_;
  double range_, step_;
  int64_t clipped_ = 0;
};

class BitFlipMac : public MacModel {
 public:
  BitFlipMac(double rate, uint64_t seed);
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override;
  std::string describe() const override;
  void reset() override { rng_.reset(); }

 private:
  double rate_;
  PortableRng rng_;
};

// "exact", "gauss:sigma=2.5", "gauss:rel=0.01,seed=7", "adc:bits=8,range=4096",
// "bitflip:rate=1e-4,seed=3". Throws Error naming the text, the unknown model or
// parameter, and what is accepted.
std::unique_ptr<MacModel> parse_mac_model(const std::string& text);

}  // namespace intsim
}  // namespace anybit
