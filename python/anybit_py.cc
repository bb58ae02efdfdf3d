// The Python binding: thin wrappers over the C++ API (src/anybit/core/quantize.h).
// Models cross the boundary as TorchScript files written by the Python side, so the
// binding needs no LibTorch-Python type casters and works with any torch build that
// shares this LibTorch.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "anybit/core/export.h"
#include "anybit/core/noise.h"
#include "anybit/core/finetune.h"
#include "anybit/core/quantize.h"
#include "anybit/core/pipeline.h"
#include "anybit/core/search.h"
#include "anybit/core/sweep.h"
#include "anybit/data/dataset.h"
#include "anybit/quant/device.h"


#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <type_traits>

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

py::list uncovered_list(const std::vector<anybit::Uncovered>& uncovered) {
  py::list unc;
  for (const auto& u : uncovered) {
    py::dict d;
    d["op"] = u.op;
    d["module"] = u.module;
    d["reason"] = u.reason;
    d["where"] = u.where();  // "aten::lstm in rnn", as the CLI's messages say it
    unc.append(d);
  }
  return unc;
}

py::dict coverage(const std::string& model_path) {
  anybit::ModelGraph g = anybit::load_model(model_path);
  py::dict out;
  out["linear_algebra_ops"] = g.linear_algebra_ops;
  out["with_points"] = g.linear_algebra_ops - static_cast<int>(g.uncovered.size());
  out["uncovered"] = uncovered_list(g.uncovered);
  return out;
}

// The per-point report and the ops without points (the uncovered list of coverage), from one
// analysis of the model.
py::tuple quantize(const std::string& model_path, const std::string& config_text,
                  const std::string& config_source, const std::string& data_spec,
                  const anybit::PrepareOptions& prepare, anybit::QuantizeOptions options, bool dry_run,
                  const std::string& out_path) {
  std::vector<anybit::PointReport> pts;
  std::vector<anybit::Uncovered> uncovered;
  {
    py::gil_scoped_release release;
    anybit::Config c = anybit::parse_config_string(config_text, config_source);
    anybit::PreparedModel prepared = anybit::prepare_model(model_path, prepare);
    anybit::ModelGraph& g = prepared.graph;
    uncovered = prepared.uncovered;
    if (dry_run) {
      pts = anybit::plan(g, c);
    } else {
      std::unique_ptr<anybit::DataSource> data;
      if (!data_spec.empty()) data = anybit::open_data(data_spec);
      anybit::QuantizeResult q = anybit::quantize(std::move(g), c, data.get(), options);
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
    if (!r.auto_spec.empty()) d["auto_spec"] = r.auto_spec;
    if (r.clipped_low >= 0) {
      d["clipped_low"] = r.clipped_low;
      d["clipped_high"] = r.clipped_high;
    }
    if (!r.clip_warning.empty()) d["clip_warning"] = r.clip_warning;
    out.append(d);
  }
  return py::make_tuple(out, uncovered_list(uncovered));
}

py::dict evaluate(const std::string& model_path, const std::string& data_spec,
                  const std::string& reference_path, int64_t batch_size, bool freeze, bool fused,
                  const std::string& device) {
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
    o.fused = fused;
    o.device = anybit::parse_device(device);
    r = anybit::evaluate(m, *data, o, ref.get());
  }
  py::dict d;
  d["samples"] = r.samples;
  d["top1"] = r.top1;
  d["top5"] = r.top5;
  d["loss"] = r.loss;
  d["seconds"] = r.seconds;
  d["runtime"] = r.runtime;
  if (!r.runtime_note.empty()) d["runtime_note"] = r.runtime_note;
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

py::list sweep(const anybit::SweepOptions& o) {
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
    if (!r.format.empty()) d["format"] = r.format;
    d["top1"] = r.top1;
    d["top5"] = r.top5;
    d["seconds"] = r.seconds;
    if (r.agreement >= 0) d["agreement"] = r.agreement;
    out.append(d);
  }
  return out;
}

