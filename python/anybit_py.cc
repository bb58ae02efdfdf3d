// The Python binding: thin wrappers over the C++ API (src/anybit/core/quantize.h).
// Models cross the boundary as TorchScript files written by the Python side, so the
// binding needs no LibTorch-Python type casters and works with any torch build that
// shares this LibTorch.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "anybit/core/finetune.h"
#include "anybit/core/quantize.h"
#include "anybit/core/sweep.h"
#include "anybit/data/dataset.h"
#include "anybit/ptq/fold_bn.h"

#include <cstring>

namespace py = pybind11;

namespace {

py::dict point_dict(const anybit::PointDesc& p) {
  py::dict d;
  d["index"] = p.index;
  d["name"] = p.name;
  d["role"] = anybit::role_name(p.role);
  d["kind"] = p.kind;
  d["op"] = p.op;
  d["module"] = p.module;
  d["shape"] = p.shape;
  d["params"] = p.numel;
  return d;
}

py::list points(const std::string& model_path) {
  anybit::ModelGraph g = anybit::load_model(model_path);
  py::list out;
  for (const auto& p : g.points) out.append(point_dict(p));
  return out;
}

py::list quantize(const std::string& model_path, const std::string& config_text,
                  const std::string& config_source, const std::string& data_spec,
                  int64_t calib_batches, int64_t batch_size, bool portable, bool dry_run,
                  const std::string& out_path, bool fold_bn, int adaround) {
  std::vector<anybit::PointReport> pts;
  {
    py::gil_scoped_release release;
    anybit::Config c = anybit::parse_config_string(config_text, config_source);
    anybit::ModelGraph g = anybit::load_model(model_path);
    if (fold_bn) anybit::fold_batch_norm(g);
    if (dry_run) {
      pts = anybit::plan(g, c);
    } else {
      std::unique_ptr<anybit::DataSource> data;
      if (!data_spec.empty()) data = anybit::open_data(data_spec);
      anybit::QuantizeOptions o;
      o.calib_batches = calib_batches;
      o.batch_size = batch_size;
      o.portable = portable;
      o.progress = true;
      o.adaround_iterations = adaround;
      anybit::QuantizeResult q = anybit::quantize(std::move(g), c, data.get(), o);
      anybit::save_module(q.model.module, out_path);
      pts = q.points;
    }
  }
  py::list out;
  for (const auto& r : pts) {
    py::dict d = point_dict(r.point);
    d["spec"] = r.assignment.spec.str();
    d["bits"] = r.assignment.spec.is_float() ? 32 : r.assignment.spec.bits;
    d["calibrator"] = r.assignment.calibrator;
    d["rule"] = r.assignment.rule;
    d["params_chosen"] = r.params;
    out.append(d);
  }
  return out;
}

py::dict evaluate(const std::string& model_path, const std::string& data_spec,
                  const std::string& reference_path, int64_t batch_size, bool freeze) {
  anybit::EvalResult r;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    std::unique_ptr<torch::jit::Module> ref;
    if (!reference_path.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(reference_path));
    auto data = anybit::open_data(data_spec);
    anybit::EvalOptions o;
    o.batch_size = batch_size;
    o.freeze = freeze;
    r = anybit::evaluate(m, *data, o, ref.get());
  }
  py::dict d;
  d["samples"] = r.samples;
  d["top1"] = r.top1;
  d["top5"] = r.top5;
  d["loss"] = r.loss;
  d["seconds"] = r.seconds;
  if (r.agreement >= 0) d["agreement"] = r.agreement;
  return d;
}

py::list probe(const std::string& model_path, py::array_t<float, py::array::c_style | py::array::forcecast> x) {
  std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
  at::Tensor t = at::from_blob(const_cast<float*>(x.data()), shape, at::kFloat).clone();
  std::vector<anybit::QuantizerOutput> outs;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    outs = anybit::probe_quantizers(m, t);
  }
  py::list result;
  for (const auto& o : outs) {
    at::Tensor v = o.value.detach().to(at::kFloat).contiguous();
    std::vector<py::ssize_t> s(v.sizes().begin(), v.sizes().end());
    py::array_t<float> a(s);
    std::memcpy(a.mutable_data(), v.data_ptr<float>(), v.numel() * sizeof(float));
    result.append(py::make_tuple(o.point, o.op, a));
  }
  return result;
}

