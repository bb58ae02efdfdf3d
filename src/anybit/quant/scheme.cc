// The quantizer schemes, one entry each (scheme.h). The numbers follow docs/design.md
// ("Numeric definitions"); the uniform grid itself is calib::grid_for_range's.
#include "anybit/quant/scheme.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "anybit/calib/calibrator.h"
#include "anybit/calib/kmeans.h"
#include "anybit/quant/fake_quant.h"
#include "anybit/quant/node.h"
#include "anybit/quant/scheme_internal.h"

namespace anybit {
namespace scheme {
namespace jit = torch::jit;
namespace detail {

jit::Value* insert_op(jit::Graph& graph, qnode::Op op, std::vector<jit::Value*> inputs) {
  jit::Node* n = graph.create(c10::Symbol::fromQualString(qnode::info(op).name), inputs);
  graph.insertNode(n);
  n->output()->setType(c10::TensorType::get());
  return n->output();
}

calib::MethodSpec method_of(const std::string& calibrator, const std::string& where) {
  try {
    return calib::parse_method(calibrator);
  } catch (const std::exception& e) {
    throw Error(where + ": " + e.what());
  }
}

// The calibration target of a uniform spec (the grid a range is searched for).
calib::QuantTarget target_of(const QuantSpec& spec) {
  calib::QuantTarget t;
  t.qmin = spec.is_uniform() ? spec.qmin() : -(1 << 15);
  t.qmax = spec.is_uniform() ? spec.qmax() : (1 << 15) - 1;
  t.asymmetric = spec.asymmetric;
  t.is_signed_data_range = !(spec.scheme == Scheme::kUInt || spec.scheme == Scheme::kUFixed) && !spec.asymmetric;
  return t;
}

// The shares of the observed values outside the representable range of a uniform
// quantizer with scale s and zero point z.
void measure_clipping(const QuantSpec& spec, const calib::Observer& obs, float s, float z, Params* P) {
  const calib::Histogram& h = obs.histogram();
  if (h.count() == 0) return;
  const double lo = (static_cast<double>(spec.qmin()) - z) * s, hi = (static_cast<double>(spec.qmax()) - z) * s;
  P->clipped_low = h.share_below(lo);
  P->clipped_high = h.share_above(hi);
}

// The shares of the observed values outside [-top, top] (the symmetric formats' range).
void measure_symmetric_clipping(const calib::Histogram& h, double top, Params* P) {
  if (h.count() == 0) return;
  P->clipped_low = h.share_below(-top);
  P->clipped_high = h.share_above(top);
}

// max|range| of the calibrator's symmetric range (minmax, ema, percentile) for the formats
// that are symmetric around zero but not an integer grid.
double symmetric_clip(const calib::Observer& obs, const calib::MethodSpec& method) {
  calib::QuantTarget t;
  t.qmin = -(1 << 15);
  t.qmax = (1 << 15) - 1;
  const calib::Range r = calib::choose_range(obs, method, t);
  return std::max(std::fabs(r.lo), std::fabs(r.hi));
}

// "scale 0.001..0.02 (64 channels)": the summary of per-channel or per-group scales.
std::string scales_summary(const QuantSpec& spec, const at::Tensor& s) {
  return "scale " + c10::str(s.min().item<float>()) + ".." + c10::str(s.max().item<float>()) + " (" +
         std::to_string(s.numel()) + (spec.granularity == Granularity::kPerGroup ? " groups)" : " channels)");
}

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), share >= 0.001 ? "%.1f%%" : "%.2g%%", 100.0 * share);
  return buf;
}

}  // namespace detail

using namespace detail;  // NOLINT: the schemes' shared helpers

namespace {

// ---- uniform: int, uint, fixed, ufixed (with :pact, :lsq, :asym, :pow2scale) ----------

Params uniform_from_weight(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& rows,
                           int64_t numel, const std::string& where) {
  if (calibrator != "minmax" && calibrator != "mse")
    throw Error(where + ": weight calibrator '" + calibrator + "' is not one of minmax, mse");
  Params P;
  const int64_t C = rows.size(0), n = rows.size(1);
  at::Tensor s = at::empty({C}), z = at::empty({C});
  at::Tensor mn = std::get<0>(rows.min(1)), mx = std::get<0>(rows.max(1));
  for (int64_t c = 0; c < C; ++c) {
    double lo = mn[c].item<double>(), hi = mx[c].item<double>();
    if (calibrator == "mse" && !spec.asymmetric && spec.scheme == Scheme::kInt) {
      const at::Tensor r = rows[c].contiguous();
      const double clip = calib::mse_optimal_clip(r.data_ptr<float>(), n, spec.qmin(), spec.qmax(), true);
      lo = -clip;
      hi = clip;
    }
    float sc, zp;
    uniform_grid(spec, lo, hi, &sc, &zp);
    s[c] = sc;
    z[c] = zp;
  }
  P.scale = s;
  P.zero_point = z;
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel) * std::max(spec.qmax(), 1));
  P.summary = C == 1 ? fmt_scale(s[0].item<double>(), z[0].item<double>()) : scales_summary(spec, s);
  return P;
}