py::dict search(const anybit::SearchOptions& o) {
  anybit::SearchResult r;
  {
    py::gil_scoped_release release;
    r = anybit::run_search(o);
  }
  py::list layers, rows;
  for (const auto& l : r.layers) {
    py::dict d;
    d["point"] = l.point;
    d["input"] = l.input_point;
    d["params"] = l.params;
    d["macs"] = l.macs;
    d["wbits"] = l.wbits;
    d["abits"] = l.abits;
    d["sensitivity"] = l.loss;
    layers.append(d);
  }
  for (const auto& x : r.rows) {
    py::dict d;
    d["kind"] = x.kind;
    d["label"] = x.label;
    d["budget"] = x.budget;
    d["avg_wbits"] = x.avg_wbits;
    d["size_bytes"] = x.size_bytes;
    d["bops"] = x.bops;
    d["predicted"] = x.predicted;
    d["top1"] = x.top1;
    d["top5"] = x.top5;
    if (x.agreement >= 0) d["agreement"] = x.agreement;
    d["seconds"] = x.seconds;
    d["config"] = x.config;
    rows.append(d);
  }
  py::dict out;
  out["budget"] = r.budget.text;
  out["layers"] = layers;
  out["rows"] = rows;
  out["exact"] = r.exact;
  out["config"] = r.config_path;
  out["command"] = r.command;
  out["sensitivity_seconds"] = r.sensitivity_seconds;
  out["total_seconds"] = r.total_seconds;
  return out;
}

py::list finetune(const std::string& model_path, const std::string& data_spec, const std::string& out_path,
                  int epochs, double lr, const std::string& optimizer, double weight_decay, double label_smoothing,
                  int64_t batch_size, int64_t max_steps, uint64_t seed, const std::string& checkpoint_dir,
                  bool resume, const std::string& schedule, double momentum, const std::string& teacher_path,
                  double kd_weight, double kd_temperature, int freeze_bn_epoch, const std::string& noise,
                  const std::string& device) {
  std::vector<anybit::EpochReport> reports;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    auto data = anybit::open_data(data_spec);
    anybit::FinetuneOptions o;
    o.schedule = schedule;
    o.momentum = momentum;
    if (!teacher_path.empty()) o.teacher = anybit::load_module(teacher_path);
    o.kd_weight = kd_weight;
    o.kd_temperature = kd_temperature;
    o.freeze_bn_epoch = freeze_bn_epoch;
    if (!noise.empty()) o.noise_rel = anybit::noise_rel_of(noise);
    o.device = anybit::parse_device(device);
    o.progress = false;
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
    d["train_kd_loss"] = r.train_kd_loss;
    d["bn_folded"] = r.bn_folded;
    d["steps"] = r.steps;
    d["seconds"] = r.seconds;
    out.append(d);
  }
  return out;
}

// --- integer export and the integer engine ------------------------------------------------

namespace intsim = anybit::intsim;

py::dict quant_dict(const intsim::TensorSpec& t) {
  py::dict d;
  d["name"] = t.name;
  d["shape"] = t.shape;
  d["scale"] = t.q.scale;
  d["zero_point"] = t.q.zero_point;
  d["qmin"] = t.q.qmin;
  d["qmax"] = t.q.qmax;
  return d;
}

py::dict export_model(const std::string& model_path, const std::string& out_dir,
                      const std::vector<int64_t>& input_shape, const std::string& source) {
  anybit::ExportResult r;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    anybit::ExportOptions o;
    o.input_shape = input_shape;
    o.source = source;
    r = anybit::export_integer_model(m, o);
    anybit::save_integer_model_atomic(r.model, out_dir);
  }
  std::map<std::string, int> kinds;
  for (const auto& op : r.model.ops) kinds[intsim::op_kind_name(op.kind)]++;
  py::dict d;
  d["output"] = out_dir;
  d["op_count"] = r.model.ops.size();
  d["ops"] = kinds;
  d["notes"] = r.notes;
  py::list ins, outs;
  for (const auto& t : r.model.inputs) ins.append(quant_dict(t));
  for (const auto& t : r.model.outputs) outs.append(quant_dict(t));
  d["inputs"] = ins;
  d["outputs"] = outs;
  return d;
}

intsim::EngineOptions engine_options(int acc_bits, const std::string& overflow, const std::string& mac, int threads,
                                     bool reference_kernels) {
  intsim::EngineOptions o;
  if (overflow != "wrap" && overflow != "saturate")
    throw anybit::Error("overflow: '" + overflow + "' is not wrap or saturate");
  if (threads < 0) throw anybit::Error("threads: must be >= 0 (0: one per hardware thread), got " + std::to_string(threads));
  o.accumulator.bits = acc_bits;
  o.accumulator.overflow = overflow == "wrap" ? intsim::Overflow::kWrap : intsim::Overflow::kSaturate;
  intsim::check_accumulator_spec(o.accumulator);
  o.mac = intsim::parse_mac_model(mac);
  o.threads = threads;
  if (reference_kernels) o.path = intsim::KernelPath::kReference;
  return o;
}