py::list sweep(const std::vector<std::string>& models, const std::vector<std::pair<int, int>>& pairs,
               const std::vector<std::string>& methods, const std::string& calib_data,
               const std::string& eval_data, int64_t calib_batches, bool fold_bn, bool first_last_8bit,
               const std::string& out_dir, bool resume, int adaround_iterations) {
  anybit::SweepOptions o;
  o.adaround_iterations = adaround_iterations;
  o.models = models;
  o.pairs = pairs;
  o.methods = methods;
  o.calib_data = calib_data;
  o.eval_data = eval_data;
  o.calib_batches = calib_batches;
  o.fold_bn = fold_bn;
  o.first_last_8bit = first_last_8bit;
  o.out_dir = out_dir;
  o.resume = resume;
  std::vector<anybit::SweepRow> rows;
  {
    py::gil_scoped_release release;
    rows = anybit::run_sweep(o);
  }
  py::list out;
  for (const auto& r : rows) {
    py::dict d;
    d["model"] = r.model;
    d["method"] = r.method;
    d["wbits"] = r.wbits;
    d["abits"] = r.abits;
    d["top1"] = r.top1;
    d["top5"] = r.top5;
    d["seconds"] = r.seconds;
    if (r.agreement >= 0) d["agreement"] = r.agreement;
    out.append(d);
  }
  return out;
}

py::list finetune(const std::string& model_path, const std::string& data_spec, const std::string& out_path,
                  int epochs, double lr, const std::string& optimizer, double weight_decay, double label_smoothing,
                  int64_t batch_size, int64_t max_steps, uint64_t seed, const std::string& checkpoint_dir,
                  bool resume) {
  std::vector<anybit::EpochReport> reports;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    auto data = anybit::open_data(data_spec);
    anybit::FinetuneOptions o;
    o.epochs = epochs;
    o.lr = lr;
    o.optimizer = optimizer;
    o.weight_decay = weight_decay;
    o.label_smoothing = label_smoothing;
    o.batch_size = batch_size;
    o.max_steps = max_steps;
    o.seed = seed;
    o.checkpoint_dir = checkpoint_dir;
    o.resume = resume;
    reports = anybit::finetune(m, *data, o);
    anybit::save_module(m, out_path);
  }
  py::list out;
  for (const auto& r : reports) {
    py::dict d;
    d["epoch"] = r.epoch;
    d["train_loss"] = r.train_loss;
    d["train_top1"] = r.train_top1;
    d["steps"] = r.steps;
    d["seconds"] = r.seconds;
    out.append(d);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_anybit, m) {
  m.doc() = "anybit C++ core";
  static py::exception<anybit::Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const anybit::Error& e) {
      error(e.what());
    } catch (const anybit::data::Error& e) {
      error(e.what());
    }
  });
  m.def("points", &points, py::arg("model_path"));
  m.def("quantize", &quantize, py::arg("model_path"), py::arg("config_text"), py::arg("config_source"),
        py::arg("data_spec"), py::arg("calib_batches"), py::arg("batch_size"), py::arg("portable"),
        py::arg("dry_run"), py::arg("out_path"), py::arg("fold_bn"), py::arg("adaround"));
  m.def("evaluate", &evaluate, py::arg("model_path"), py::arg("data_spec"), py::arg("reference_path"),
        py::arg("batch_size"), py::arg("freeze"));
  m.def("sweep", &sweep, py::arg("models"), py::arg("pairs"), py::arg("methods"), py::arg("calib_data"),
        py::arg("eval_data"), py::arg("calib_batches"), py::arg("fold_bn"), py::arg("first_last_8bit"),
        py::arg("out_dir"), py::arg("resume"), py::arg("adaround_iterations"));
  m.def("finetune", &finetune, py::arg("model_path"), py::arg("data_spec"), py::arg("out_path"), py::arg("epochs"),
        py::arg("lr"), py::arg("optimizer"), py::arg("weight_decay"), py::arg("label_smoothing"),
        py::arg("batch_size"), py::arg("max_steps"), py::arg("seed"), py::arg("checkpoint_dir"), py::arg("resume"));
  m.def("probe", &probe, py::arg("model_path"), py::arg("x"));
  m.def("canonical_spec", [](const std::string& s) { return anybit::parse_spec(s).str(); });
}
