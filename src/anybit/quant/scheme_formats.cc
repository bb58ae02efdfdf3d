// The float formats' and codebooks' scheme entries (scheme.h): minifloat fpN:eXmY, the block
// formats MX and NVFP4, and the codebooks nf4 and lutN. The integer, logarithmic and sign
// schemes are scheme.cc.
#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "anybit/calib/calibrator.h"
#include "anybit/calib/kmeans.h"
#include "anybit/quant/fake_quant.h"
#include "anybit/quant/node.h"
#include "anybit/quant/scheme.h"
#include "anybit/quant/scheme_internal.h"

namespace anybit {
namespace scheme {
namespace jit = torch::jit;

using namespace detail;  // NOLINT: the schemes' shared helpers

namespace {

// ---- minifloat fpN:eXmY: x^ = s * cast(x / s), s = clip / max ------------------------

double minifloat_scale(const QuantSpec& spec, double clip) {
  double s = std::max(clip / minifloat_max(spec.exp_bits, spec.man_bits), 1e-12);
  if (spec.pow2_scale) s = std::exp2(std::ceil(std::log2(s)));
  return s;
}

// The clip ratios the MSE searches try: r * max|x|, r = 0.30, 0.31, ..., 1.00 (1.00 is
// plain max scaling, so the search is never worse than minmax).
constexpr int kMseRatios = 71;
double mse_ratio(int k) { return 0.30 + 0.01 * k; }

at::Tensor minifloat_scales(const QuantSpec& spec, const at::Tensor& clip) {
  at::Tensor s = (clip.to(at::kDouble) / minifloat_max(spec.exp_bits, spec.man_bits)).clamp_min(1e-12);
  if (spec.pow2_scale) s = at::exp2(at::ceil(at::log2(s)));
  return s.to(at::kFloat);
}

int64_t positive_levels(const QuantSpec& spec) {
  return static_cast<int64_t>(minifloat_values(spec.exp_bits, spec.man_bits).size()) - 1;
}

// A scaled format's fake quantization of x with clip c (per row of x, or one for all).
using ClipQuantizer = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& clip)>;

// The clip of each weight row [C, n]: max|row| (minmax), or among r * max|row| the one with
// the smallest squared error of fq (mse).
at::Tensor weight_clips(const std::string& calibrator, const at::Tensor& rows, const std::string& where,
                        const ClipQuantizer& fq) {
  if (calibrator != "minmax" && calibrator != "mse")
    throw Error(where + ": weight calibrator '" + calibrator + "' is not one of minmax, mse");
  const at::Tensor amax = std::get<0>(rows.abs().max(1)).to(at::kDouble);
  at::Tensor clip = amax.clone();
  if (calibrator == "mse") {
    at::Tensor best = at::full_like(amax, std::numeric_limits<double>::infinity());
    for (int k = 0; k < kMseRatios; ++k) {
      const at::Tensor c = amax * mse_ratio(k);
      const at::Tensor err = (fq(rows, c) - rows).to(at::kDouble).square().sum(1);
      const at::Tensor better = err < best;
      best = at::where(better, err, best);
      clip = at::where(better, c, clip);
    }
  }
  return clip;
}

// The clip of an activation: the calibrator's symmetric range (minmax, ema, percentile), or
// among r * max|x| the one with the smallest squared error of fq on the histogram's bin
// centres weighted by their counts (mse); entropy (which searches integer grids) is refused.
double data_clip(const std::string& format, const std::string& calibrator, const calib::Observer& obs,
                 const std::string& where, const ClipQuantizer& fq) {
  const calib::MethodSpec method = method_of(calibrator, where);
  const calib::Histogram& h = obs.histogram();
  if (method.method == calib::Method::kEntropy)
    throw Error(where + ": the entropy calibrator chooses a range for an integer grid; calibrate " + format +
                " with minmax, ema, percentile or mse");
  if (method.method != calib::Method::kMse) return symmetric_clip(obs, method);
  const at::Tensor centres = at::empty({h.bins()});
  const at::Tensor counts = at::empty({h.bins()}, at::kDouble);
  for (int b = 0; b < h.bins(); ++b) {
    centres[b] = h.bin_center(b);
    counts[b] = static_cast<double>(h.counts()[b]);
  }
  double best = std::numeric_limits<double>::infinity(), clip = h.amax();
  for (int k = 0; k < kMseRatios; ++k) {
    const double c = h.amax() * mse_ratio(k);
    const double err =
        ((fq(centres, at::full({1}, c, at::kDouble)) - centres).to(at::kDouble).square() * counts).sum().item<double>();
    if (err < best) best = err, clip = c;
  }
  return clip;
}

Params minifloat_from_weight(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& rows,
                             int64_t numel, const std::string& where) {
  const at::Tensor clip = weight_clips(calibrator, rows, where, [&](const at::Tensor& x, const at::Tensor& c) {
    return fake_quant_minifloat_forward(x, minifloat_scales(spec, c), 0, 0, spec.exp_bits, spec.man_bits);
  });
  Params P;
  const int64_t C = rows.size(0);
  P.scale = minifloat_scales(spec, clip);
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel) * positive_levels(spec));
  P.summary = C == 1 ? "scale=" + c10::str(P.scale[0].item<float>()) : scales_summary(spec, P.scale);
  return P;
}

