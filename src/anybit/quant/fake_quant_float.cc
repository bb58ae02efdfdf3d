// Fake quantization to float formats: minifloats (fpN:eXmY); see fake_quant.h for the math.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/fake_quant_internal.h"
#include "anybit/quant/spec.h"

// ---------------------------------------------------------------------------------
// Minifloat
// ---------------------------------------------------------------------------------

namespace anybit {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace fq;  // NOLINT: the kernels' shared helpers

void check_minifloat(int64_t exp_bits, int64_t man_bits) {
  if (exp_bits < 1 || exp_bits > 8 || man_bits < 0 || man_bits > 10)
    throw Error("fake_quant_minifloat: format e" + std::to_string(exp_bits) + "m" + std::to_string(man_bits) +
                " is outside 1 <= X <= 8 exponent and 0 <= Y <= 10 mantissa bits");
}

// 2^k as a double, for -1022 <= k <= 1023
inline double pow2d(int k) {
  const uint64_t b = static_cast<uint64_t>(k + 1023) << 52;
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

// Adding and subtracting 1.5 * 2^52 rounds a double to the nearest integer, ties to even,
// for |v| < 2^51 (here v < 2^12).
constexpr double kRoundMagicD = 6755399441055744.0;

inline uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}
inline float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Adding and subtracting 1.5 * 2^23 rounds a float to the nearest integer, ties to even, for
// |v| < 2^22 (here v < 2^12).
constexpr float kRoundMagicF = 12582912.0f;

// The cast in float32 only and branch-free, so that the loops over it vectorize. For
// exp_bits <= 7, where 2^(man - e) and 2^(e - man) are normal floats, and man >= 1 (without
// mantissa bits ties need the code's parity: MinifloatCast's scalar cast does those); the same
// values as the scalar cast (the tests hold them together).
inline float minifloat_cast_f(float v, int man, int emin, float max) {
  const uint32_t vb = bits_of(v);
  const uint32_t sign = vb & 0x80000000u;
  float a = float_of(vb & 0x7fffffffu);
  a = a > max ? max : a;  // saturating, inf too; NaN stays NaN
  int32_t e = static_cast<int32_t>(bits_of(a) >> 23) - 127;
  e = e < emin ? emin : e;
  const float up = float_of(static_cast<uint32_t>(man - e + 127) << 23);    // 2^(man - e)
  const float down = float_of(static_cast<uint32_t>(e - man + 127) << 23);  // 2^(e - man)
  const float t = a * up;
  const float r = (t + kRoundMagicF) - kRoundMagicF;
  return float_of(bits_of(r * down) | sign);
}

// y[i] = cast(x[i] * inv) * sc
__attribute__((noinline)) void minifloat_span(const float* __restrict x, float* __restrict y, int64_t n, float inv,
                                              float sc, int man, int emin, float max) {
  for (int64_t i = 0; i < n; ++i) y[i] = minifloat_cast_f(x[i] * inv, man, emin, max) * sc;
}

// y[i] = cast(x[i] * inv[i]) * sc[i]
__attribute__((noinline)) void minifloat_span_scaled(const float* __restrict x, float* __restrict y, int64_t n,
                                                     const float* __restrict inv, const float* __restrict sc, int man,
                                                     int emin, float max) {
  for (int64_t i = 0; i < n; ++i) y[i] = minifloat_cast_f(x[i] * inv[i], man, emin, max) * sc[i];
}

// MXINT elements of b bits: y[i] = clamp(round_half_even(x[i] * inv[i] * 2^(b-2)), +-qmax) * 2^-(b-2) * sc[i]
// (|x * inv| < 2 here: the rounding trick is exact)
__attribute__((noinline)) void mxint_span_scaled(const float* __restrict x, float* __restrict y, int64_t n,
                                                 const float* __restrict inv, const float* __restrict sc, float up,
                                                 float step, float qmax) {
  for (int64_t i = 0; i < n; ++i) {
    float r = ((x[i] * inv[i]) * up + kRoundMagicF) - kRoundMagicF;
    r = r > qmax ? qmax : r;
    r = r < -qmax ? -qmax : r;
    y[i] = r * step * sc[i];
  }
}

struct MinifloatCast {
  int exp_bits, man, emin, bias;
  double max;
  MinifloatCast(int64_t e, int64_t m)
      : exp_bits(static_cast<int>(e)), man(static_cast<int>(m)), emin(2 - (1 << (e - 1))), bias((1 << (e - 1)) - 1),
        max(minifloat_max(static_cast<int>(e), static_cast<int>(m))) {}
  // y[i] = cast(x[i] * inv) * sc over a span
  void span(const float* x, float* y, int64_t n, float inv, float sc) const {
    if (exp_bits <= 7 && man >= 1) return minifloat_span(x, y, n, inv, sc, man, emin, static_cast<float>(max));
    for (int64_t i = 0; i < n; ++i) y[i] = (*this)(x[i] * inv) * sc;
  }
  void span(const float* x, float* y, int64_t n, const float* inv, const float* sc) const {
    if (exp_bits <= 7 && man >= 1)
      return minifloat_span_scaled(x, y, n, inv, sc, man, emin, static_cast<float>(max));
    for (int64_t i = 0; i < n; ++i) y[i] = (*this)(x[i] * inv[i]) * sc[i];
  }
  // the cast of a float32 value (docs/design.md): nearest, ties to the even code, saturating
  float operator()(float v) const {
    if (v != v) return v;  // NaN
    const float a = std::fabs(v);
    if (a >= max) return std::copysign(static_cast<float>(max), v);
    uint32_t bits;
    std::memcpy(&bits, &a, sizeof bits);
    const int ef = static_cast<int>(bits >> 23);  // float32's biased exponent (0: zero or subnormal)
    const int e = ef == 0 ? emin : std::max(ef - 127, emin);  // the format's exponent of a
    const double t = static_cast<double>(a) * pow2d(man - e);   // a / ulp, exact
    double r = (t + kRoundMagicD) - kRoundMagicD;
    // without mantissa bits the neighbours 2^e and 2^(e+1) are codes e + bias and e + bias + 1:
    // a tie goes to the even one
    if (man == 0 && t == 1.5 && ((e + bias) & 1) == 0) r = 1.0;
    return std::copysign(static_cast<float>(r * pow2d(e - man)), v);
  }
};

}  // namespace