Params uniform_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                         int64_t per_sample, const std::string& where) {
  Params P;
  const calib::Range r = calib::choose_range(obs, method_of(calibrator, where), target_of(spec));
  float s, z;
  uniform_grid(spec, r.lo, r.hi, &s, &z);
  P.scale = at::full({1}, s);
  P.zero_point = at::full({1}, z);
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)) * std::max(spec.qmax(), 1));
  P.summary = fmt_scale(s, z) + " range [" + c10::str(static_cast<float>(r.lo)) + ", " +
              c10::str(static_cast<float>(r.hi)) + "]";
  measure_clipping(spec, obs, s, z, &P);
  if (spec.learn == Learn::kPact) {
    P.alpha = at::full({1}, static_cast<float>(std::max(r.hi, 1e-6)));
    P.summary = "clip " + c10::str(P.alpha.item<float>());
    P.clipped_low = obs.histogram().share_below(0.0);
    P.clipped_high = obs.histogram().share_above(P.alpha.item<float>());
  }
  return P;
}

bool uniform_portable(const QuantSpec& spec) {
  return spec.learn == Learn::kNone && spec.rounding == Rounding::kHalfEven &&
         spec.granularity != Granularity::kPerGroup;
}

jit::Value* uniform_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  jit::Graph& g = *site.graph;
  const int64_t qmin = spec.qmin(), qmax = spec.qmax();
  if (spec.learn == Learn::kPact)
    return insert_op(g, qnode::Op::kPact, {x, site.param("clip", P.alpha, true), constant(site, int64_t{spec.bits}),
                                           constant(site, static_cast<int64_t>(spec.rounding))});
  if (site.portable && site.axis < 0)
    return insert_op(g, qnode::Op::kAtenPerTensor,
                     {x, constant(site, static_cast<double>(P.scale.item<float>())),
                      constant(site, static_cast<int64_t>(P.zero_point.item<float>())), constant(site, qmin),
                      constant(site, qmax)});
  if (site.portable)
    return insert_op(g, qnode::Op::kAtenPerChannel,
                     {x, site.param("scale", P.scale, false), site.param("zero_point", P.zero_point.to(at::kInt), false),
                      constant(site, site.axis), constant(site, qmin), constant(site, qmax)});
  const bool lsq = spec.learn == Learn::kLsq;
  return insert_op(g, qnode::Op::kAffine,
                   {x, site.param("scale", P.scale, lsq), site.param("zero_point", P.zero_point, lsq && spec.asymmetric),
                    constant(site, site.axis), constant(site, site.group), constant(site, qmin), constant(site, qmax),
                    constant(site, static_cast<int64_t>(spec.rounding)), constant(site, lsq ? P.grad_factor : 1.0)});
}

// ---- logarithmic ----------------------------------------------------------------------

Params log_from_weight(const QuantSpec& spec, const std::string&, const at::Tensor& rows, int64_t,
                       const std::string&) {
  Params P;
  P.hi = std::get<0>(rows.abs().max(1)).clamp_min(1e-30).log2().round();
  P.summary = "2^" + c10::str(P.hi.min().item<float>() - (spec.log_exponents() - 1)) + "..2^" +
              c10::str(P.hi.max().item<float>());
  return P;
}

Params log_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs, int64_t,
                     const std::string& where) {
  Params P;
  const calib::Range r = calib::choose_range(obs, method_of(calibrator, where), target_of(spec));
  const double amax = std::max(std::fabs(r.lo), std::fabs(r.hi));
  P.hi = at::full({1}, static_cast<float>(std::nearbyint(std::log2(std::max(amax, 1e-30)))));
  P.summary = "2^" + c10::str(P.hi.item<float>() - (spec.log_exponents() - 1)) + "..2^" + c10::str(P.hi.item<float>());
  return P;
}

jit::Value* log_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  return insert_op(*site.graph, qnode::Op::kLog,
                   {x, site.param("hi", P.hi, false), constant(site, int64_t{spec.log_exponents()}),
                    constant(site, site.axis)});
}

// ---- binary and ternary ---------------------------------------------------------------

