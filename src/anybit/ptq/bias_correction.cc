// Empirical bias correction; see bias_correction.h.
#include "anybit/ptq/bias_correction.h"

#include <ATen/ATen.h>

#include "anybit/ptq/capture.h"
#include "anybit/source/data_source.h"

namespace anybit {
namespace jit = torch::jit;

std::vector<BiasCorrection> correct_bias(ModelGraph& q, ModelGraph& ref, const DataSource& calib,
                                         int64_t samples) {
  std::vector<BiasCorrection> out;
  jit::Value* qself = q.graph->inputs().at(0);
  for (const Point& p : q.points) {
    if (p.role != Role::kWeight || !p.node) continue;
    const Point* f = ref.find(p.name);
    if (!f || !f->node) continue;
    const std::string k = p.node->kind().toQualString();
    if (k != "aten::conv1d" && k != "aten::conv2d" && k != "aten::conv3d" && k != "aten::_convolution" &&
        k != "aten::linear")
      continue;
    std::string bpath;
    if (!attr_path(p.node->input(2), qself, &bpath)) continue;  // no bias slot in the graph
    c10::IValue b = resolve_attr(q.module, bpath);
    if (!b.isTensor()) continue;
    // measured one layer at a time: each correction changes what later layers see
    at::Tensor yq = capture_values(q, {p.node->output()}, calib, samples, 128)[0];
    at::Tensor yf = capture_values(ref, {f->node->output()}, calib, samples, 128)[0];
    // the mean over every dimension but the channels': dim 1 of a conv's output, the last of a
    // linear's ([N, F], or [N, T, F] in a transformer)
    const int64_t channel = k == "aten::linear" ? yq.dim() - 1 : 1;
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < yq.dim(); ++d)
      if (d != channel) dims.push_back(d);
    at::Tensor shift = (yq.to(at::kDouble) - yf.to(at::kDouble)).mean(dims);  // [C]
    at::Tensor bias = b.toTensor().detach();
    assign_attr(q.module, bpath, (bias.to(at::kDouble) - shift).to(bias.scalar_type()));
    out.push_back({p.name, shift.abs().mean().item<double>()});
  }
  invalidate_plan(q);
  return out;
}

}  // namespace anybit