std::vector<double> minifloat_values(int exp_bits, int man_bits) {
  check_minifloat(exp_bits, man_bits);
  const int bias = (1 << (exp_bits - 1)) - 1, top = (1 << exp_bits) - 1;
  const MinifloatSpecial sp = minifloat_special(exp_bits, man_bits);
  std::vector<double> out;
  for (int ec = 0; ec <= top; ++ec) {
    if (ec == top && sp == MinifloatSpecial::kIeee) break;  // inf and NaN
    for (int mc = 0; mc < (1 << man_bits); ++mc) {
      if (ec == top && mc == (1 << man_bits) - 1 && sp == MinifloatSpecial::kNanOnly) break;
      const double m = static_cast<double>(mc) / (1 << man_bits);
      out.push_back(ec == 0 ? std::ldexp(m, 1 - bias) : std::ldexp(1.0 + m, ec - bias));
    }
  }
  return out;
}

at::Tensor fake_quant_minifloat_reference(const at::Tensor& x_in, const at::Tensor& scale, int64_t axis,
                                          int64_t group_size, int64_t exp_bits, int64_t man_bits) {
  const std::vector<double> values = minifloat_values(static_cast<int>(exp_bits), static_cast<int>(man_bits));
  return reference_map(x_in, scale, axis, group_size, "fake_quant_minifloat", [&](float v, int64_t, int64_t) {
    if (std::isnan(v)) return v;
    const double a = std::fabs(static_cast<double>(v));
    // the nearest value; between two, the one with the even code (index)
    size_t k = std::lower_bound(values.begin(), values.end(), a) - values.begin();
    if (k == values.size()) {
      k = values.size() - 1;  // beyond the largest: saturate
    } else if (k > 0 && values[k] != a) {
      const double below = a - values[k - 1], above = values[k] - a;
      if (below < above || (below == above && (k - 1) % 2 == 0)) k = k - 1;
    }
    return std::copysign(static_cast<float>(values[k]), v);
  });
}

