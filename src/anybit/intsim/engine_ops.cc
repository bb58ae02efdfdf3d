// One op of a chunk of the batch (Engine::Impl::run_op), and the layers whose exact sums a
// sum-perturbing MAC model perturbs (run_perturbed).
#include <algorithm>
#include <climits>
#include <cmath>

#include "anybit/intsim/engine_internal.h"

namespace anybit {
namespace intsim {
namespace {

// v ([channels][rows][cols]) into y laid out as `a` says.
void place_noise(const int32_t* v, int64_t channels, int64_t rows, int64_t cols, const AddLayout& a, int32_t* y) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t r = 0; r < rows; ++r)
      std::copy(v + (c * rows + r) * cols, v + (c * rows + r + 1) * cols, y + c * a.plane + r * a.row);
}

// The exact sum (without the bias) of output element `pos` (oy * out_w + ox) of channel c
// of one image x ([C][H][W]); w: w - z_w of channel c, [C/groups][kernel_h][kernel_w]. The
// fast kernels' layers never overflow, so this is their sum.
int64_t conv_dot(const Conv2dGeometry& g, const int32_t* x, int32_t zx, const int32_t* w, int64_t c, int64_t pos) {
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t oy = pos / g.out_w(), ox = pos % g.out_w();
  const int64_t y0 = oy * g.stride_h - g.pad_h, x0 = ox * g.stride_w - g.pad_w;
  int64_t s = 0;
  if (g.dilation_w == 1 && y0 >= 0 && x0 >= 0 && y0 + (g.kernel_h - 1) * g.dilation_h < g.in_h &&
      x0 + g.kernel_w <= g.in_w) {  // the window inside the image: rows of kernel_w values
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const int32_t* plane = x + ((c / Og) * Cg + ci) * g.in_h * g.in_w + y0 * g.in_w + x0;
      for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
        const int32_t* row = plane + ky * g.dilation_h * g.in_w;
        const int32_t* wr = w + (ci * g.kernel_h + ky) * g.kernel_w;
        for (int64_t kx = 0; kx < g.kernel_w; ++kx) s += int64_t{row[kx] - zx} * wr[kx];
      }
    }
    return s;
  }
  for (int64_t ci = 0; ci < Cg; ++ci) {
    const int32_t* plane = x + ((c / Og) * Cg + ci) * g.in_h * g.in_w;
    for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
      const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
      if (iy < 0 || iy >= g.in_h) continue;  // padding: (z_x - z_x) * w = 0
      for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
        const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
        if (ix < 0 || ix >= g.in_w) continue;
        s += int64_t{plane[iy * g.in_w + ix] - zx} * w[(ci * g.kernel_h + ky) * g.kernel_w + kx];
      }
    }
  }
  return s;
}

}  // namespace

