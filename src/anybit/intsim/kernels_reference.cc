// Reference twins of the integer kernels: the specification in code. Plain loops in int64
// that follow the formula of kernels.h term by term, every addition through the declared
// accumulator. Slow on purpose; the tests compare every fast variant to these.
#include "anybit/intsim/kernels.h"

namespace anybit {
namespace intsim {

void conv2d_int_reference(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                          const int32_t* w, const std::vector<int32_t>& w_zero_point,
                          const int32_t* bias, const AccumulatorSpec& spec, int64_t* acc,
                          int64_t* overflows) {
  const int64_t OH = g.out_h(), OW = g.out_w();
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  Accumulator reg(spec);
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t o = 0; o < g.out_channels; ++o) {
      const int64_t grp = o / Og;
      const int64_t zw = w_zero_point.size() == 1 ? w_zero_point[0] : w_zero_point[o];
      for (int64_t oy = 0; oy < OH; ++oy) {
        for (int64_t ox = 0; ox < OW; ++ox) {
          int64_t a = 0;
          for (int64_t c = 0; c < Cg; ++c) {
            for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
              for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
                const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
                const bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
                const int64_t ic = grp * Cg + c;
                // padding is the zero point: it contributes (z_x - z_x) * w = 0
                const int64_t xv =
                    inside ? x[((n * g.in_channels + ic) * g.in_h + iy) * g.in_w + ix] : x_zero_point;
                const int64_t wv = w[((o * Cg + c) * g.kernel_h + ky) * g.kernel_w + kx];
                a = reg.add(a, (xv - x_zero_point) * (wv - zw));
              }
            }
          }
          if (bias) a = reg.add(a, bias[o]);
          acc[((n * g.out_channels + o) * OH + oy) * OW + ox] = a;
        }
      }
    }
  }
  if (overflows) *overflows += reg.overflows();
}

void linear_int_reference(int64_t batch, int64_t in_features, int64_t out_features,
                          const int32_t* x, int32_t x_zero_point, const int32_t* w,
                          const std::vector<int32_t>& w_zero_point, const int32_t* bias,
                          const AccumulatorSpec& spec, int64_t* acc, int64_t* overflows) {
  Accumulator reg(spec);
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t o = 0; o < out_features; ++o) {
      const int64_t zw = w_zero_point.size() == 1 ? w_zero_point[0] : w_zero_point[o];
      int64_t a = 0;
      for (int64_t i = 0; i < in_features; ++i) {
        const int64_t xv = x[n * in_features + i];
        const int64_t wv = w[o * in_features + i];
        a = reg.add(a, (xv - x_zero_point) * (wv - zw));
      }
      if (bias) a = reg.add(a, bias[o]);
      acc[n * out_features + o] = a;
    }
  }
  if (overflows) *overflows += reg.overflows();
}

void adaptive_avgpool2d_sum_reference(const Pool2dGeometry& g, const int32_t* x,
                                      int32_t x_zero_point, Accumulator& acc, int64_t* sum) {
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t c = 0; c < g.channels; ++c) {
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          // [floor(i * in / out), ceil((i + 1) * in / out)) along each axis
          const int64_t y0 = oy * g.in_h / g.out_h, y1 = ((oy + 1) * g.in_h + g.out_h - 1) / g.out_h;
          const int64_t x0 = ox * g.in_w / g.out_w, x1 = ((ox + 1) * g.in_w + g.out_w - 1) / g.out_w;
          int64_t s = 0;
          for (int64_t iy = y0; iy < y1; ++iy) {
            for (int64_t ix = x0; ix < x1; ++ix) {
              const int64_t xv = x[((n * g.channels + c) * g.in_h + iy) * g.in_w + ix];
              s = acc.add(s, xv - x_zero_point);
            }
          }
          sum[((n * g.channels + c) * g.out_h + oy) * g.out_w + ox] = s;
        }
      }
    }
  }
}

int32_t add_int_reference(const AddParams& p, int32_t a, int32_t b) {
  auto scaled = [&](int32_t q, int32_t z, DyadicMultiplier m) -> int64_t {
    const int64_t shifted = (static_cast<int64_t>(q) - z) * (int64_t{1} << p.left_shift);
    // requantize with zero point 0 and the full int32 range is multiply_by_dyadic
    return requantize_dyadic_reference(shifted, m, 0, INT32_MIN, INT32_MAX);
  };
  int64_t sum = scaled(a, p.a_zero_point, p.a_multiplier) + scaled(b, p.b_zero_point, p.b_multiplier);
  if (sum > INT32_MAX) sum = INT32_MAX;
  if (sum < INT32_MIN) sum = INT32_MIN;
  return requantize_dyadic_reference(sum, p.out_multiplier, p.out_zero_point, p.qmin, p.qmax);
}

}  // namespace intsim
}  // namespace anybit
