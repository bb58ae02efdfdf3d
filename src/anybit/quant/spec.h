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
//   fpN:eXmY    minifloat: x^ = s * cast(x / s) to a float of X exponent and Y mantissa
//               bits (N = 1 + X + Y, bias 2^(X-1) - 1, subnormals), round to nearest
//               even, saturating at the largest finite value; see minifloat_max()
//   mxfpN:eXmY  OCP MX: blocks of 32 along the reduction axis share a power-of-two scale
//   mxint8      (E8M0) chosen from the block's maximum, elements fpN:eXmY or int8 (k * 2^-6);
//               mxfp4 is mxfp4:e2m1. `:block=K`, `:axis=K` change the block.
//   nvfp4       E2M1 elements, blocks of 16 with an E4M3 scale, one float32 scale per tensor
//   nf4         x^ = s * l, l the nearest of QLoRA's 16 NormalFloat levels in [-1, 1], s = max|x|
//               per tensor, channel or group (nf4:group=64 is QLoRA's)
//   lutN        a codebook of 2^N levels per tensor or channel, learned by k-means on the weight
//               or on the calibration data, or given (`lut2:levels=-1/-0.25/0.25/1`); `:lsq`
//               trains the levels
//   autoN       sign chosen by calibration: uintN where every calibration value (every
//               weight, for a weight) is >= 0, else intN:asym (intN with `autoN:sym`);
//               resolve_sign() turns it into that spec before any parameter is computed
#pragma once

#include "anybit/base/error.h"
#include <string>
#include <vector>

namespace anybit {

enum class Scheme { kFloat, kInt, kUInt, kFixed, kUFixed, kLog, kBinary, kTernary, kMinifloat, kMx, kNvfp4, kNf4, kLut };
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
  int exp_bits = 0;     // X of a minifloat eXmY
  int man_bits = 0;     // Y of a minifloat eXmY (MXINT: the element's bits, exp_bits 0)
  int block = 0;        // MX, NVFP4: elements per block (32, 16)
  Rounding rounding = Rounding::kHalfEven;
  Learn learn = Learn::kNone;
  double threshold = 0.7;  // ternary: |x| <= threshold * mean|x| becomes 0 (TWN)
  std::vector<double> levels;  // lutN: the 2^N levels given in the spec (else k-means learns them)
  // autoN: scheme is kInt until resolve_sign() sees the data; `asymmetric` then says what
  // the signed case gets (true unless `:sym`)
  bool auto_sign = false;

  bool is_float() const { return scheme == Scheme::kFloat; }
  bool is_uniform() const {
    return scheme == Scheme::kInt || scheme == Scheme::kUInt || scheme == Scheme::kFixed ||
           scheme == Scheme::kUFixed;
  }
  // MX and NVFP4: scales computed from each block of the tensor
  bool is_block() const { return scheme == Scheme::kMx || scheme == Scheme::kNvfp4; }
  // fixed point (Qm.n): the step is 2^-n, set by the spec, never calibrated
  bool is_fixed_point() const { return scheme == Scheme::kFixed || scheme == Scheme::kUFixed; }
  bool is_signed() const {
    return scheme == Scheme::kInt || scheme == Scheme::kFixed || scheme == Scheme::kLog ||
           scheme == Scheme::kBinary || scheme == Scheme::kTernary || scheme == Scheme::kMinifloat ||
           scheme == Scheme::kMx || scheme == Scheme::kNvfp4 || scheme == Scheme::kNf4 || scheme == Scheme::kLut;
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

// Minifloat element formats eXmY (1 <= X <= 8, 0 <= Y <= 10), following the OCP 8-bit
// (OFP8) and Microscaling (MX v1.0) specifications where they define the format:
//   X >= 5            IEEE 754 style: the top exponent code holds inf and NaN (E5M2)
//   X <= 4, N >= 8    the top code S.1..1.1..1 alone is NaN (E4M3, "fn")
//   N <= 7            every code is a number, no inf or NaN (FP6 E3M2/E2M3, FP4 E2M1)
// Values: exponent code 0 is subnormal, 2^(1 - bias) * m / 2^Y; code e > 0 is
// 2^(e - bias) * (1 + m / 2^Y), bias = 2^(X-1) - 1.
enum class MinifloatSpecial { kIeee, kNanOnly, kNone };
MinifloatSpecial minifloat_special(int exp_bits, int man_bits);
double minifloat_max(int exp_bits, int man_bits);  // the largest finite value (E4M3: 448)

// Parses the short form. Modifiers follow the base after ':' in any order:
//   asym | sym | narrow | pow2scale | per_tensor | per_channel | axis=K | group=G |
//   round=half_even|half_away|floor|stochastic | lsq | pact | threshold=T |
//   levels=v1/v2/... (lutN: its 2^N levels, ascending, instead of k-means)
// and the bases: float | intN | uintN | autoN | logN | fixed:Qm.n | ufixed:Qm.n | fpN:eXmY |
// bf16 (fp16:e8m7) | mxfpN:eXmY | mxfp4 | mxintN | nvfp4 | nf4 | lutN | binary | ternary;
// block=K for MX/NVFP4
// Throws anybit::Error naming the text and what was expected.
QuantSpec parse_spec(const std::string& text);

const char* rounding_name(Rounding r);
Rounding parse_rounding(const std::string& name);

}  // namespace anybit