Params minifloat_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                           int64_t per_sample, const std::string& where) {
  const calib::Histogram& h = obs.histogram();
  const double clip = data_clip("a minifloat", calibrator, obs, where, [&](const at::Tensor& x, const at::Tensor& c) {
    return fake_quant_minifloat_forward(x, minifloat_scales(spec, c), -1, 0, spec.exp_bits, spec.man_bits);
  });
  Params P;
  const double s = minifloat_scale(spec, clip);
  P.scale = at::full({1}, static_cast<float>(s));
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)) * positive_levels(spec));
  const double top = static_cast<float>(s) * minifloat_max(spec.exp_bits, spec.man_bits);
  P.summary = "scale=" + c10::str(static_cast<float>(s)) + " range +-" + c10::str(static_cast<float>(top));
  measure_symmetric_clipping(h, top, &P);
  return P;
}

jit::Value* minifloat_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  const bool lsq = spec.learn == Learn::kLsq;
  return insert_op(*site.graph, qnode::Op::kMinifloat,
                   {x, site.param("scale", P.scale, lsq), constant(site, site.axis), constant(site, site.group),
                    constant(site, int64_t{spec.exp_bits}), constant(site, int64_t{spec.man_bits}),
                    constant(site, lsq ? P.grad_factor : 1.0)});
}

// ---- block formats: MX (scales from each block, nothing to calibrate) and NVFP4 --------

std::string block_summary(const QuantSpec& spec) {
  return "blocks of " + std::to_string(spec.block) + " along " +
         (spec.axis >= 0 ? "axis " + std::to_string(spec.axis) : std::string("the reduction axis"));
}

Params mx_without_data(const QuantSpec& spec, const calib::Observer*) {
  Params P;
  P.summary = block_summary(spec) + ", E8M0 scale each";
  return P;
}

Params mx_from_weight(const QuantSpec& spec, const std::string&, const at::Tensor&, int64_t, const std::string&) {
  return mx_without_data(spec, nullptr);
}

Params mx_from_data(const QuantSpec& spec, const std::string&, const calib::Observer&, int64_t, const std::string&) {
  return mx_without_data(spec, nullptr);
}

jit::Value* mx_insert(const Site& site, const QuantSpec& spec, const Params&, jit::Value* x) {
  // the format is the node's one attribute (every quantizer node reads its point's attributes:
  // that is how the export and the reports name it); weights block along their input channels
  // (dim 1), activations along their reduction axis
  const at::Tensor format = at::tensor({int64_t{spec.block}, int64_t{spec.exp_bits}, int64_t{spec.man_bits}});
  return insert_op(*site.graph, qnode::Op::kMx,
                   {x, site.param("format", format, false), constant(site, int64_t{spec.axis})});
}

