// The accumulator model of the integer engine: a signed register of a declared width
// (8..32 bits) and what happens when a sum leaves its range (wrap, as two's-complement
// hardware does, or saturate, as DSP MAC units do). docs/design.md: "applied after
// every addition". Header-only so MAC plug-ins and the reference kernels share it.
#pragma once

#include <cstdint>
#include <string>

#include "anybit/base/error.h"

namespace anybit {
namespace intsim {

enum class Overflow { kWrap, kSaturate };

struct AccumulatorSpec {
  int bits = 32;                       // 8..32
  Overflow overflow = Overflow::kWrap;
};

inline const char* overflow_name(Overflow o) { return o == Overflow::kWrap ? "wrap" : "saturate"; }

inline void check_accumulator_spec(const AccumulatorSpec& spec) {
  if (spec.bits < 8 || spec.bits > 32)
    throw Error("accumulator width must be 8..32 bits, got " + std::to_string(spec.bits));
}

// v brought into the signed range of `bits` bits; *overflowed set when v was outside.
// Wrapping keeps the low `bits` bits and sign-extends them (done on uint64 so that no
// step is undefined behaviour).
inline int64_t fit_accumulator(int64_t v, const AccumulatorSpec& spec, bool* overflowed) {
  const int64_t max = (int64_t{1} << (spec.bits - 1)) - 1;
  const int64_t min = -max - 1;
  const bool out = v < min || v > max;
  if (overflowed) *overflowed = out;
  if (!out) return v;
  if (spec.overflow == Overflow::kSaturate) return v < min ? min : max;
  const uint64_t mask = (uint64_t{1} << spec.bits) - 1;
  const uint64_t low = static_cast<uint64_t>(v) & mask;
  const uint64_t sign = uint64_t{1} << (spec.bits - 1);
  return (low & sign) ? static_cast<int64_t>(low) - static_cast<int64_t>(mask) - 1
                      : static_cast<int64_t>(low);
}

// One accumulator register with its overflow counter. MAC models call add() for every
// addition they perform, so narrow widths are modelled exactly where they bite.
class Accumulator {
 public:
  explicit Accumulator(AccumulatorSpec spec = {}) : spec_(spec) { check_accumulator_spec(spec); }

  // a + b in the accumulator; a is a previous accumulator value, b a product (|b| < 2^63
  // - 2^31, which every product of two int32 satisfies).
  int64_t add(int64_t a, int64_t b) { return fit(a + b); }

  // Brings any value (e.g. a noisy MAC result) into range, counting an overflow event.
  int64_t fit(int64_t v) {
    bool overflowed = false;
    const int64_t r = fit_accumulator(v, spec_, &overflowed);
    overflows_ += overflowed ? 1 : 0;
    return r;
  }

  const AccumulatorSpec& spec() const { return spec_; }
  int64_t min() const { return -(int64_t{1} << (spec_.bits - 1)); }
  int64_t max() const { return (int64_t{1} << (spec_.bits - 1)) - 1; }
  int64_t overflows() const { return overflows_; }
  void reset_overflows() { overflows_ = 0; }

 private:
  AccumulatorSpec spec_;
  int64_t overflows_ = 0;
};

}  // namespace intsim
}  // namespace anybit