py::list layer_stats(const std::vector<intsim::LayerStats>& stats) {
  py::list layers;
  for (const auto& l : stats) {
    py::dict d;
    d["name"] = l.name;
    d["op"] = l.op;
    d["fast_path"] = l.fast_path;
    d["dot_products"] = l.dot_products;
    d["overflows"] = l.overflows;
    d["mean_abs_error"] = l.mean_abs_error();
    d["max_abs_error"] = l.max_abs_error;
    d["clipped"] = l.clipped;
    layers.append(d);
  }
  return layers;
}

// Integer values of any NumPy integer array, checked to fit int32 (never wrapped).
template <typename T>
void copy_integers(const py::array& a, std::vector<int32_t>& out, const std::string& what) {
  auto v = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!v) throw anybit::Error(what + ": cannot read the array");
  const T* p = v.data();
  out.resize(static_cast<size_t>(v.size()));
  for (py::ssize_t i = 0; i < v.size(); ++i) {
    const T x = p[i];
    if constexpr (std::is_signed_v<T>) {
      if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
        throw anybit::Error(what + ": value " + std::to_string(x) + " at flat index " + std::to_string(i) +
                            " does not fit int32");
    } else {
      if (x > static_cast<T>(std::numeric_limits<int32_t>::max()))
        throw anybit::Error(what + ": value " + std::to_string(x) + " at flat index " + std::to_string(i) +
                            " does not fit int32");
    }
    out[i] = static_cast<int32_t>(x);
  }
}

// An input array for the engine: integer arrays are the integers themselves; floating
// arrays are quantized with the model input's parameters (intsim::quantize_tensor:
// x * (1/s) in float32, round half to even, + z, clamp), as the fake-quantized model does.
intsim::Tensor engine_input(const py::array& a, const intsim::TensorSpec& spec, size_t index) {
  const std::string what = "inputs[" + std::to_string(index) + "] (" + spec.name + ")";
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const char kind = a.dtype().kind();
  if (kind == 'f') {
    auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!f) throw anybit::Error(what + ": cannot read the array as float32");
    return intsim::quantize_tensor(f.data(), shape, spec.q);
  }
  intsim::Tensor t;
  t.shape = shape;
  if (kind == 'i') {
    copy_integers<int64_t>(a, t.data, what);
  } else if (kind == 'u') {
    copy_integers<uint64_t>(a, t.data, what);
  } else {
    throw anybit::Error(what + ": expected an integer or floating-point array, got dtype " +
                        py::str(a.dtype()).cast<std::string>());
  }
  return t;
}

py::tuple intsim_run(const std::string& model_dir, const std::vector<py::array>& inputs, int acc_bits,
                     const std::string& overflow, const std::string& mac, int threads, bool reference_kernels) {
  std::unique_ptr<intsim::Engine> engine;
  {
    py::gil_scoped_release release;
    intsim::EngineOptions o = engine_options(acc_bits, overflow, mac, threads, reference_kernels);
    engine = std::make_unique<intsim::Engine>(intsim::load_model(model_dir), o);
  }
  const auto& specs = engine->model().inputs;
  if (inputs.size() != specs.size())
    throw anybit::Error(model_dir + ": the model has " + std::to_string(specs.size()) + " input(s), got " +
                        std::to_string(inputs.size()));
  std::vector<intsim::Tensor> in;
  for (size_t i = 0; i < inputs.size(); ++i) in.push_back(engine_input(inputs[i], specs[i], i));
  std::vector<intsim::Tensor> out;
  {
    py::gil_scoped_release release;
    try {
      out = engine->run(in);
    } catch (const anybit::Error& e) {
      throw anybit::Error(model_dir + ": " + e.what());
    }
  }
  py::list arrays;
  for (const auto& t : out) {
    std::vector<py::ssize_t> s(t.shape.begin(), t.shape.end());
    py::array_t<int32_t> a(s);
    if (!t.data.empty()) std::memcpy(a.mutable_data(), t.data.data(), t.data.size() * sizeof(int32_t));
    arrays.append(a);
  }
  return py::make_tuple(arrays, layer_stats(engine->stats()));
}