constexpr double kNvfp4Range = 6.0 * 448.0;  // E2M1's largest value times E4M3's

Params nvfp4_params(double amax, const QuantSpec& spec) {
  Params P;
  P.scale = at::full({1}, static_cast<float>(std::max(amax, 1e-30) / kNvfp4Range));
  P.summary = "tensor scale=" + c10::str(P.scale.item<float>()) + ", " + block_summary(spec) + ", E4M3 scale each";
  return P;
}

Params nvfp4_from_weight(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& rows, int64_t,
                         const std::string& where) {
  if (calibrator != "minmax" && calibrator != "mse")
    throw Error(where + ": weight calibrator '" + calibrator + "' is not one of minmax, mse");
  return nvfp4_params(rows.abs().max().item<double>(), spec);  // NVIDIA's recipe: max|w| / (6 * 448)
}

Params nvfp4_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs, int64_t,
                       const std::string& where) {
  const calib::MethodSpec method = method_of(calibrator, where);
  if (method.method == calib::Method::kMse || method.method == calib::Method::kEntropy)
    throw Error(where + ": NVFP4 scales every block of 16 by its own maximum; its tensor scale is the calibrated "
                "maximum / (6 * 448): calibrate it with minmax, ema or percentile, not " + calibrator);
  return nvfp4_params(symmetric_clip(obs, method), spec);
}

jit::Value* nvfp4_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  return insert_op(*site.graph, qnode::Op::kNvfp4,
                   {x, site.param("scale", P.scale, false), constant(site, int64_t{spec.axis}),
                    constant(site, int64_t{spec.block})});
}

// ---- codebooks: nf4 (fixed levels, s = max|x|) and lutN (k-means levels) -----------------

int64_t codebook_size(const QuantSpec& spec) { return int64_t{1} << spec.bits; }

at::Tensor nf4_table() {
  const std::vector<double>& l = nf4_levels();
  return at::tensor(std::vector<float>(l.begin(), l.end()));
}

Params nf4_from_weight(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& rows, int64_t numel,
                       const std::string& where) {
  Params P;
  P.levels = nf4_table();
  const at::Tensor clip = weight_clips(calibrator, rows, where, [&](const at::Tensor& x, const at::Tensor& c) {
    return fake_quant_lut(x, c.clamp_min(1e-12).to(at::kFloat), P.levels, 0, 0);
  });
  P.scale = clip.clamp_min(1e-12).to(at::kFloat);
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel) * 8);
  const int64_t C = rows.size(0);
  P.summary = (C == 1 ? "scale=" + c10::str(P.scale[0].item<float>()) : scales_summary(spec, P.scale)) + " nf4";
  return P;
}

Params nf4_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                     int64_t per_sample, const std::string& where) {
  const calib::Histogram& h = obs.histogram();
  Params P;
  P.levels = nf4_table();
  const double clip = data_clip("nf4", calibrator, obs, where, [&](const at::Tensor& x, const at::Tensor& c) {
    return fake_quant_lut(x, c.clamp_min(1e-12).to(at::kFloat), P.levels, -1, 0);
  });
  P.scale = at::full({1}, static_cast<float>(std::max(clip, 1e-12)));
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)) * 8);
  P.summary = "scale=" + c10::str(P.scale.item<float>()) + " nf4";
  measure_symmetric_clipping(h, P.scale.item<float>(), &P);
  return P;
}

// k-means levels of each row, as levels in [-1, 1] times a scale (the largest |level|)
void lut_rows(const std::vector<std::vector<double>>& centres, Params* P) {
  const int64_t C = static_cast<int64_t>(centres.size()), L = static_cast<int64_t>(centres[0].size());
  at::Tensor levels = at::empty({C, L}), scale = at::empty({C});
  for (int64_t c = 0; c < C; ++c) {
    double m = 0;
    for (double v : centres[c]) m = std::max(m, std::fabs(v));
    if (!(m > 0)) m = 1;
    scale[c] = static_cast<float>(m);
    for (int64_t k = 0; k < L; ++k) levels[c][k] = static_cast<float>(centres[c][k] / m);
  }
  P->scale = scale;
  P->levels = C == 1 ? levels.reshape({L}) : levels;
}