at::Tensor fake_quant_minifloat_forward(const at::Tensor& x_in, const at::Tensor& scale, int64_t axis,
                                        int64_t group_size, int64_t exp_bits, int64_t man_bits) {
  check_minifloat(exp_bits, man_bits);
  // one scale: element-wise, so any dense layout is read and written as it lies (a channels-last
  // feature map from the fused evaluation is not copied twice)
  const bool as_is = scale.numel() == 1 && x_in.is_non_overlapping_and_dense();
  const at::Tensor x = as_is ? x_in : x_in.contiguous();
  const ChannelLayout L = as_is ? ChannelLayout{1, x.numel()}
                                : channel_layout(x, scale.numel(), axis, group_size, "fake_quant_minifloat");
  const std::vector<float> s = float_params(scale, L.channels);
  const MinifloatCast cast(exp_bits, man_bits);
  at::Tensor y = at::empty_like(x);  // the same strides
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for_each_channel_run(x.numel(), L, [&](int64_t b, int64_t e, int64_t c) {
    const float sc = s[c], inv = 1.0f / sc;
    cast.span(px + b, py + b, e - b, inv, sc);
  });
  return y;
}

at::Tensor fake_quant_minifloat_torchops(const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                                         int64_t group_size, int64_t exp_bits, int64_t man_bits) {
  check_minifloat(exp_bits, man_bits);
  const ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_minifloat");
  const at::Tensor s = per_channel_view(scale.detach().to(x.options()), x, axis, group_size, L.channels);
  const at::Tensor xs = grouped(x, group_size);
  const at::Tensor v = xs * (1.0 / s);
  const double max = minifloat_max(static_cast<int>(exp_bits), static_cast<int>(man_bits));
  const int emin = 2 - (1 << (exp_bits - 1)), bias = (1 << (exp_bits - 1)) - 1;
  const at::Tensor a = v.abs().to(at::kDouble).clamp_max(max);  // saturating, inf too (NaN stays)
  const at::Tensor e = at::floor(at::log2(a.clamp_min(std::ldexp(1.0, emin)))).clamp_min(emin);
  const at::Tensor t = a * at::exp2(man_bits - e);
  at::Tensor r = at::round(t);  // half to even
  if (man_bits == 0) r = at::where((t == 1.5) & (at::remainder(e + bias, 2) == 0), at::ones_like(r), r);
  at::Tensor q = at::minimum(r * at::exp2(e - man_bits), at::full({}, max, a.options()));
  q = at::where(at::isnan(v), v.to(at::kDouble), q * at::sign(v).to(at::kDouble));
  // sign(0) = 0 keeps zero, also -0.0 becomes +0.0 (equal in value)
  return (q.to(x.scalar_type()) * s).reshape(x.sizes());
}

