// Fake quantization to codebooks (nf4, lutN); see fake_quant.h for the math.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/fake_quant_internal.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace fq;  // NOLINT: the kernels' shared helpers

struct Codebook {
  int64_t channels, size;  // levels per row
  bool shared;             // one row for every channel
  std::vector<float> levels;
  const float* row(int64_t c) const { return levels.data() + (shared ? 0 : c * size); }
};

Codebook codebook(const at::Tensor& levels, int64_t channels) {
  if (levels.dim() < 1 || levels.dim() > 2 || levels.size(-1) < 1)
    throw Error("fake_quant_lut: levels must be [L] or [C, L], got " + std::to_string(levels.dim()) + "-D");
  Codebook b;
  b.channels = channels;
  b.size = levels.size(-1);
  b.shared = levels.dim() == 1;
  if (!b.shared && levels.size(0) != channels)
    throw Error("fake_quant_lut: " + std::to_string(levels.size(0)) + " rows of levels for " +
                std::to_string(channels) + " channels");
  const at::Tensor l = levels.detach().to(at::kCPU, at::kFloat).contiguous();
  b.levels.assign(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
  for (int64_t r = 0; r < (b.shared ? 1 : channels); ++r)
    for (int64_t k = 1; k < b.size; ++k)
      if (!(b.row(r)[k - 1] <= b.row(r)[k])) throw Error("fake_quant_lut: the levels of a row must be sorted");
  return b;
}

// The index of the level nearest to v in sorted levels l[0, n); a tie goes to the even index.
inline int64_t nearest_level(const float* l, int64_t n, float v) {
  const int64_t hi = std::upper_bound(l, l + n, v) - l;  // first level > v
  if (hi == 0) return 0;
  if (hi == n) return n - 1;
  const float below = v - l[hi - 1], above = l[hi] - v;
  if (below < above) return hi - 1;
  if (above < below) return hi;
  return (hi - 1) % 2 == 0 ? hi - 1 : hi;
}

// The nearest level of each of v[0, n) in sorted levels l[0, L), as nearest_level() decides it,
// for small codebooks: the count, over each pair of neighbours (l[m], l[m+1]), of the upper one
// being strictly nearer (plus the ties that go up: m odd), one pass over the chunk per pair so
// that the passes vectorize.
constexpr int64_t kCountedLevels = 32, kChunk = 1024;
__attribute__((noinline)) void count_levels(const float* __restrict v, int32_t* __restrict k, int64_t n,
                                            const float* __restrict l, int64_t L) {
  for (int64_t i = 0; i < n; ++i) k[i] = 0;
  for (int64_t m = 0; m + 1 < L; ++m) {
    const float lo = l[m], hi = l[m + 1];
    const int32_t odd = static_cast<int32_t>(m & 1);
    for (int64_t i = 0; i < n; ++i) {
      const float below = v[i] - lo, above = hi - v[i];
      k[i] += static_cast<int32_t>(above < below) + (static_cast<int32_t>(above == below) & odd);
    }
  }
}

// x^ and each element's level index
void lut_forward(const at::Tensor& x, const at::Tensor& scale, const Codebook& b, const ChannelLayout& L,
                 at::Tensor* y, at::Tensor* index) {
  const std::vector<float> s = float_params(scale, L.channels);
  *y = at::empty_like(x);
  if (index) *index = at::empty_like(x, x.options().dtype(at::kLong));  // x's strides, as y
  const float* px = x.data_ptr<float>();
  float* py = y->data_ptr<float>();
  int64_t* pi = index ? index->data_ptr<int64_t>() : nullptr;
  for_each_channel_run(x.numel(), L, [&](int64_t beg, int64_t end, int64_t c) {
    const float sc = s[c], inv = 1.0f / sc;
    const float* l = b.row(c);
    if (b.size <= kCountedLevels) {
      float v[kChunk];
      int32_t k[kChunk];
      for (int64_t c0 = beg; c0 < end; c0 += kChunk) {
        const int64_t n = std::min(kChunk, end - c0);
        for (int64_t i = 0; i < n; ++i) v[i] = px[c0 + i] * inv;
        count_levels(v, k, n, l, b.size);
        for (int64_t i = 0; i < n; ++i) {
          const bool nan = v[i] != v[i];
          py[c0 + i] = nan ? v[i] : l[k[i]] * sc;
          if (pi) pi[c0 + i] = nan ? 0 : k[i];
        }
      }
      return;
    }
    for (int64_t i = beg; i < end; ++i) {
      const float v = px[i] * inv;
      if (v != v) {
        py[i] = v;
        if (pi) pi[i] = 0;
        continue;
      }
      const int64_t k = nearest_level(l, b.size, v);
      py[i] = l[k] * sc;
      if (pi) pi[i] = k;
    }
  });
}

}  // namespace

const std::vector<double>& nf4_levels() {
  // bitsandbytes' NF4 table (QLoRA, Dettmers et al. 2023)
  static const std::vector<double> l = {-1.0,
                                        -0.6961928009986877,
                                        -0.5250730514526367,
                                        -0.39491748809814453,
                                        -0.28444138169288635,
                                        -0.18477343022823334,
                                        -0.09105003625154495,
                                        0.0,
                                        0.07958029955625534,
                                        0.16093020141124725,
                                        0.24611230194568634,
                                        0.33791524171829224,
                                        0.44070982933044434,
                                        0.5626170039176941,
                                        0.7229568362236023,
                                        1.0};
  return l;
}

