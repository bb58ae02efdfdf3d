// GPTQ; see gptq.h for the algorithm and its source.
#include "anybit/ptq/gptq.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

#include "anybit/data/progress.h"
#include "anybit/ptq/capture.h"
#include "anybit/source/data_source.h"

namespace anybit {
namespace jit = torch::jit;
using at::indexing::Slice;

at::Tensor gptq_quantize(const at::Tensor& W, const at::Tensor& H, const at::Tensor& scale, int64_t qmin,
                         int64_t qmax, const GptqOptions& o, int64_t group) {
  TORCH_CHECK(W.dim() == 2 && H.dim() == 2 && H.size(0) == W.size(1) && H.size(1) == W.size(1),
              "gptq_quantize: W [rows, cols] and H [cols, cols]");
  const int64_t rows = W.size(0), cols = W.size(1);
  at::Tensor w = W.to(at::kDouble).clone();
  at::Tensor h = H.to(at::kDouble).clone();
  // the scale of every element: S [rows, cols]
  at::Tensor s = scale.to(at::kDouble).reshape({-1});
  at::Tensor S;
  if (group > 0) {
    TORCH_CHECK(cols % group == 0 && s.numel() == rows * (cols / group), "gptq_quantize: one scale per group");
    S = s.reshape({rows, cols / group}).repeat_interleave(group, 1).contiguous();
  } else {
    TORCH_CHECK(s.numel() == 1 || s.numel() == rows, "gptq_quantize: one scale or one per row");
    S = s.reshape({-1, 1}).expand({rows, cols}).contiguous();
  }
  // inputs that were always zero: no information, no error to move (as the reference code)
  const at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.index_put_({Slice(), dead}, 0.0);
  at::Tensor perm, inv;
  if (o.act_order) {
    perm = at::argsort(h.diagonal(), /*dim=*/0, /*descending=*/true);
    inv = at::argsort(perm);
    w = w.index_select(1, perm);
    S = S.index_select(1, perm);
    h = h.index_select(0, perm).index_select(1, perm);
  }
  h.diagonal().add_(o.damp * h.diagonal().mean().item<double>());
  // the upper Cholesky factor of H^-1: row j holds the OBS update of the columns after j
  const at::Tensor U = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true);
  at::Tensor q = at::zeros_like(w);
  const int64_t block = std::max<int64_t>(1, o.block);
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(i1 + block, cols), n = i2 - i1;
    at::Tensor w1 = w.slice(1, i1, i2).clone();
    at::Tensor err1 = at::zeros({rows, n}, w.options());
    const at::Tensor u1 = U.slice(0, i1, i2).slice(1, i1, i2);
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor col = w1.select(1, i);
      const at::Tensor sc = S.select(1, i1 + i);
      const at::Tensor qc = (col / sc).round().clamp(qmin, qmax) * sc;
      q.select(1, i1 + i).copy_(qc);
      const at::Tensor e = (col - qc) / u1[i][i];  // a 0-d tensor: no device sync per column
      w1.slice(1, i).sub_(e.unsqueeze(1) * u1[i].slice(0, i).unsqueeze(0));
      err1.select(1, i).copy_(e);
    }
    if (i2 < cols) w.slice(1, i2).sub_(err1.matmul(U.slice(0, i1, i2).slice(1, i2)));
  }
  if (o.act_order) q = q.index_select(1, inv);
  return q;
}

at::Tensor gptq_target_weight(const at::Tensor& W, const at::Tensor& H, const at::Tensor& C, double damp) {
  // W' = W C (H + damp)^-1, as the solution of (H + damp) W'^T = C^T W^T (H is symmetric)
  at::Tensor hd = H.to(at::kDouble).clone();
  hd.diagonal().add_(damp * hd.diagonal().mean().item<double>() + 1e-12);
  return at::linalg_solve(hd, C.to(at::kDouble).t().matmul(W.to(at::kDouble).t())).t();
}

namespace {

// What GPTQ needs of a layer's op: its kind and, for a conv, how its input unfolds.
struct Unfold {
  bool linear = false;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  std::string why_not;  // set when GPTQ cannot handle the op

