// The preparation every front end shares; see pipeline.h.
#include "anybit/api/pipeline.h"

#include "anybit/ptq/fold_bn.h"
#include "anybit/quant/spec.h"

namespace anybit {

PreparedModel prepare_model(const std::string& path, const PrepareOptions& o) {
  const bool cle = o.cle || o.cle_relu6;
  if (cle && !o.fold_bn)
    throw Error("cross-layer equalization needs BatchNorm folded first (--fold-bn; fold_bn=True in Python): a "
                "BatchNorm between two layers stops equalization");
  PreparedModel p{load_model(path), {}, 0, {}};
  p.uncovered = p.graph.uncovered;
  if (o.fold_bn) p.folded = fold_batch_norm(p.graph);
  if (cle) {
    CleOptions co;
    co.relu6_to_relu = o.cle_relu6;
    p.cle = equalize_cross_layer(p.graph, co);
  }
  return p;
}

QuantizedModel quantize_model(const std::string& path, const Config& config, const DataSource* calib,
                              const PrepareOptions& prepare, const QuantizeOptions& options,
                              const std::string& out_path,
                              const std::function<void(const PreparedModel&)>& on_prepared) {
  PreparedModel p = prepare_model(path, prepare);
  if (on_prepared) on_prepared(p);
  QuantizedModel q{p.uncovered, p.folded, p.cle, quantize(std::move(p.graph), config, calib, options)};
  if (!out_path.empty()) save_module(q.result.model.module, out_path);
  return q;
}

}  // namespace anybit