at::Tensor fake_quant_lut_reference(const at::Tensor& x_in, const at::Tensor& scale, const at::Tensor& levels,
                                    int64_t axis, int64_t group_size) {
  const Codebook b = codebook(levels, scale.numel());
  return reference_map(x_in, scale, axis, group_size, "fake_quant_lut", [&](float v, int64_t c, int64_t) {
    if (std::isnan(v)) return v;
    // every level's distance; the smallest wins, the even index among equals
    int64_t best = 0;
    for (int64_t k = 1; k < b.size; ++k) {
      const float d = std::fabs(v - b.row(c)[k]), db = std::fabs(v - b.row(c)[best]);
      if (d < db || (d == db && best % 2 == 1 && b.row(c)[k] != b.row(c)[best])) best = k;
    }
    return b.row(c)[best];
  });
}

namespace {
class FakeQuantLutFn : public torch::autograd::Function<FakeQuantLutFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& scale,
                            const at::Tensor& levels, int64_t axis, int64_t group_size, double grad_factor) {
    // one scale and one codebook: element-wise, so any dense layout is read and written as it
    // lies (a channels-last feature map of the fused evaluation is not copied twice)
    const at::Tensor xf = x_in.detach().to(at::kCPU, at::kFloat);
    const bool as_is = scale.numel() == 1 && levels.dim() == 1 && xf.is_non_overlapping_and_dense();
    const at::Tensor x = as_is ? xf : xf.contiguous();
    const ChannelLayout L = as_is ? ChannelLayout{1, x.numel()}
                                  : channel_layout(x, scale.numel(), axis, group_size, "fake_quant_lut");
    const Codebook b = codebook(levels, L.channels);
    const bool grads = scale.requires_grad() || levels.requires_grad();
    at::Tensor y, index;
    lut_forward(x, scale, b, L, &y, grads ? &index : nullptr);
    ctx->save_for_backward({x_in, scale, levels, index});
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["group"] = group_size;
    ctx->saved_data["grad_factor"] = grad_factor;
    return y.to(x_in.device(), x_in.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &levels = saved[2], &index = saved[3];
    const int64_t axis = ctx->saved_data["axis"].toInt(), group = ctx->saved_data["group"].toInt();
    const double g = ctx->saved_data["grad_factor"].toDouble();
    const ChannelLayout L = channel_layout(x, scale.numel(), axis, group, "fake_quant_lut");
    const at::Tensor s = per_channel_view(scale.detach().to(x.options()), x, axis, group, L.channels);
    const at::Tensor xs = grouped(x, group), dy = grouped(grads[0], group);
    const at::Tensor v = xs / s;
    // the first and last level of each element's row
    const at::Tensor lv = levels.detach().to(x.options());
    const at::Tensor lo = per_channel_view(levels.dim() == 1 ? lv.select(-1, 0).expand({L.channels}).contiguous()
                                                             : lv.select(-1, 0).contiguous(),
                                           x, axis, group, L.channels);
    const at::Tensor hi = per_channel_view(levels.dim() == 1 ? lv.select(-1, -1).expand({L.channels}).contiguous()
                                                             : lv.select(-1, -1).contiguous(),
                                           x, axis, group, L.channels);
    const at::Tensor inside = (v >= lo) & (v <= hi);
    const at::Tensor dx = (dy * inside).reshape(x.sizes());
    at::Tensor ds, dl;
    // channel of every element, for the per-channel sums
    auto channel_sum = [&](const at::Tensor& t) {  // t shaped like xs: sum per channel -> [C]
      if (L.channels == 1) return t.sum().reshape({1});
      if (group > 0) return t.sum(1);
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < t.dim(); ++d)
        if (d != axis) dims.push_back(d);
      return t.sum(dims);
    };
    if (scale.requires_grad() || levels.requires_grad()) {
      const at::Tensor k = grouped(index.to(x.device()), group);
      // the level each element chose, as a value
      at::Tensor chosen;
      if (levels.dim() == 1) {
        chosen = lv.index({k});
      } else {
        const at::Tensor ch = channel_index(xs, axis, group, L.channels);
        chosen = lv.index({ch, k});
      }
      if (scale.requires_grad())
        ds = (channel_sum(at::where(inside, chosen - v, chosen) * dy) * g).reshape(scale.sizes()).to(scale.options());
      if (levels.requires_grad()) {
        const at::Tensor contrib = (dy * s * g).expand_as(xs).contiguous();
        dl = at::zeros_like(lv);
        if (levels.dim() == 1) {
          dl.index_put_({k.reshape(-1)}, contrib.reshape(-1), /*accumulate=*/true);
        } else {
          const at::Tensor ch = channel_index(xs, axis, group, L.channels);
          dl.index_put_({ch.expand_as(k).reshape(-1), k.reshape(-1)}, contrib.reshape(-1), true);
        }
        dl = dl.to(levels.options());
      }
    }
    return {dx, ds, dl, at::Tensor(), at::Tensor(), at::Tensor()};
  }

  // the channel (row of levels) of each element of xs, broadcastable against it
  static at::Tensor channel_index(const at::Tensor& xs, int64_t axis, int64_t group, int64_t channels) {
    const at::Tensor c = at::arange(channels, xs.options().dtype(at::kLong));
    if (group > 0) return c.reshape({channels, 1}).expand_as(xs);
    std::vector<int64_t> shape(xs.dim(), 1);
    shape[axis] = channels;
    return c.reshape(shape).expand_as(xs);
  }
};
}  // namespace

at::Tensor fake_quant_lut(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& levels, int64_t axis,
                          int64_t group_size, double grad_factor) {
  return FakeQuantLutFn::apply(x, scale, levels, axis, group_size, grad_factor);
}

}  // namespace anybit