Params sign_from_weight(const QuantSpec& spec, const std::string&, const at::Tensor& rows, int64_t numel,
                        const std::string&) {
  Params P;
  const at::Tensor absrows = rows.abs();
  P.ste_clip = 1.0;
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(numel));  // LSQ's scale, Qp = 1 (binary/ternary:lsq)
  if (spec.scheme == Scheme::kBinary) {
    P.alpha = absrows.mean(1);
    P.summary = "alpha " + c10::str(P.alpha.mean().item<float>());
    return P;
  }
  const at::Tensor delta = absrows.mean(1) * spec.threshold;
  const at::Tensor mask = absrows > delta.unsqueeze(1);
  P.alpha = (absrows * mask).sum(1) / mask.sum(1).clamp_min(1);
  P.delta = delta;
  P.summary = "alpha " + c10::str(P.alpha.mean().item<float>()) + " delta " + c10::str(delta.mean().item<float>());
  return P;
}

Params sign_from_data(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                      int64_t per_sample, const std::string& where) {
  if (spec.scheme == Scheme::kBinary && obs.min() >= 0)
    throw Error(where + ": binary (alpha * sign(x)) of an output that is never negative is a constant; "
                "use uint1 for the two levels {0, s}");
  Params P;
  const calib::Range r = calib::choose_range(obs, method_of(calibrator, where), target_of(spec));
  const double amax = std::max(std::fabs(r.lo), std::fabs(r.hi));
  const double mean_abs = obs.mean_abs();
  P.alpha = at::full({1}, static_cast<float>(mean_abs));
  P.delta = at::full({1}, static_cast<float>(spec.threshold * mean_abs));
  P.ste_clip = std::max(amax, 1e-6);
  P.grad_factor = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_sample, 1)));
  P.summary = "alpha " + c10::str(static_cast<float>(mean_abs));
  return P;
}

jit::Value* binary_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  const bool learn = spec.learn != Learn::kNone;
  return insert_op(*site.graph, qnode::Op::kBinary,
                   {x, site.param("alpha", P.alpha, learn), constant(site, site.axis), constant(site, P.ste_clip),
                    constant(site, learn ? P.grad_factor : 1.0)});
}

jit::Value* ternary_insert(const Site& site, const QuantSpec& spec, const Params& P, jit::Value* x) {
  const bool learn = spec.learn != Learn::kNone;  // ternary:lsq learns the threshold too
  return insert_op(*site.graph, qnode::Op::kTernary,
                   {x, site.param("alpha", P.alpha, learn), site.param("delta", P.delta, learn),
                    constant(site, site.axis), constant(site, P.ste_clip), constant(site, learn ? P.grad_factor : 1.0)});
}

}  // namespace

namespace detail {

bool never_portable(const QuantSpec&) { return false; }
bool always_needs_data(const QuantSpec&) { return true; }
bool never_needs_data(const QuantSpec&) { return false; }
bool uniform_needs_data(const QuantSpec& spec) { return !spec.is_fixed_point(); }

}  // namespace detail

namespace {


Params fixed_point_without_data(const QuantSpec& spec, const calib::Observer* obs);

const Entry kUniform{"uniform",          uniform_from_weight, uniform_from_data,  uniform_needs_data,
                     fixed_point_without_data, uniform_insert, uniform_portable};
const Entry kLog{"log", log_from_weight, log_from_data, always_needs_data, nullptr, log_insert, never_portable};
const Entry kBinary{"binary", sign_from_weight, sign_from_data, always_needs_data, nullptr, binary_insert,
                    never_portable};
const Entry kTernary{"ternary", sign_from_weight, sign_from_data, always_needs_data, nullptr, ternary_insert,
                     never_portable};

// Per-channel view [C, rest] of a weight along its output-channel axis.
at::Tensor channels_first(const at::Tensor& w, int axis) {
  at::Tensor t = w.detach().to(at::kFloat);
  if (t.dim() == 0) t = t.reshape({1});
  return t.transpose(0, axis).contiguous().reshape({t.size(axis), -1});
}

}  // namespace

const Entry& entry_of(const QuantSpec& spec) {
  switch (spec.scheme) {
    case Scheme::kInt:
    case Scheme::kUInt:
    case Scheme::kFixed:
    case Scheme::kUFixed: return kUniform;
    case Scheme::kLog: return kLog;
    case Scheme::kBinary: return kBinary;
    case Scheme::kTernary: return kTernary;
    case Scheme::kMinifloat: return kMinifloat;
    case Scheme::kMx: return kMx;
    case Scheme::kNvfp4: return kNvfp4;
    case Scheme::kNf4: return kNf4;
    case Scheme::kLut: return kLut;
    case Scheme::kFloat: break;
  }
  throw Error("spec " + spec.str() + " has no quantizer scheme");
}