  explicit Unfold(jit::Node* n) {
    const std::string kind = n->kind().toQualString();
    if (kind == "aten::linear") {
      linear = true;
      return;
    }
    size_t first = 3;
    if (kind == "aten::_convolution") {
      auto t = jit::toIValue(n->input(6));
      if (!t || t->toBool()) {
        why_not = "transposed convolution";
        return;
      }
    } else if (kind != "aten::conv2d") {
      why_not = kind + " (GPTQ unfolds 2-D convolutions and linear layers)";
      return;
    }
    auto st = jit::toIValue(n->input(first)), pd = jit::toIValue(n->input(first + 1)),
         dl = jit::toIValue(n->input(first + 2));
    auto gr = jit::toIValue(n->input(kind == "aten::_convolution" ? 8 : first + 3));
    if (!st || !pd || !dl || !gr || !pd->isIntList()) {
      why_not = "a convolution whose stride, padding or groups are not constants";
      return;
    }
    stride = st->toIntVector();
    padding = pd->toIntVector();
    dilation = dl->toIntVector();
    groups = gr->toInt();
    if (stride.size() != 2) why_not = "a convolution that is not 2-D";
  }
};

// tr(D H D^T) / rows, D = Q - W: the layer output's squared error up to H's scale (with the
// asymmetric target, up to a term that does not depend on Q)
double output_error(const at::Tensor& q, const at::Tensor& w, const at::Tensor& h) {
  const at::Tensor d = (q.to(at::kDouble) - w.to(at::kDouble));
  return (d.matmul(h.to(at::kDouble)) * d).sum().item<double>() / std::max<int64_t>(1, w.size(0));
}

}  // namespace