// The exported model run by anybit::run_integer_reference, the LibTorch twin of the engine
// (exact integer convolutions in double precision): for tests that hold the engine to it.
py::list integer_reference(const std::string& model_dir, const std::vector<py::array>& inputs) {
  intsim::Model m = intsim::load_model(model_dir);
  if (inputs.size() != m.inputs.size())
    throw anybit::Error(model_dir + ": the model has " + std::to_string(m.inputs.size()) + " input(s), got " +
                        std::to_string(inputs.size()));
  std::vector<at::Tensor> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    intsim::Tensor t = engine_input(inputs[i], m.inputs[i], i);
    in.push_back(at::tensor(t.data, at::kInt).reshape(t.shape));
  }
  std::vector<at::Tensor> out;
  {
    py::gil_scoped_release release;
    out = anybit::run_integer_reference(m, in);
  }
  py::list arrays;
  for (const auto& o : out) {
    at::Tensor v = o.to(at::kInt).contiguous();
    std::vector<py::ssize_t> s(v.sizes().begin(), v.sizes().end());
    py::array_t<int32_t> a(s);
    if (v.numel()) std::memcpy(a.mutable_data(), v.data_ptr<int32_t>(), v.numel() * sizeof(int32_t));
    arrays.append(a);
  }
  return arrays;
}

py::dict intsim_evaluate(const std::string& model_dir, const std::string& data_spec, const std::string& reference_path,
                         int64_t batch_size, int acc_bits, const std::string& overflow, const std::string& mac,
                         int threads, bool reference_kernels, bool progress, const std::string& calib_spec,
                         int64_t calib_samples) {
  anybit::IntegerEvalResult r;
  std::string mac_name;
  {
    py::gil_scoped_release release;
    anybit::IntegerEvalOptions o;
    o.engine = engine_options(acc_bits, overflow, mac, threads, reference_kernels);
    o.batch_size = batch_size;
    o.progress = progress;
    std::unique_ptr<anybit::DataSource> calib;
    if (!calib_spec.empty()) calib = anybit::open_data(calib_spec);
    o.calib_data = calib.get();
    o.calib_samples = calib_samples;
    mac_name = o.engine.mac ? o.engine.mac->describe() : "exact";
    intsim::Model m = intsim::load_model(model_dir);
    std::unique_ptr<torch::jit::Module> ref;
    if (!reference_path.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(reference_path));
    auto data = anybit::open_data(data_spec);
    r = anybit::evaluate_integer(m, *data, o, ref.get());
  }
  py::dict d;
  py::dict acc;
  acc["bits"] = acc_bits;
  acc["overflow"] = overflow;
  d["accumulator"] = acc;
  d["mac"] = mac_name;
  d["samples"] = r.samples;
  d["top1"] = r.top1;
  d["top5"] = r.top5;
  d["seconds"] = r.seconds;
  if (!reference_path.empty()) {
    d["agreement"] = r.agreement;
    d["outputs_equal"] = r.equal;
    d["outputs_one_step"] = r.one_step;
    d["outputs_more"] = r.more;
    d["max_steps"] = r.max_steps;
    py::list agreement;
    for (const auto& a : r.layer_agreement) {
      py::dict e;
      e["point"] = a.point;
      e["equal"] = a.equal;
      e["one_step"] = a.one_step;
      e["max_steps"] = a.max_steps;
      agreement.append(e);
    }
    d["layer_agreement"] = agreement;
  }
  d["layers"] = layer_stats(r.layers);
  return d;
}

// (noise.json's text, the CLI's table)
py::tuple noise_sweep(const std::string& model_dir, const std::string& data_spec, const std::string& mac, int seeds,
                      const std::string& out_dir, bool resume, int acc_bits, const std::string& overflow, int threads,
                      int64_t batch_size, const std::string& calib_spec, int64_t calib_samples, bool progress,
                      const std::string& model_name, const std::string& data_name) {
  std::string text, table;
  {
    py::gil_scoped_release release;
    anybit::NoiseSweepOptions o;
    o.mac = mac;
    o.seeds = seeds;
    o.out_dir = out_dir;
    o.resume = resume;
    o.progress = progress;
    o.eval.engine = engine_options(acc_bits, overflow, "exact", threads, false);
    o.eval.batch_size = batch_size;
    std::unique_ptr<anybit::DataSource> calib;
    if (!calib_spec.empty()) calib = anybit::open_data(calib_spec);
    o.eval.calib_data = calib.get();
    o.eval.calib_samples = calib_samples;
    o.model_name = model_name;
    o.data_name = data_name;
    intsim::Model m = intsim::load_model(model_dir);
    auto data = anybit::open_data(data_spec);
    const anybit::NoiseSweepResult r = anybit::run_noise_sweep(m, *data, o);
    text = anybit::noise_json(r, o);
    table = anybit::format_noise_table(r);
  }
  return py::make_tuple(text, table);
}

}  // namespace