namespace {
class FakeQuantMinifloatFn : public torch::autograd::Function<FakeQuantMinifloatFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale, int64_t axis,
                            int64_t group_size, int64_t exp_bits, int64_t man_bits, double grad_factor) {
    at::Tensor y = fast_path_ok(x) ? fake_quant_minifloat_forward(x, scale, axis, group_size, exp_bits, man_bits)
                                   : fake_quant_minifloat_torchops(x, scale, axis, group_size, exp_bits, man_bits);
    ctx->save_for_backward({x, scale, y});
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["group"] = group_size;
    ctx->saved_data["max"] = minifloat_max(static_cast<int>(exp_bits), static_cast<int>(man_bits));
    ctx->saved_data["grad_factor"] = grad_factor;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &y = saved[2];
    const int64_t axis = ctx->saved_data["axis"].toInt(), group = ctx->saved_data["group"].toInt();
    const double max = ctx->saved_data["max"].toDouble();
    const ChannelLayout L = channel_layout(x, scale.numel(), axis, group, "fake_quant_minifloat");
    const at::Tensor s = per_channel_view(scale.detach().to(x.options()), x, axis, group, L.channels);
    const at::Tensor xs = grouped(x, group), ys = grouped(y, group), g = grouped(grads[0], group);
    const at::Tensor v = xs * (1.0 / s);
    const at::Tensor inside = v.abs() <= max;
    const at::Tensor dx = (g * inside).reshape(x.sizes());
    at::Tensor ds;
    if (scale.requires_grad()) {
      const at::Tensor d = at::where(inside, (ys - xs) / s, at::sign(v) * max) * g;
      std::vector<int64_t> dims;
      for (int64_t k = 0; k < d.dim(); ++k)
        if (L.channels == 1 || (group > 0 ? k != 0 : k != axis)) dims.push_back(k);
      ds = (d.sum(dims) * ctx->saved_data["grad_factor"].toDouble()).reshape(scale.sizes()).to(scale.options());
    }
    return {dx, ds, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor fake_quant_minifloat(const at::Tensor& x, const at::Tensor& scale, int64_t axis, int64_t group_size,
                                int64_t exp_bits, int64_t man_bits, double grad_factor) {
  check_minifloat(exp_bits, man_bits);
  return FakeQuantMinifloatFn::apply(x, scale, axis, group_size, exp_bits, man_bits, grad_factor);
}

}  // namespace anybit

// ---------------------------------------------------------------------------------
// Block formats: MX and NVFP4
// ---------------------------------------------------------------------------------

namespace anybit {
namespace {

struct BlockLayout {
  int64_t axis, outer, length, inner, blocks, block;
};

// A channels-last 4-D tensor blocked along its channels: in memory, rows of C contiguous
// channels, blocked along the last dim of [N*H*W, C].
bool channels_last_blocks(const at::Tensor& x, int64_t axis) {
  return x.dim() == 4 && (axis < 0 || axis == 1) && x.size(1) > 1 &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

BlockLayout block_layout(const at::Tensor& x, int64_t axis, int64_t block, const char* what) {
  if (block < 1) throw Error(std::string(what) + ": block size must be positive, got " + std::to_string(block));
  if (x.dim() == 0) throw Error(std::string(what) + ": a block format needs a tensor with at least one dimension");
  if (axis < 0) axis = x.dim() == 4 ? 1 : x.dim() - 1;
  if (axis >= x.dim())
    throw Error(std::string(what) + ": block axis " + std::to_string(axis) + " is outside a tensor of rank " +
                std::to_string(x.dim()));
  BlockLayout L;
  L.axis = axis;
  L.outer = 1;
  for (int64_t d = 0; d < axis; ++d) L.outer *= x.size(d);
  L.length = x.size(axis);
  L.inner = 1;
  for (int64_t d = axis + 1; d < x.dim(); ++d) L.inner *= x.size(d);
  L.block = block;
  L.blocks = (L.length + block - 1) / block;
  return L;
}

// Calls fn(first, count, stride) for every block: `count` elements x[first + k * stride], in
// parallel over (outer, block) pairs; fn gets the pair's blocks for all inner positions at once
// as fn(base, count, inner) (element (k, j) at base + k * inner + j).
// fn(base, count, scratch) for every (outer, block) pair, `scratch` a per-thread buffer of
// 3 * max(inner, block) floats.
template <typename Fn>
void for_each_block_row(const BlockLayout& L, Fn fn) {
  at::parallel_for(0, L.outer * L.blocks, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scratch(3 * std::max(L.inner, L.block));
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / L.blocks, blk = t % L.blocks;
      const int64_t k0 = blk * L.block, count = std::min(L.block, L.length - k0);
      fn((o * L.length + k0) * L.inner, count, scratch.data());
    }
  });
}

// y = span(x, inv, sc) with each block's (inv, sc) = scale_of(max|block|, holds NaN), for
// every block. Contiguous blocks (inner == 1) go in segments of 64 blocks, their scales spread
// over the elements, one span per segment; strided blocks one span per element row k over the
// inner positions.
template <typename ScaleOf, typename Span>
void apply_blocks(const BlockLayout& L, const float* px, float* py, ScaleOf scale_of, Span span) {
  if (L.inner == 1) {
    const int64_t seg = 64 * L.block, segs = (L.length + seg - 1) / seg;
    at::parallel_for(0, L.outer * segs, 1, [&](int64_t b, int64_t e) {
      std::vector<float> inv(seg), sc(seg);
      for (int64_t t = b; t < e; ++t) {
        const int64_t s0 = (t % segs) * seg, n = std::min(seg, L.length - s0);
        const float* x = px + (t / segs) * L.length + s0;
        float* y = py + (t / segs) * L.length + s0;
        for (int64_t k0 = 0; k0 < n; k0 += L.block) {
          const int64_t c = std::min(L.block, n - k0);
          float m = 0;
          int nan = 0;
          for (int64_t k = 0; k < c; ++k) {
            const float a = std::fabs(x[k0 + k]);
            m = a > m ? a : m;
            nan |= a != a;
          }
          const std::pair<float, float> is = scale_of(m, nan != 0);
          std::fill(inv.data() + k0, inv.data() + k0 + c, is.first);
          std::fill(sc.data() + k0, sc.data() + k0 + c, is.second);
        }
        span(x, y, n, inv.data(), sc.data());
      }
    });
    return;
  }
  const int64_t width = std::max(L.inner, L.block);
  for_each_block_row(L, [&](int64_t base, int64_t count, float* scratch) {
    float *amax = scratch, *inv = scratch + width, *sc = scratch + 2 * width;
    std::fill(amax, amax + L.inner, 0.0f);
    for (int64_t k = 0; k < count; ++k)
      for (int64_t j = 0; j < L.inner; ++j) {
        const float a = std::fabs(px[base + k * L.inner + j]);
        amax[j] = (a > amax[j] || a != a) ? a : amax[j];  // NaN sticks
      }
    for (int64_t j = 0; j < L.inner; ++j) {
      const std::pair<float, float> is = scale_of(amax[j], amax[j] != amax[j]);
      inv[j] = is.first;
      sc[j] = is.second;
    }
    for (int64_t k = 0; k < count; ++k) span(px + base + k * L.inner, py + base + k * L.inner, L.inner, inv, sc);
  });
}

// The references' plain walk: fn(indices) with the element indices of every block, one block
// after another.
void for_each_block_plain(const BlockLayout& L, const std::function<void(const std::vector<int64_t>&)>& fn) {
  std::vector<int64_t> idx;
  for (int64_t o = 0; o < L.outer; ++o)
    for (int64_t j = 0; j < L.inner; ++j)
      for (int64_t k0 = 0; k0 < L.length; k0 += L.block) {
        idx.clear();
        for (int64_t k = k0; k < std::min(k0 + L.block, L.length); ++k) idx.push_back((o * L.length + k) * L.inner + j);
        fn(idx);
      }
}

// The largest exponent of the element format: floor(log2 of its largest value).
int element_emax(int64_t exp_bits, int64_t man_bits) {
  if (exp_bits == 0) return 0;  // MXINT: k * 2^-(b-2) < 2
  return static_cast<int>(std::floor(std::log2(minifloat_max(static_cast<int>(exp_bits), static_cast<int>(man_bits)))));
}

void check_mx(int64_t exp_bits, int64_t man_bits) {
  if (exp_bits == 0) {
    if (man_bits < 2 || man_bits > 16)
      throw Error("fake_quant_mx: MXINT elements need 2..16 bits, got " + std::to_string(man_bits));
    return;
  }
  check_minifloat(exp_bits, man_bits);
}

// floor(log2 a) of a finite float a > 0 from its bits (subnormals: below -126)
inline int floor_log2(float a) {
  uint32_t bits;
  std::memcpy(&bits, &a, sizeof bits);
  const int ef = static_cast<int>(bits >> 23);
  if (ef > 0) return ef - 127;
  return static_cast<int>(std::floor(std::log2(static_cast<double>(a))));
}

}  // namespace

at::Tensor fake_quant_mx_forward(const at::Tensor& x_in, int64_t axis, int64_t block, int64_t exp_bits,
                                 int64_t man_bits) {
  check_mx(exp_bits, man_bits);
  const at::Tensor xf = x_in.detach().to(at::kCPU, at::kFloat);
  const bool cl = channels_last_blocks(xf, axis);  // read and written as it lies
  const at::Tensor x = cl ? xf : xf.contiguous();
  const BlockLayout L = cl ? block_layout(x.permute({0, 2, 3, 1}).reshape({-1, x.size(1)}), -1, block, "fake_quant_mx")
                           : block_layout(x, axis, block, "fake_quant_mx");
  const int emax = element_emax(exp_bits, man_bits);
  const MinifloatCast cast(exp_bits == 0 ? 1 : exp_bits, exp_bits == 0 ? 0 : man_bits);  // unused for MXINT
  const float int_step = exp_bits == 0 ? std::ldexp(1.0f, -static_cast<int>(man_bits - 2)) : 0.0f;
  const float int_max = exp_bits == 0 ? static_cast<float>((int64_t{1} << (man_bits - 1)) - 1) : 0.0f;
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  const float up = exp_bits == 0 ? std::ldexp(1.0f, static_cast<int>(man_bits - 2)) : 0.0f;
  auto scale_of = [&](float m, bool nan) -> std::pair<float, float> {
    if (nan || !std::isfinite(m)) return {NAN, NAN};  // inf or NaN in the block: the whole block is NaN
    const int e = std::min(std::max((m > 0 ? floor_log2(m) : -127) - emax, -127), 127);
    return {std::ldexp(1.0f, -e), std::ldexp(1.0f, e)};  // 2^-e <= 2^127: a float
  };
  apply_blocks(L, px, py, scale_of, [&](const float* xs, float* ys, int64_t n, const float* inv, const float* X) {
    if (exp_bits == 0) {
      mxint_span_scaled(xs, ys, n, inv, X, up, int_step, int_max);
    } else {
      cast.span(xs, ys, n, inv, X);
    }
  });
  return y.to(x_in.scalar_type());
}

at::Tensor fake_quant_mx_reference(const at::Tensor& x_in, int64_t axis, int64_t block, int64_t exp_bits,
                                   int64_t man_bits) {
  check_mx(exp_bits, man_bits);
  const at::Tensor x = x_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const BlockLayout L = block_layout(x, axis, block, "fake_quant_mx");
  const double elem_max = exp_bits == 0 ? (std::ldexp(1.0, static_cast<int>(man_bits - 1)) - 1) *
                                              std::ldexp(1.0, -static_cast<int>(man_bits - 2))
                                        : minifloat_max(static_cast<int>(exp_bits), static_cast<int>(man_bits));
  const int emax = static_cast<int>(std::floor(std::log2(elem_max)));
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for_each_block_plain(L, [&](const std::vector<int64_t>& block_idx) {
    double amax = 0;
    bool finite = true;
    for (int64_t i : block_idx) {
      finite = finite && std::isfinite(px[i]);
      amax = std::max(amax, std::fabs(static_cast<double>(px[i])));
    }
    const double e = amax > 0 ? std::floor(std::log2(amax)) - emax : -127;
    const double X = std::exp2(std::min(std::max(e, -127.0), 127.0));
    for (int64_t i : block_idx) {
      if (!finite) {
        py[i] = NAN;
        continue;
      }
      const at::Tensor v = at::full({1}, static_cast<float>(px[i] / X));
      float q;
      if (exp_bits == 0) {
        const double step = std::ldexp(1.0, -static_cast<int>(man_bits - 2));
        q = static_cast<float>(std::min(std::max(std::nearbyint(v.item<float>() / step) * step, -elem_max), elem_max));
      } else {
        q = fake_quant_minifloat_reference(v, at::ones({1}), -1, 0, exp_bits, man_bits).item<float>();
      }
      py[i] = static_cast<float>(q * X);
    }
  });
  return y.to(x_in.scalar_type());
}

namespace {

constexpr double kE2M1Max = 6.0;

void check_tensor_scale(const at::Tensor& ts) {
  if (ts.numel() != 1) throw Error("fake_quant_nvfp4: the tensor scale must hold one value");
  const float t = ts.detach().to(at::kCPU, at::kFloat).item<float>();
  if (!(t > 0) || !std::isfinite(t))
    throw Error("fake_quant_nvfp4: the tensor scale " + std::to_string(t) + " is not a positive number");
}

}  // namespace

at::Tensor fake_quant_nvfp4_forward(const at::Tensor& x_in, const at::Tensor& tensor_scale, int64_t axis,
                                    int64_t block) {
  check_tensor_scale(tensor_scale);
  const at::Tensor xf = x_in.detach().to(at::kCPU, at::kFloat);
  const bool cl = channels_last_blocks(xf, axis);  // read and written as it lies
  const at::Tensor x = cl ? xf : xf.contiguous();
  const BlockLayout L = cl ? block_layout(x.permute({0, 2, 3, 1}).reshape({-1, x.size(1)}), -1, block,
                                          "fake_quant_nvfp4")
                           : block_layout(x, axis, block, "fake_quant_nvfp4");
  const float ts = tensor_scale.detach().to(at::kCPU, at::kFloat).item<float>(), gs = 1.0f / ts;
  const MinifloatCast e2m1(2, 1), e4m3(4, 3);
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  auto scale_of = [&](float m, bool nan) -> std::pair<float, float> {
    if (nan) return {NAN, NAN};
    const float d = e4m3(m / static_cast<float>(kE2M1Max) * gs) * ts;  // inf: E4M3 saturates
    return {d != 0 ? 1.0f / d : 0.0f, d};  // d = 0: e2m1(x * 0) * 0, 0 (NaN stays NaN)
  };
  apply_blocks(L, px, py, scale_of, [&](const float* xs, float* ys, int64_t n, const float* inv, const float* d) {
    e2m1.span(xs, ys, n, inv, d);
  });
  return y.to(x_in.scalar_type());
}

at::Tensor fake_quant_nvfp4_reference(const at::Tensor& x_in, const at::Tensor& tensor_scale, int64_t axis,
                                      int64_t block) {
  check_tensor_scale(tensor_scale);
  const at::Tensor x = x_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const BlockLayout L = block_layout(x, axis, block, "fake_quant_nvfp4");
  const float ts = tensor_scale.detach().to(at::kCPU, at::kFloat).item<float>(), gs = 1.0f / ts;
  auto cast = [](float v, int e, int m) {
    return fake_quant_minifloat_reference(at::full({1}, v), at::ones({1}), -1, 0, e, m).item<float>();
  };
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for_each_block_plain(L, [&](const std::vector<int64_t>& block_idx) {
    float amax = 0;
    for (int64_t i : block_idx) amax = std::isnan(px[i]) ? NAN : std::max(amax, std::fabs(px[i]));
    const float d = cast(amax / static_cast<float>(kE2M1Max) * gs, 4, 3) * ts;
    for (int64_t i : block_idx) py[i] = d != 0 ? cast(px[i] * (1.0f / d), 2, 1) * d : 0.0f * px[i];
  });
  return y.to(x_in.scalar_type());
}

namespace {
// straight-through: the block formats' forward with dx = dy
class StraightThroughFn : public torch::autograd::Function<StraightThroughFn> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, const at::Tensor& y) { return y; }
  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], at::Tensor()}; }
};
}  // namespace

at::Tensor fake_quant_mx(const at::Tensor& x, int64_t axis, int64_t block, int64_t exp_bits, int64_t man_bits) {
  const at::Tensor y = fake_quant_mx_forward(x, axis, block, exp_bits, man_bits).to(x.device());
  return x.requires_grad() ? StraightThroughFn::apply(x, y) : y;
}

at::Tensor fake_quant_nvfp4(const at::Tensor& x, const at::Tensor& tensor_scale, int64_t axis, int64_t block) {
  const at::Tensor y = fake_quant_nvfp4_forward(x, tensor_scale, axis, block).to(x.device());
  return x.requires_grad() ? StraightThroughFn::apply(x, y) : y;
}

}  // namespace anybit
