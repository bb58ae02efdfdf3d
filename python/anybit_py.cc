// The Python binding: thin wrappers over the C++ API (src/anybit/api/quantize.h).
// Models cross the boundary as TorchScript files written by the Python side, so the
// binding needs no LibTorch-Python type casters and works with any torch build that
// shares this LibTorch.
#include <nlohmann/json.hpp>
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "anybit/api/pipeline.h"
#include "anybit/api/quantize.h"
#include "anybit/data/dataset.h"
#include "anybit/export/export.h"
#include "anybit/quant/device.h"
#include "anybit/study/noise.h"
#include "anybit/study/search.h"
#include "anybit/study/sweep.h"
#include "anybit/train/finetune.h"


#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <type_traits>

namespace py = pybind11;

namespace {

// Python objects from the library's JSON form of a result (to_json beside each result type,
// graph/point.h): the dicts the package returns are what the CLI's --json prints.
py::object to_python(const nlohmann::json& j) {
  // imported per call (a cached module): a static py::object would be released after the
  // interpreter has finalized
  return py::module_::import("json").attr("loads")(j.dump());
}

py::object points(const std::string& model_path) {
  anybit::ModelGraph g = anybit::load_model(model_path);
  nlohmann::json out = nlohmann::json::array();
  for (const anybit::PointDesc& p : g.points) out.push_back(p);
  return to_python(out);
}

py::dict coverage(const std::string& model_path) {
  anybit::ModelGraph g = anybit::load_model(model_path);
  py::dict out;
  out["linear_algebra_ops"] = g.linear_algebra_ops;
  out["with_points"] = g.linear_algebra_ops - static_cast<int>(g.uncovered.size());
  out["uncovered"] = to_python(g.uncovered);
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
  std::string float_inputs_note;
  {
    py::gil_scoped_release release;
    anybit::Config c = anybit::parse_config_string(config_text, config_source);
    if (dry_run) {
      anybit::PreparedModel prepared = anybit::prepare_model(model_path, prepare);
      uncovered = prepared.uncovered;
      pts = anybit::plan(prepared.graph, c);
    } else {
      std::unique_ptr<anybit::DataSource> data;
      if (!data_spec.empty()) data = anybit::open_data(data_spec);
      anybit::QuantizedModel q = anybit::quantize_model(model_path, c, data.get(), prepare, options, out_path);
      uncovered = q.uncovered;
      pts = q.result.points;
      auto add = [&](const std::string& note) { float_inputs_note += (float_inputs_note.empty() ? "" : "\n") + note; };
      if (!q.result.integer_inputs.empty()) add(anybit::integer_inputs_note(q.result.integer_inputs));
      for (const auto& why : q.result.gptq_skipped) add("gptq kept nearest rounding for " + why);
      if (!q.result.float_layer_inputs.empty()) add(anybit::float_layer_inputs_note(q.result.float_layer_inputs));
    }
  }
  // (points, uncovered ops, the notes (integer inputs, GPTQ's skipped layers, float layer inputs),
  // one a line, or "")
  return py::make_tuple(to_python(pts), to_python(uncovered), float_inputs_note);
}

py::object evaluate(const std::string& model_path, const std::string& data_spec,
                    const std::string& reference_path, anybit::EvalOptions o) {
  anybit::EvalResult r;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    std::unique_ptr<torch::jit::Module> ref;
    if (!reference_path.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(reference_path));
    auto data = anybit::open_data(data_spec);
    o.progress = false;
    r = anybit::evaluate(m, *data, o, ref.get());
  }
  return to_python(r);
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

py::object sweep(const anybit::SweepOptions& o) {
  std::vector<anybit::SweepRow> rows;
  {
    py::gil_scoped_release release;
    rows = anybit::run_sweep(o);
  }
  return to_python(rows);
}

py::object search(const anybit::SearchOptions& o) {
  anybit::SearchResult r;
  {
    py::gil_scoped_release release;
    r = anybit::run_search(o);
  }
  return to_python(r);
}

py::object finetune(const std::string& model_path, const std::string& data_spec, const std::string& out_path,
                    const std::string& teacher_path, anybit::FinetuneOptions o) {
  std::vector<anybit::EpochReport> reports;
  {
    py::gil_scoped_release release;
    torch::jit::Module m = anybit::load_module(model_path);
    auto data = anybit::open_data(data_spec);
    if (!teacher_path.empty()) o.teacher = anybit::load_module(teacher_path);
    o.progress = false;
    reports = anybit::finetune(m, *data, o);
    anybit::save_module(m, out_path);
  }
  return to_python(reports);
}

// --- integer export and the integer engine ------------------------------------------------

namespace intsim = anybit::intsim;


py::object export_model(const std::string& model_path, const std::string& out_dir,
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
  nlohmann::json j = r;
  j["output"] = out_dir;
  return to_python(j);
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

py::tuple intsim_run(const std::string& model_dir, const std::vector<py::array>& inputs,
                     const intsim::EngineSpec& spec) {
  std::unique_ptr<intsim::Engine> engine;
  {
    py::gil_scoped_release release;
    intsim::EngineOptions o = intsim::engine_options(spec);
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
  return py::make_tuple(arrays, to_python(engine->stats()));
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

py::object intsim_evaluate(const std::string& model_dir, const std::string& data_spec, const std::string& reference_path,
                           const std::string& calib_spec, anybit::IntegerEvalOptions o) {
  anybit::IntegerEvalResult r;
  std::string mac_name;
  {
    py::gil_scoped_release release;
    std::unique_ptr<anybit::DataSource> calib;
    if (!calib_spec.empty()) calib = anybit::open_data(calib_spec);
    o.calib_data = calib.get();
    mac_name = o.engine.mac ? o.engine.mac->describe() : "exact";
    intsim::Model m = intsim::load_model(model_dir);
    std::unique_ptr<torch::jit::Module> ref;
    if (!reference_path.empty()) ref = std::make_unique<torch::jit::Module>(anybit::load_module(reference_path));
    auto data = anybit::open_data(data_spec);
    r = anybit::evaluate_integer(m, *data, o, ref.get());
  }
  nlohmann::json j = r;
  j["accumulator"] = {{"bits", o.engine.accumulator.bits},
                      {"overflow", o.engine.accumulator.overflow == intsim::Overflow::kWrap ? "wrap" : "saturate"}};
  j["mac"] = mac_name;
  return to_python(j);
}

// (noise.json's text, the CLI's table)
py::tuple noise_sweep(const std::string& model_dir, const std::string& data_spec, const std::string& calib_spec,
                      anybit::NoiseSweepOptions o) {
  std::string text, table;
  {
    py::gil_scoped_release release;
    std::unique_ptr<anybit::DataSource> calib;
    if (!calib_spec.empty()) calib = anybit::open_data(calib_spec);
    o.eval.calib_data = calib.get();
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
  py::class_<anybit::EvalOptions>(m, "EvalOptions")
      .def(py::init<>())
      .def_readwrite("batch_size", &anybit::EvalOptions::batch_size)
      .def_readwrite("freeze", &anybit::EvalOptions::freeze)
      .def_readwrite("fused", &anybit::EvalOptions::fused)
      .def_readwrite("scores", &anybit::EvalOptions::scores)
      .def_property(
          "device", [](const anybit::EvalOptions& o) { return o.device.str(); },
          [](anybit::EvalOptions& o, const std::string& d) { o.device = anybit::parse_device(d); });
  m.def("evaluate", &evaluate, py::arg("model_path"), py::arg("data_spec"), py::arg("reference_path"),
        py::arg("options"));
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
      .def_readwrite("device", &anybit::SweepOptions::device)
      .def_readwrite("scores", &anybit::SweepOptions::scores);
  m.def("sweep", &sweep, py::arg("options"));
  m.def("sweep_config", &anybit::sweep_config, py::arg("method"), py::arg("wbits"), py::arg("abits"),
        py::arg("first_last_8bit") = false);
  m.def("sweep_format_config", &anybit::sweep_format_config, py::arg("method"), py::arg("format"),
        py::arg("first_last_8bit") = false);
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
      .def_readwrite("scores", &anybit::SearchOptions::scores)
      .def_readwrite("out_dir", &anybit::SearchOptions::out_dir)
      .def_readwrite("resume", &anybit::SearchOptions::resume)
      .def_readwrite("progress", &anybit::SearchOptions::progress);
  m.def("search", &search, py::arg("options"));
  py::class_<anybit::FinetuneOptions>(m, "FinetuneOptions")
      .def(py::init<>())
      .def_readwrite("epochs", &anybit::FinetuneOptions::epochs)
      .def_readwrite("batch_size", &anybit::FinetuneOptions::batch_size)
      .def_readwrite("optimizer", &anybit::FinetuneOptions::optimizer)
      .def_readwrite("lr", &anybit::FinetuneOptions::lr)
      .def_readwrite("schedule", &anybit::FinetuneOptions::schedule)
      .def_readwrite("momentum", &anybit::FinetuneOptions::momentum)
      .def_readwrite("weight_decay", &anybit::FinetuneOptions::weight_decay)
      .def_readwrite("label_smoothing", &anybit::FinetuneOptions::label_smoothing)
      .def_readwrite("max_steps", &anybit::FinetuneOptions::max_steps)
      .def_readwrite("seed", &anybit::FinetuneOptions::seed)
      .def_readwrite("kd_weight", &anybit::FinetuneOptions::kd_weight)
      .def_readwrite("kd_temperature", &anybit::FinetuneOptions::kd_temperature)
      .def_readwrite("freeze_bn_epoch", &anybit::FinetuneOptions::freeze_bn_epoch)
      .def_readwrite("scores", &anybit::FinetuneOptions::scores)
      .def_readwrite("checkpoint_dir", &anybit::FinetuneOptions::checkpoint_dir)
      .def_readwrite("resume", &anybit::FinetuneOptions::resume)
      .def_property(
          "noise", [](const anybit::FinetuneOptions& o) { return o.noise_rel; },
          [](anybit::FinetuneOptions& o, const std::string& spec) {
            o.noise_rel = spec.empty() ? 0.0 : anybit::noise_rel_of(spec);
          })
      .def_property(
          "device", [](const anybit::FinetuneOptions& o) { return o.device.str(); },
          [](anybit::FinetuneOptions& o, const std::string& d) { o.device = anybit::parse_device(d); });
  m.def("finetune", &finetune, py::arg("model_path"), py::arg("data_spec"), py::arg("out_path"),
        py::arg("teacher_path"), py::arg("options"));
  m.def("probe", &probe, py::arg("model_path"), py::arg("x"));
  m.def("export_model", &export_model, py::arg("model_path"), py::arg("out_dir"), py::arg("input_shape"),
        py::arg("source"));
  // the integer engine's options by keyword (intsim/engine.h EngineSpec, parsed as the CLI's flags are)
  py::class_<intsim::EngineSpec>(m, "EngineSpec")
      .def(py::init<>())
      .def_readwrite("acc_bits", &intsim::EngineSpec::acc_bits)
      .def_readwrite("overflow", &intsim::EngineSpec::overflow)
      .def_readwrite("mac", &intsim::EngineSpec::mac)
      .def_readwrite("threads", &intsim::EngineSpec::threads)
      .def_readwrite("reference_kernels", &intsim::EngineSpec::reference_kernels)
      .def_readwrite("per_dot_product", &intsim::EngineSpec::per_dot_product);
  py::class_<anybit::IntegerEvalOptions>(m, "IntegerEvalOptions")
      .def(py::init<>())
      .def_readwrite("batch_size", &anybit::IntegerEvalOptions::batch_size)
      .def_readwrite("progress", &anybit::IntegerEvalOptions::progress)
      .def_readwrite("calib_samples", &anybit::IntegerEvalOptions::calib_samples)
      .def_property(
          "engine", [](const anybit::IntegerEvalOptions&) { return py::none(); },
          [](anybit::IntegerEvalOptions& o, const intsim::EngineSpec& spec) { o.engine = intsim::engine_options(spec); });
  py::class_<anybit::NoiseSweepOptions>(m, "NoiseSweepOptions")
      .def(py::init<>())
      .def_readwrite("mac", &anybit::NoiseSweepOptions::mac)
      .def_readwrite("seeds", &anybit::NoiseSweepOptions::seeds)
      .def_readwrite("out_dir", &anybit::NoiseSweepOptions::out_dir)
      .def_readwrite("resume", &anybit::NoiseSweepOptions::resume)
      .def_readwrite("progress", &anybit::NoiseSweepOptions::progress)
      .def_readwrite("eval", &anybit::NoiseSweepOptions::eval)
      .def_readwrite("model_name", &anybit::NoiseSweepOptions::model_name)
      .def_readwrite("data_name", &anybit::NoiseSweepOptions::data_name);
  m.def("intsim_run", &intsim_run, py::arg("model_dir"), py::arg("inputs"), py::arg("engine"));
  m.def("integer_reference", &integer_reference, py::arg("model_dir"), py::arg("inputs"));
  m.def("intsim_evaluate", &intsim_evaluate, py::arg("model_dir"), py::arg("data_spec"), py::arg("reference_path"),
        py::arg("calib_spec"), py::arg("options"));
  m.def("noise_sweep", &noise_sweep, py::arg("model_dir"), py::arg("data_spec"), py::arg("calib_spec"),
        py::arg("options"));
  m.def("canonical_spec", [](const std::string& s) { return anybit::parse_spec(s).str(); });
}