std::vector<GptqReport> gptq(ModelGraph& qg, ModelGraph* ref, const std::vector<AdaRoundLayer>& layers,
                             const DataSource& calib, const GptqOptions& o) {
  std::vector<GptqReport> reports;
  data::ProgressBar bar("gptq", static_cast<int64_t>(layers.size()), o.progress);
  torch::NoGradGuard no_grad;
  // why a layer keeps nearest rounding ("" for the layers GPTQ handles)
  std::vector<std::string> skipped(layers.size());
  for (size_t k = 0; k < layers.size(); ++k) {
    skipped[k] = Unfold(layers[k].qnode).why_not;
    if (skipped[k].empty() && layers[k].channel_axis != 0 && layers[k].scale.numel() > 1)
      skipped[k] = "scales along axis " + std::to_string(layers[k].channel_axis);
  }
  auto wants_float_input = [&](size_t k) { return layers[k].fnode && skipped[k].empty(); };
  // the float model's layer inputs do not change: capture as many layers' as fit the cache
  // in one pass (their size per sample from a one-sample pass), not one pass per layer
  std::vector<int64_t> per_sample(layers.size(), 0);
  if (o.asymmetric && ref) {
    std::vector<jit::Value*> vals;
    std::vector<size_t> idx;
    for (size_t k = 0; k < layers.size(); ++k)
      if (wants_float_input(k)) vals.push_back(layers[k].fnode->input(0)), idx.push_back(k);
    if (!vals.empty()) {
      const std::vector<at::Tensor> one = capture_values(*ref, vals, calib, 1, 1);
      for (size_t i = 0; i < idx.size(); ++i) per_sample[idx[i]] = one[i].numel() * 4;
    }
  }
  const int64_t n_samples = std::min(o.samples, calib.size());
  std::map<size_t, at::Tensor> float_inputs;
  auto float_input = [&](size_t li) {
    if (!float_inputs.count(li)) {
      std::vector<jit::Value*> vals;
      std::vector<size_t> idx;
      int64_t bytes = 0;
      for (size_t k = li; k < layers.size(); ++k) {
        if (!wants_float_input(k)) continue;
        bytes += per_sample[k] * n_samples;
        if (!vals.empty() && bytes > o.float_cache_bytes) break;
        vals.push_back(layers[k].fnode->input(0));
        idx.push_back(k);
      }
      const std::vector<at::Tensor> got = capture_values(*ref, vals, calib, o.samples, 128);
      for (size_t i = 0; i < idx.size(); ++i) float_inputs[idx[i]] = got[i];
    }
    at::Tensor x = float_inputs.at(li);
    float_inputs.erase(li);
    return x;
  };
  // the quantized model's layer inputs, each from the latest one it follows from
  CaptureChain quantized(qg, calib, o.samples);
  for (size_t li = 0; li < layers.size(); ++li) {
    const AdaRoundLayer& L = layers[li];
    GptqReport r;
    r.name = L.name;
    r.skipped = skipped[li];
    if (!r.skipped.empty()) {
      reports.push_back(r);
      bar.update(static_cast<int64_t>(li) + 1);
      continue;
    }
    const Unfold u(L.qnode);
    // the layer's input in the quantized model, the earlier layers already done
    const at::Tensor X = quantized.get(L.qnode->input(0));
    const bool asym = o.asymmetric && ref && L.fnode;
    const at::Tensor Xf = asym ? float_input(li) : at::Tensor();
    const at::Tensor W = resolve_attr(qg.module, L.weight_path).toTensor();
    const int64_t rows = W.size(0), g = u.linear ? 1 : u.groups, rg = rows / g;
    at::Tensor Q = at::empty({rows, W.numel() / rows}, W.options().dtype(at::kDouble));
    const at::Tensor W2 = W.reshape({rows, -1});
    const at::Tensor s = L.scale.reshape({-1}).to(W.device(), at::kDouble);
    for (int64_t j = 0; j < g; ++j) {
      const int64_t cols = W2.size(1);
      // on the layer input's device (the GPU with --device cuda)
      at::Tensor H = at::zeros({cols, cols}, X.options().dtype(at::kFloat)), C;
      if (asym) C = at::zeros({cols, cols}, X.options().dtype(at::kFloat));
      int64_t m = 0;
      if (u.linear) {
        const at::Tensor x = X.reshape({-1, cols}).to(at::kFloat);
        H.addmm_(x.t(), x);
        if (asym) C.addmm_(Xf.reshape({-1, cols}).to(at::kFloat).t(), x);
        m = x.size(0);
      } else {
        const int64_t cin = X.size(1) / g;
        const std::vector<int64_t> k = {W.size(2), W.size(3)};
        auto unfold = [&](const at::Tensor& in, int64_t b) {  // [cols, samples x positions]
          const at::Tensor xg = in.slice(1, j * cin, (j + 1) * cin).slice(0, b, std::min(in.size(0), b + 16));
          return at::im2col(xg.to(at::kFloat), k, u.dilation, u.padding, u.stride).permute({1, 0, 2}).reshape({cols, -1});
        };
        for (int64_t b = 0; b < X.size(0); b += 16) {  // im2col a few samples at a time
          const at::Tensor x = unfold(X, b);
          H.addmm_(x, x.t());
          if (asym) C.addmm_(unfold(Xf, b), x.t());
          m += x.size(1);
        }
      }
      H.mul_(2.0 / std::max<int64_t>(1, m));
      if (asym) C.mul_(2.0 / std::max<int64_t>(1, m));
      const at::Tensor w0 = W2.slice(0, j * rg, (j + 1) * rg);
      at::Tensor wj = w0;
      if (asym) {
        wj = gptq_target_weight(w0, H, C, o.damp).to(W.scalar_type());
      }
      // this conv group's rows of the scale (per tensor: the one scale)
      const at::Tensor sj = s.numel() == 1 ? s : s.reshape({rows, -1}).slice(0, j * rg, (j + 1) * rg);
      const at::Tensor qj = gptq_quantize(wj, H, sj, L.qmin, L.qmax, o, L.group);
      // what the quantizer node makes of the weight as it is, on the same objective
      const at::Tensor se = L.group > 0 ? sj.repeat_interleave(L.group, 1) : sj.reshape({-1, 1});
      const at::Tensor nearest = (w0.to(at::kDouble) / se).round().clamp(L.qmin, L.qmax) * se;
      r.err_nearest += output_error(nearest, wj, H) / g;
      r.err_gptq += output_error(qj, wj, H) / g;
      Q.slice(0, j * rg, (j + 1) * rg).copy_(qj);
    }
    // never worse than round-to-nearest on its own objective: otherwise the weight stays as
    // it was (the quantizer node rounds it to nearest)
    if (r.err_gptq <= r.err_nearest) {
      assign_attr(qg.module, L.weight_path, Q.reshape(W.sizes()).to(W.scalar_type()));
      quantized.changed(L.qnode);
    } else {
      r.err_gptq = r.err_nearest;
    }
    reports.push_back(r);
    bar.update(static_cast<int64_t>(li) + 1);
  }
  bar.finish();
  return reports;
}

}  // namespace anybit