void Engine::Impl::run_op(size_t k, Worker& w, int64_t batch, int64_t first_image) {
  const Op& op = model.ops[k];
  const PreparedOp& p = ops[k];
  LayerStats& st = w.stats[k];
  const Tensor& x = w.env[p.inputs[0]];
  const TensorInfo& xi = *p.input_info[0];
  const TensorInfo& yi = *p.output_info;
  Tensor& y = w.env[p.output];
  w.shape_tensor(y, batch, yi.shape);
  const int32_t* bias = op.bias.empty() ? nullptr : op.bias.data.data();

  switch (op.kind) {
    case OpKind::kConv2d:
    case OpKind::kLinear: {
      const bool conv = op.kind == OpKind::kConv2d;
      const PreparedLayer& L = p.layer;
      const int64_t inner = conv ? yi.shape[1] * yi.shape[2] : 1;
      const int64_t in_features = conv ? 0 : xi.shape[0];
      const Conv2dGeometry g = conv ? conv_geometry(op, x.shape) : Conv2dGeometry{};
      const int32_t zx = xi.q.zero_point;
      const int32_t* xd = x.data.data();
      st.dot_products += batch * L.out_channels * inner;
      if ((L.perturb || calibrating) && L.kernel != LayerKernel::kMac && L.kernel != LayerKernel::kReference) {
        run_perturbed(op, p, w, st, batch, first_image, x, y);
        break;
      }
      if (L.kernel == LayerKernel::kFast && conv && L.int16_operands) {
        // requantized as the accumulators come out of the kernel
        conv2d_acc32_requantize(g, xd, zx, L.packed16, bias, op.multiplier, yi.q.zero_point,
                                yi.q.qmin, yi.q.qmax, y.data.data(), w.scratch);
        break;
      }
      if (L.kernel == LayerKernel::kFast || L.kernel == LayerKernel::kStepwise) {
        w.acc32.resize(y.data.size());
        int32_t* acc = w.acc32.data();
        exact_sums(L, conv, g, batch, in_features, xd, zx, bias, acc, options.accumulator, &st.overflows, w.scratch);
        requantize_channels(acc, batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
        break;
      }
      w.acc64.resize(y.data.size());
      int64_t* acc = w.acc64.data();
      if (L.kernel == LayerKernel::kReference) {
        if (conv)
          conv2d_int_reference(g, xd, zx, op.weight.data.data(), op.weight_zero_point, bias,
                               options.accumulator, acc, &st.overflows);
        else
          linear_int_reference(batch, in_features, L.out_channels, xd, zx, op.weight.data.data(),
                               op.weight_zero_point, bias, options.accumulator, acc, &st.overflows);
      } else {
        Accumulator reg(options.accumulator);
        MacStats ms;
        MacContext base;
        base.info = &mac_layers[static_cast<size_t>(L.mac_layer)];
        base.image = first_image;
        if (conv)
          conv2d_int_mac(g, xd, zx, L.w_offset.data(), bias, *mac, op.name, reg, acc, &ms, &base);
        else
          linear_int_mac(batch, in_features, L.out_channels, xd, zx, L.w_offset.data(), bias, *mac,
                         op.name, reg, acc, &ms, &base);
        st.overflows += reg.overflows();
        st.sum_abs_error += ms.sum_abs_error;
        st.max_abs_error = std::max(st.max_abs_error, ms.max_abs_error);
        st.clipped += ms.clipped;
      }
      requantize_channels(acc, batch, L.out_channels, inner, op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kAdd: {
      const TensorInfo& bi = *p.input_info[1];
      AddParams a;
      a.a_zero_point = xi.q.zero_point;
      a.b_zero_point = bi.q.zero_point;
      a.a_multiplier = op.input_multipliers[0];
      a.b_multiplier = op.input_multipliers[1];
      a.left_shift = op.left_shift;
      a.out_multiplier = op.multiplier[0];
      a.out_zero_point = yi.q.zero_point;
      a.qmin = yi.q.qmin;
      a.qmax = yi.q.qmax;
      add_int(a, x.data.data(), w.env[p.inputs[1]].data.data(), y.numel(), y.data.data());
      break;
    }
    case OpKind::kRelu:
      // validate_model set the output's qmin to the zero point clamped into the range
      for (size_t i = 0; i < y.data.size(); ++i) y.data[i] = std::max(x.data[i], yi.q.qmin);
      break;
    case OpKind::kClamp:
      for (size_t i = 0; i < y.data.size(); ++i)
        y.data[i] = std::min(std::max(x.data[i], yi.q.qmin), yi.q.qmax);
      break;
    case OpKind::kFlatten:
      std::copy(x.data.begin(), x.data.end(), y.data.begin());
      break;
    case OpKind::kMaxPool2d:
      maxpool2d_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.qmin, y.data.data());
      break;
    case OpKind::kAvgPool2d:
    case OpKind::kGlobalAvgPool: {
      w.acc64.resize(y.data.size());
      Accumulator reg(options.accumulator);
      avgpool2d_sum_int(pool_geometry(op, x.shape, yi.shape), x.data.data(), xi.q.zero_point, reg,
                        w.acc64.data());
      st.overflows += reg.overflows();
      requantize_channels(w.acc64.data(), 1, 1, y.numel(), op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kAdaptiveAvgPool2d: {
      w.acc64.resize(y.data.size());
      Accumulator reg(options.accumulator);
      const Pool2dGeometry g = pool_geometry(op, x.shape, yi.shape);
      if (options.path == KernelPath::kReference)
        adaptive_avgpool2d_sum_reference(g, x.data.data(), xi.q.zero_point, reg, w.acc64.data());
      else
        adaptive_avgpool2d_sum_int(g, x.data.data(), xi.q.zero_point, reg, w.acc64.data(), w.scratch);
      st.overflows += reg.overflows();
      // M[position] = s_x / (count * s_y) of that position's window (or one M for all):
      // [batch * channels][positions] with the multipliers along the positions
      requantize_channels(w.acc64.data(), batch * yi.shape[0], yi.shape[1] * yi.shape[2], 1,
                          op.multiplier, yi.q, y.data.data());
      break;
    }
    case OpKind::kConcat: {
      // [outer][axis][inner] blocks, each input requantized into the output's scale
      const int64_t axis = op.axis - 1;  // in the shapes without batch
      int64_t outer = batch, inner = 1;
      for (int64_t d = 0; d < axis; ++d) outer *= yi.shape[d];
      for (size_t d = axis + 1; d < yi.shape.size(); ++d) inner *= yi.shape[d];
      const int64_t out_block = yi.shape[axis] * inner;
      int64_t offset = 0;
      for (size_t j = 0; j < p.inputs.size(); ++j) {
        const Tensor& xj = w.env[p.inputs[j]];
        const QuantParams& qj = p.input_info[j]->q;
        const int64_t block = p.input_info[j]->shape[axis] * inner;
        for (int64_t o = 0; o < outer; ++o)
          requantize_int32(xj.data.data() + o * block, block, qj.zero_point,
                           op.input_multipliers[j], yi.q.zero_point, yi.q.qmin, yi.q.qmax,
                           y.data.data() + o * out_block + offset);
        offset += block;
      }
      break;
    }
  }
}

void Engine::Impl::run_perturbed(const Op& op, const PreparedOp& p, Worker& w, LayerStats& st, int64_t batch,
                                 int64_t first_image, const Tensor& x, Tensor& y) {
  const bool conv = op.kind == OpKind::kConv2d;
  const PreparedLayer& L = p.layer;
  const TensorInfo& xi = *p.input_info[0];
  const TensorInfo& yi = *p.output_info;
  const MacLayer& info = mac_layers[static_cast<size_t>(L.mac_layer)];
  const int64_t inner = conv ? yi.shape[1] * yi.shape[2] : 1;
  const int64_t count = L.out_channels * inner;  // elements per image
  const int64_t in_features = conv ? 0 : xi.shape[0];
  const Conv2dGeometry g = conv ? conv_geometry(op, x.shape) : Conv2dGeometry{};
  const int32_t zx = xi.q.zero_point;
  Accumulator reg(options.accumulator);
  const int32_t* bias = op.bias.empty() ? nullptr : op.bias.data.data();
  // A conv runs one image at a time, so that its sums stay in the cache between the kernel,
  // the MAC model and the requantization; a linear layer's sums are few.
  const int64_t slab = conv ? 1 : batch;
  const int64_t in_image = conv ? g.in_channels * g.in_h * g.in_w : in_features;
  const int64_t rows = std::max<int64_t>(1, kPerturbBlock / inner);
  w.acc32.resize(static_cast<size_t>(slab * count));
  w.acc64.resize(static_cast<size_t>(std::min(rows, L.out_channels) * inner));
  int32_t* acc = w.acc32.data();
  double sum_err = 0;
  int64_t max_err = 0;
  // An additive model (gauss without rel) on the kernel that requantizes in registers, as
  // the exact run does: the noise is drawn first and added there, to an image whose biased
  // sums plus noise cannot leave the accumulator (nor int32), where the steps below give
  // the same integers. Otherwise, and for a rare image with a noise that large, the steps.
  bool additive = conv && !calibrating && perturber->additive() && L.kernel == LayerKernel::kFast &&
                  L.int16_operands;
  // A sparse model (bitflip) on that kernel: the exact run, then the few elements the model
  // may change redone one by one through the steps below, while they cost at most
  // kSparseMacs multiply-adds per element of the image.
  const bool sparse = conv && !calibrating && !additive && perturber->sparse() &&
                      L.kernel == LayerKernel::kFast && L.int16_operands;
  double room = 0;
  AddLayout layout;
  if (additive) {
    layout = conv2d_add_layout(g, L.packed16, op.multiplier);
    w.noise32.assign(static_cast<size_t>(L.out_channels * layout.plane), 0);
    int64_t max_bias = 0;
    for (int64_t c = 0; bias && c < L.out_channels; ++c) max_bias = std::max<int64_t>(max_bias, std::llabs(bias[c]));
    room = static_cast<double>(std::min<int64_t>({reg.max(), -(reg.min() + 1), INT32_MAX})) -
           static_cast<double>(max_bias) - info.full_scale;
    additive = room >= 0;  // else no image could take it (a narrow accumulator): the steps
  }
  for (int64_t i0 = 0; i0 < batch; i0 += slab) {
    const int64_t nb = std::min(slab, batch - i0);
    const int32_t* xd = x.data.data() + i0 * in_image;
    Conv2dGeometry gs = g;
    gs.batch = nb;
    if (sparse) {
      std::vector<int64_t>& changed = w.changed;
      changed.clear();
      for (int64_t e0 = 0; e0 < count; e0 += kPerturbBlock)
        perturber->may_change(info, first_image + i0, e0, std::min(kPerturbBlock, count - e0), changed);
      if (static_cast<int64_t>(changed.size()) * L.patch <= count * kSparseMacs) {
        int32_t* yi0 = y.data.data() + i0 * count;
        conv2d_acc32_requantize(gs, xd, zx, L.packed16, bias, op.multiplier, yi.q.zero_point, yi.q.qmin,
                                yi.q.qmax, yi0, w.scratch);
        for (const int64_t e : changed) {
          const int64_t c = e / inner;
          const int32_t exact = static_cast<int32_t>(conv_dot(g, xd, zx, L.w_offset.data() + c * L.patch, c, e % inner));
          int64_t r = 0;
          SumBlock b;
          b.layer = &info;
          b.image = first_image + i0;
          b.first_index = e;
          b.count = 1;
          b.exact = &exact;
          b.accumulator_bits = options.accumulator.bits;
          b.out = &r;
          perturber->perturb(b);
          st.clipped += b.clipped;
          int32_t v = 0;
          fit_and_add_bias(1, 1, &r, &exact, bias ? bias + c : nullptr, reg, &v, &sum_err, &max_err);
          const DyadicMultiplier mc =
              op.multiplier.size() == 1 ? op.multiplier[0] : op.multiplier[static_cast<size_t>(c)];
          yi0[e] = requantize_dyadic(v, mc, yi.q.zero_point, yi.q.qmin, yi.q.qmax);
        }
        continue;
      }
    }
    if (additive) {
      // drawn in blocks of kPerturbBlock elements (the model's buffers stay in the L1
      // cache), then placed on the kernel's grid
      const bool in_place = layout.row == g.out_w() && layout.plane == inner;
      w.noise_block.resize(static_cast<size_t>(count));
      int32_t* drawn = in_place ? w.noise32.data() : w.noise_block.data();
      double sum_n = 0;
      int64_t max_n = 0;
      for (int64_t e0 = 0; e0 < count; e0 += kPerturbBlock) {
        const SumPerturbingMac::NoiseSize size =
            perturber->draw_noise(info, first_image + i0, e0, std::min(kPerturbBlock, count - e0), drawn + e0);
        sum_n += size.sum;
        max_n = std::max(max_n, size.max);
      }
      if (!in_place) place_noise(drawn, L.out_channels, g.out_h(), g.out_w(), layout, w.noise32.data());
      if (max_n < INT32_MAX && static_cast<double>(max_n) <= room) {
        conv2d_acc32_requantize(gs, xd, zx, L.packed16, bias, op.multiplier, yi.q.zero_point, yi.q.qmin,
                                yi.q.qmax, y.data.data() + i0 * count, w.scratch, w.noise32.data());
        sum_err += sum_n;
        max_err = std::max(max_err, max_n);
        continue;
      }
    }
    // 1. The exact sums, without the bias (which the engine adds after the MAC model).
    exact_sums(L, conv, gs, nb, in_features, xd, zx, nullptr, acc, options.accumulator, &st.overflows, w.scratch);
    const double* squares = nullptr;
    if (calibrating) {
      // Engine::calibrate: sample |exact| (without the bias); the layer computes the exact sums
      std::vector<int32_t>& samples = w.samples[static_cast<size_t>(L.mac_layer)];
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t e = 0; e < count; ++e)
          if (((first_image + i0 + i) * count + e) % sample_stride == 0)
            samples.push_back(
                static_cast<int32_t>(std::min<int64_t>(std::llabs(int64_t{acc[i * count + e]}), INT32_MAX)));
    } else if (perturber->needs_squares()) {
      // the sums of squared products the model needs
      w.squares.resize(static_cast<size_t>(nb * count));
      if (conv)
        conv2d_square_sums(gs, xd, zx, L.w_sq.data(), w.squares.data(), w.scratch,
                           L.w_sq_f64.empty() ? nullptr : L.w_sq_f64.data());
      else
        linear_square_sums(nb, in_features, L.out_channels, xd, zx, L.w_sq.data(), w.squares.data(), w.scratch);
      squares = w.squares.data();
    }
    // 2. In blocks of whole channels of one image (kPerturbBlock): the unit's results from the
    // exact sums (the exact sums themselves when calibrating), into the accumulator (an
    // overflow counted) with the error against the exact sum, the bias through the
    // accumulator, then requantization.
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t c0 = 0; c0 < L.out_channels; c0 += rows) {
        const int64_t nc = std::min(rows, L.out_channels - c0);
        const int64_t offset = i * count + c0 * inner;
        if (calibrating) {
          std::copy(acc + offset, acc + offset + nc * inner, w.acc64.begin());
        } else {
          SumBlock b;
          b.layer = &info;
          b.image = first_image + i0 + i;
          b.first_index = c0 * inner;
          b.count = nc * inner;
          b.exact = acc + offset;
          b.squares = squares ? squares + offset : nullptr;
          b.accumulator_bits = options.accumulator.bits;
          b.out = w.acc64.data();
          perturber->perturb(b);
          st.clipped += b.clipped;
        }
        fit_and_add_bias(nc, inner, w.acc64.data(), acc + offset, bias ? bias + c0 : nullptr, reg, acc + offset,
                         &sum_err, &max_err);
        for (int64_t c = c0; c < c0 + nc; ++c) {
          const DyadicMultiplier mc =
              op.multiplier.size() == 1 ? op.multiplier[0] : op.multiplier[static_cast<size_t>(c)];
          requantize_int32(acc + i * count + c * inner, inner, 0, mc, yi.q.zero_point, yi.q.qmin, yi.q.qmax,
                           y.data.data() + (i0 + i) * count + c * inner);
        }
      }
    }
  }
  st.sum_abs_error += sum_err;
  st.max_abs_error = std::max(st.max_abs_error, max_err);
  st.overflows += reg.overflows();
}

}  // namespace intsim
}  // namespace anybit