PYBIND11_MODULE(_anybit, m) {
  m.doc() = "anybit C++ core";
  static py::exception<anybit::Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const anybit::Error& e) {  // PyErr_SetString: the one spelling every pybind11 version takes
      PyErr_SetString(error.ptr(), e.what());
    }
  });
  m.def("points", &points, py::arg("model_path"));
  // "" once libanybit_cuda's kernels are registered, else why not (quant/device.h)
  m.def("load_cuda_kernels", &anybit::load_cuda_kernels);
  m.def("coverage", &coverage, py::arg("model_path"));
  // the library's option structs, filled by keyword from Python (anybit/__init__.py)
  py::class_<anybit::PrepareOptions>(m, "PrepareOptions")
      .def(py::init<>())
      .def_readwrite("fold_bn", &anybit::PrepareOptions::fold_bn)
      .def_readwrite("cle", &anybit::PrepareOptions::cle)
      .def_readwrite("cle_relu6", &anybit::PrepareOptions::cle_relu6);
  py::class_<anybit::QuantizeOptions>(m, "QuantizeOptions")
      .def(py::init<>())
      .def_readwrite("calib_batches", &anybit::QuantizeOptions::calib_batches)
      .def_readwrite("batch_size", &anybit::QuantizeOptions::batch_size)
      .def_readwrite("portable", &anybit::QuantizeOptions::portable)
      .def_readwrite("progress", &anybit::QuantizeOptions::progress)
      .def_readwrite("adaround_iterations", &anybit::QuantizeOptions::adaround_iterations)
      .def_readwrite("brecq_iterations", &anybit::QuantizeOptions::brecq_iterations)
      .def_readwrite("gptq", &anybit::QuantizeOptions::gptq)
      .def_readwrite("bias_correction", &anybit::QuantizeOptions::bias_correction)
      .def_readwrite("int32_bias", &anybit::QuantizeOptions::int32_bias)
      .def_readwrite("strict", &anybit::QuantizeOptions::strict)
      .def_property(
          "device", [](const anybit::QuantizeOptions& o) { return o.device.str(); },
          [](anybit::QuantizeOptions& o, const std::string& d) { o.device = anybit::parse_device(d); });
  m.def("quantize", &quantize, py::arg("model_path"), py::arg("config_text"), py::arg("config_source"),
        py::arg("data_spec"), py::arg("prepare"), py::arg("options"), py::arg("dry_run"), py::arg("out_path"));
  m.def("evaluate", &evaluate, py::arg("model_path"), py::arg("data_spec"), py::arg("reference_path"),
        py::arg("batch_size"), py::arg("freeze"), py::arg("fused") = true, py::arg("device") = "cpu");
  py::class_<anybit::SweepOptions>(m, "SweepOptions")
      .def(py::init<>())
      .def_readwrite("models", &anybit::SweepOptions::models)
      .def_readwrite("pairs", &anybit::SweepOptions::pairs)
      .def_readwrite("formats", &anybit::SweepOptions::formats)
      .def_readwrite("methods", &anybit::SweepOptions::methods)
      .def_readwrite("adaround_iterations", &anybit::SweepOptions::adaround_iterations)
      .def_readwrite("brecq_iterations", &anybit::SweepOptions::brecq_iterations)
      .def_readwrite("calib_data", &anybit::SweepOptions::calib_data)
      .def_readwrite("eval_data", &anybit::SweepOptions::eval_data)
      .def_readwrite("calib_batches", &anybit::SweepOptions::calib_batches)
      .def_readwrite("batch_size", &anybit::SweepOptions::batch_size)
      .def_readwrite("fold_bn", &anybit::SweepOptions::fold_bn)
      .def_readwrite("first_last_8bit", &anybit::SweepOptions::first_last_8bit)
      .def_readwrite("out_dir", &anybit::SweepOptions::out_dir)
      .def_readwrite("resume", &anybit::SweepOptions::resume)
      .def_readwrite("progress", &anybit::SweepOptions::progress)
      .def_readwrite("device", &anybit::SweepOptions::device);
  m.def("sweep", &sweep, py::arg("options"));
  py::class_<anybit::SearchOptions>(m, "SearchOptions")
      .def(py::init<>())
      .def_readwrite("model", &anybit::SearchOptions::model)
      .def_readwrite("calib_data", &anybit::SearchOptions::calib_data)
      .def_readwrite("eval_data", &anybit::SearchOptions::eval_data)
      .def_readwrite("budget", &anybit::SearchOptions::budget)
      .def_readwrite("weights", &anybit::SearchOptions::weights)
      .def_readwrite("acts", &anybit::SearchOptions::acts)
      .def_readwrite("acts_fixed", &anybit::SearchOptions::acts_fixed)
      .def_readwrite("uniform", &anybit::SearchOptions::uniform)
      .def_readwrite("metric", &anybit::SearchOptions::metric)
      .def_readwrite("method", &anybit::SearchOptions::method)
      .def_readwrite("adaround_iterations", &anybit::SearchOptions::adaround_iterations)
      .def_readwrite("brecq_iterations", &anybit::SearchOptions::brecq_iterations)
      .def_readwrite("calib_batches", &anybit::SearchOptions::calib_batches)
      .def_readwrite("batch_size", &anybit::SearchOptions::batch_size)
      .def_readwrite("sensitivity_samples", &anybit::SearchOptions::sensitivity_samples)
      .def_readwrite("hessian_iterations", &anybit::SearchOptions::hessian_iterations)
      .def_readwrite("fold_bn", &anybit::SearchOptions::fold_bn)
      .def_readwrite("out_dir", &anybit::SearchOptions::out_dir)
      .def_readwrite("resume", &anybit::SearchOptions::resume)
      .def_readwrite("progress", &anybit::SearchOptions::progress);
  m.def("search", &search, py::arg("options"));
  m.def("finetune", &finetune, py::arg("model_path"), py::arg("data_spec"), py::arg("out_path"), py::arg("epochs"),
        py::arg("lr"), py::arg("optimizer"), py::arg("weight_decay"), py::arg("label_smoothing"),
        py::arg("batch_size"), py::arg("max_steps"), py::arg("seed"), py::arg("checkpoint_dir"), py::arg("resume"),
        py::arg("schedule") = "cosine", py::arg("momentum") = 0.9, py::arg("teacher_path") = "",
        py::arg("kd_weight") = 1.0, py::arg("kd_temperature") = 1.0, py::arg("freeze_bn_epoch") = -1,
        py::arg("noise") = "", py::arg("device") = "cpu");
  m.def("probe", &probe, py::arg("model_path"), py::arg("x"));
  m.def("export_model", &export_model, py::arg("model_path"), py::arg("out_dir"), py::arg("input_shape"),
        py::arg("source"));
  m.def("intsim_run", &intsim_run, py::arg("model_dir"), py::arg("inputs"), py::arg("acc_bits"), py::arg("overflow"),
        py::arg("mac"), py::arg("threads"), py::arg("reference_kernels"));
  m.def("integer_reference", &integer_reference, py::arg("model_dir"), py::arg("inputs"));
  m.def("intsim_evaluate", &intsim_evaluate, py::arg("model_dir"), py::arg("data_spec"), py::arg("reference_path"),
        py::arg("batch_size"), py::arg("acc_bits"), py::arg("overflow"), py::arg("mac"), py::arg("threads"),
        py::arg("reference_kernels"), py::arg("progress"), py::arg("calib_spec"), py::arg("calib_samples"));
  m.def("noise_sweep", &noise_sweep, py::arg("model_dir"), py::arg("data_spec"), py::arg("mac"), py::arg("seeds"),
        py::arg("out_dir"), py::arg("resume"), py::arg("acc_bits"), py::arg("overflow"), py::arg("threads"),
        py::arg("batch_size"), py::arg("calib_spec"), py::arg("calib_samples"), py::arg("progress"),
        py::arg("model_name"), py::arg("data_name"));
  m.def("canonical_spec", [](const std::string& s) { return anybit::parse_spec(s).str(); });
}
