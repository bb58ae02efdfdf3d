// QuantSpec: what one quantization point does to its tensor, and the one short string
// form users write in configs and on the command line (`int4`, `uint8:asym`,
// `int6:per_channel`, `fixed:Q2.5`, `log4`, `binary`, `ternary`, `int4:pow2scale`,
// `float`). Plain C++17: the integer engine and the Python package share it.
//
// The numbers follow docs/design.md (numeric definitions):
//   uniform     q = clamp(round(x / s) + z, qmin, qmax),  x^ = (q - z) * s
//               signed   [-2^(b-1), 2^(b-1)-1]  (narrow: -2^(b-1)+1)
//               unsigned [0, 2^b - 1]
//   fixed Qm.n  uniform with s = 2^-n, z = 0, b = 1 + m + n (signed, ARM notation);
//               ufixed Qm.n is unsigned with b = m + n
//   pow2scale   s rounded up to a power of two
//   log         x^ = sign(x) * 2^clamp(round(log2|x|), hi - L + 1, hi), zero kept,
//               L = 2^(b-1) - 1 exponents (one sign bit, one code for zero)
//   binary      x^ = alpha * sign(x), sign(0) = +1
//   ternary     x^ in {-alpha, 0, alpha}, |x| <= threshold * mean|x| -> 0
//   :lsq        learned step (uniform), learned alpha (binary), learned alpha and
//               threshold (ternary); see fake_quant.h for the gradients
//   autoN       sign chosen by calibration: uintN where every calibration value (every
//               weight, for a weight) is >= 0, else intN:asym (intN with `autoN:sym`);
//               resolve_sign() turns it into that spec before any parameter is computed
#pragma once

#include <stdexcept>
#include <string>

namespace anybit {

// The one exception type of anybit: every message names the file, rule, point or
// field where the problem was found and the offending value.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

enum class Scheme { kFloat, kInt, kUInt, kFixed, kUFixed, kLog, kBinary, kTernary };
enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
// Numeric values are part of the op ABI (the `rounding` argument of anybit ops).
enum class Rounding { kHalfEven = 0, kHalfAway = 1, kFloor = 2, kStochastic = 3 };
// How a learnable quantizer trains its range: fixed (calibrated, no gradient),
// LSQ step size (Esser et al. 2020), or PACT clip (Choi et al. 2018).
enum class Learn { kNone, kLsq, kPact };

struct QuantSpec {
  Scheme scheme = Scheme::kFloat;
  int bits = 32;
  bool asymmetric = false;  // free zero point
  bool narrow = false;      // signed range without -2^(b-1)
  bool pow2_scale = false;  // scale rounded up to a power of two
  Granularity granularity = Granularity::kPerTensor;
  int axis = -1;        // channel axis for per-channel (-1: the point's default)
  int group_size = 0;   // elements per group for per-group
  int int_bits = 0;     // m of Qm.n
  int frac_bits = 0;    // n of Qm.n
  Rounding rounding = Rounding::kHalfEven;
  Learn learn = Learn::kNone;
  double threshold = 0.7;  // ternary: |x| <= threshold * mean|x| becomes 0 (TWN)
  // autoN: scheme is kInt until resolve_sign() sees the data; `asymmetric` then says what
  // the signed case gets (true unless `:sym`)
  bool auto_sign = false;

  bool is_float() const { return scheme == Scheme::kFloat; }
  bool is_uniform() const {
    return scheme == Scheme::kInt || scheme == Scheme::kUInt || scheme == Scheme::kFixed ||
           scheme == Scheme::kUFixed;
  }
  // fixed point (Qm.n): the step is 2^-n, set by the spec, never calibrated
  bool is_fixed_point() const { return scheme == Scheme::kFixed || scheme == Scheme::kUFixed; }
  bool is_signed() const {
    return scheme == Scheme::kInt || scheme == Scheme::kFixed || scheme == Scheme::kLog ||
           scheme == Scheme::kBinary || scheme == Scheme::kTernary;
  }
  // Integer range of a uniform spec (docs/design.md). For log: exponent count.
  int qmin() const;
  int qmax() const;
  int log_exponents() const { return (1 << (bits - 1)) - 1; }
  // The canonical short string; parse_spec(str()) == *this.
  std::string str() const;
  // For an autoN spec: uintN (symmetric) when min_value >= 0, else intN (asymmetric unless
  // `:sym`), with every other modifier kept. Any other spec is returned unchanged.
  QuantSpec resolve_sign(double min_value) const;
  bool operator==(const QuantSpec& o) const;
  bool operator!=(const QuantSpec& o) const { return !(*this == o); }
};

// Parses the short form. Modifiers follow the base after ':' in any order:
//   asym | sym | narrow | pow2scale | per_tensor | per_channel | axis=K | group=G |
//   round=half_even|half_away|floor|stochastic | lsq | pact | threshold=T
// and the bases: float | intN | uintN | autoN | logN | fixed:Qm.n | ufixed:Qm.n | binary | ternary
// Throws anybit::Error naming the text and what was expected.
QuantSpec parse_spec(const std::string& text);

const char* rounding_name(Rounding r);
Rounding parse_rounding(const std::string& name);

}  // namespace anybit