// Levels the spec gives (`lut2:levels=...`): the same codebook for every row.
Params given_levels(const QuantSpec& spec, int64_t rows) {
  Params P;
  double m = 0;
  for (double v : spec.levels) m = std::max(m, std::fabs(v));
  if (!(m > 0)) m = 1;
  std::vector<float> l;
  for (double v : spec.levels) l.push_back(static_cast<float>(v / m));
  P.levels = at::tensor(l);
  P.scale = at::full({rows}, static_cast<float>(m));
  P.summary = std::to_string(spec.levels.size()) + " given levels";
  return P;
}

Params lut_from_weight(const QuantSpec& spec, const std::string&, const at::Tensor& rows, int64_t numel,
                       const std::string& where) {
  if (!spec.levels.empty()) {
    Params P = given_levels(spec, rows.size(0));
    P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel));
    return P;
  }
  Params P;
  std::vector<std::vector<double>> centres;
  const at::Tensor r = rows.contiguous();
  for (int64_t c = 0; c < r.size(0); ++c) {
    try {
      centres.push_back(calib::kmeans_1d(r[c].data_ptr<float>(), nullptr, r.size(1), static_cast<int>(codebook_size(spec))));
    } catch (const std::exception& e) {
      throw Error(where + ": " + e.what());
    }
  }
  lut_rows(centres, &P);
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel));
  P.summary = std::to_string(codebook_size(spec)) + " k-means levels" +
              (r.size(0) > 1 ? " per channel (" + std::to_string(r.size(0)) + ")" : "");
  return P;
}

Params lut_from_data(const QuantSpec& spec, const std::string&, const calib::Observer& obs, int64_t per_sample,
                     const std::string& where) {
  if (!spec.levels.empty()) {
    Params P = given_levels(spec, 1);
    P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)));
    return P;
  }
  Params P;
  try {
    lut_rows({calib::kmeans_1d(obs.histogram(), static_cast<int>(codebook_size(spec)))}, &P);
  } catch (const std::exception& e) {
    throw Error(where + ": " + e.what());
  }
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)));
  P.summary = std::to_string(codebook_size(spec)) + " k-means levels in [" +
              c10::str((P.levels[0] * P.scale[0]).item<float>()) + ", " +
              c10::str((P.levels[-1] * P.scale[0]).item<float>()) + "]";
  return P;
}

jit::Value* lut_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  const bool lsq = spec.learn == Learn::kLsq;
  const bool learn_scale = lsq && spec.scheme == Scheme::kNf4, learn_levels = lsq && spec.scheme == Scheme::kLut;
  return insert_op(*site.graph, qnode::Op::kLut,
                   {x, site.param("scale", P.scale, learn_scale), site.param("levels", P.levels, learn_levels),
                    constant(site, site.axis), constant(site, site.group),
                    constant(site, lsq ? P.grad_factor : 1.0)});
}

}  // namespace

namespace detail {

const Entry kMinifloat{"minifloat",       minifloat_from_weight, minifloat_from_data, always_needs_data,
                       nullptr,           minifloat_insert,      never_portable};
const Entry kMx{"mx", mx_from_weight, mx_from_data, never_needs_data, mx_without_data, mx_insert, never_portable};
const Entry kNvfp4{"nvfp4", nvfp4_from_weight, nvfp4_from_data, always_needs_data, nullptr, nvfp4_insert,
                   never_portable};
const Entry kNf4{"nf4", nf4_from_weight, nf4_from_data, always_needs_data, nullptr, lut_insert, never_portable};
bool lut_needs_data(const QuantSpec& spec) { return spec.levels.empty(); }  // given levels need none
Params lut_without_data(const QuantSpec& spec, const calib::Observer*) { return given_levels(spec, 1); }
const Entry kLut{"lut", lut_from_weight, lut_from_data, lut_needs_data, lut_without_data, lut_insert, never_portable};

}  // namespace detail
}  // namespace scheme
}  // namespace anybit