Params weight_params(const QuantSpec& spec, const std::string& calibrator, const at::Tensor& w, int axis,
                     const std::string& where) {
  if (spec.axis >= 0) axis = spec.axis;
  if (axis >= std::max<int64_t>(w.dim(), 1))
    throw Error(where + ": channel axis " + std::to_string(axis) + " is outside a weight of rank " +
                std::to_string(w.dim()));
  at::Tensor rows;  // [C, n]: the values sharing one parameter
  if (spec.granularity == Granularity::kPerGroup) {
    if (w.numel() % spec.group_size != 0 || (w.numel() / w.size(0)) % spec.group_size != 0)
      throw Error(where + ": group size " + std::to_string(spec.group_size) +
                  " does not divide the rows of a weight of shape " + c10::str(w.sizes()));
    rows = w.detach().to(at::kFloat).contiguous().reshape({-1, spec.group_size});
  } else if (spec.granularity == Granularity::kPerChannel) {
    rows = channels_first(w, axis);
  } else {
    rows = w.detach().to(at::kFloat).contiguous().reshape({1, -1});
  }
  Params P = entry_of(spec).from_weight(spec, calibrator, rows, w.numel(), where);
  for (at::Tensor* t : {&P.scale, &P.zero_point})  // per tensor: shape [1]
    if (t->defined() && t->numel() == 1) *t = t->reshape({1});
  return P;
}

Params data_params(const QuantSpec& spec, const std::string& calibrator, const calib::Observer& obs,
                   int64_t per_sample, const std::string& where) {
  if (obs.count() == 0)
    throw Error(where + ": no calibration data reached this point (is it inside control flow?)");
  return entry_of(spec).from_data(spec, calibrator, obs, per_sample, where);
}

bool needs_data(const QuantSpec& spec) { return entry_of(spec).needs_data(spec); }

Params params_without_data(const QuantSpec& spec, const calib::Observer* obs) {
  const Entry& e = entry_of(spec);
  if (e.needs_data(spec) || !e.without_data) throw Error("spec " + spec.str() + " needs calibration data");
  return e.without_data(spec, obs);
}

namespace {
Params fixed_point_without_data(const QuantSpec& spec, const calib::Observer* obs) {
  Params P;
  float s, z;
  uniform_grid(spec, 0, 0, &s, &z);
  P.scale = at::full({1}, s);
  P.zero_point = at::zeros({1});
  P.summary = fmt_scale(s, z);
  if (obs) measure_clipping(spec, *obs, s, z, &P);
  return P;
}
}  // namespace

void check_calibrator(const std::string& calibrator, const std::string& where) { method_of(calibrator, where); }

void uniform_grid(const QuantSpec& spec, double lo, double hi, float* s, float* z) {
  if (spec.is_fixed_point()) {
    *s = static_cast<float>(std::exp2(-spec.frac_bits));
    *z = 0;
    return;
  }
  calib::QuantTarget t = target_of(spec);
  t.pow2_scale = spec.pow2_scale;
  const calib::Grid g = calib::grid_for_range(lo, hi, t);
  *s = static_cast<float>(g.scale);
  *z = static_cast<float>(g.zero_point);
}

std::string clip_warning(const std::string& point, const QuantSpec& spec, const calib::Observer& obs,
                         const Params& P, double threshold) {
  if (P.clipped_low < 0) return "";
  const bool fixed = spec.is_fixed_point();
  const bool zero_floor = (spec.scheme == Scheme::kUInt && !spec.asymmetric) || spec.scheme == Scheme::kUFixed;
  const double forced = fixed ? P.clipped_low + P.clipped_high : zero_floor ? P.clipped_low : 0.0;
  if (!(forced > threshold)) return "";
  std::string range = "[" + c10::str(static_cast<float>(obs.min())) + ", " + c10::str(static_cast<float>(obs.max())) + "]";
  std::string what;
  if (zero_floor && P.clipped_low > threshold) {
    QuantSpec suggest = spec;
    if (spec.scheme == Scheme::kUInt) {
      suggest.scheme = Scheme::kInt;
      suggest.auto_sign = true;
      suggest.asymmetric = true;
      if (suggest.learn == Learn::kPact) suggest.learn = Learn::kNone;
      what = "; use " + suggest.str() + " (signed where the data is) or int" + std::to_string(spec.bits) + ":asym";
    } else {
      what = "; use a signed fixed:Qm.n";
    }
    return point + ": " + spec.str() + " clips the " + percent(P.clipped_low) +
           " of calibration values below 0 (the data spans " + range + ")" + what;
  }
  return point + ": " + spec.str() + " clips " + percent(forced) + " of calibration values (the data spans " +
         range + ", the format holds [" + c10::str((spec.qmin()) * std::exp2(-spec.frac_bits)) + ", " +
         c10::str((spec.qmax()) * std::exp2(-spec.frac_bits)) + "]); use more integer bits (a larger m in Qm.n)";
}

std::string fmt_scale(double s, double z) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "scale=%.6g zp=%g", s, z);
  return buf;
}

}  // namespace scheme
}  // namespace anybit
