// Saving the exported integer model: manifest.json and one .npy file per array, written to a
// temporary directory and renamed (docs/integer-format.md).
#include "anybit/intsim/model.h"

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "anybit/intsim/model_internal.h"

namespace anybit {
namespace intsim {

using namespace detail;  // NOLINT: the model files' shared helpers

namespace {

using ojson = nlohmann::ordered_json;

std::string sanitize_file_stem(const std::string& name) {
  std::string s;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    s += ok ? c : '_';
  }
  if (s.empty() || s[0] == '.') s = "op" + s;
  return s;
}

// File names for every array of a model about to be saved, unique within the directory.
Model with_file_names(const Model& model) {
  Model m = model;
  std::set<std::string> used;
  for (const Op& op : m.ops) {
    if (!op.weight.file.empty()) used.insert(op.weight.file);
    if (!op.bias.file.empty()) used.insert(op.bias.file);
  }
  auto assign = [&](IntArray& a, const std::string& stem) {
    if (!a.file.empty()) return;
    std::string name = stem + ".npy";
    for (int i = 2; used.count(name); ++i) name = stem + "_" + std::to_string(i) + ".npy";
    used.insert(name);
    a.file = name;
  };
  for (Op& op : m.ops) {
    if (op.kind != OpKind::kConv2d && op.kind != OpKind::kLinear) continue;
    assign(op.weight, sanitize_file_stem(op.name) + ".weight");
    if (!op.bias.empty()) assign(op.bias, sanitize_file_stem(op.name) + ".bias");
  }
  return m;
}

template <class T>
ojson scalar_or_list(const std::vector<T>& v) {
  if (v.size() == 1) return ojson(v[0]);
  return ojson(v);
}

ojson pair_json(const std::array<int64_t, 2>& p) { return ojson::array({p[0], p[1]}); }

void put_multipliers(ojson& j, const std::vector<DyadicMultiplier>& m, const char* m0_key,
                     const char* shift_key, bool force_list) {
  std::vector<int64_t> m0, shift;
  for (const auto& x : m) m0.push_back(x.m0), shift.push_back(x.shift);
  j[m0_key] = force_list ? ojson(m0) : scalar_or_list(m0);
  j[shift_key] = force_list ? ojson(shift) : scalar_or_list(shift);
}

}  // namespace

std::string manifest_json(const Model& model_in) {
  const Model m = with_file_names(model_in);
  ojson root;
  root["format"] = kFormatName;
  root["version"] = kFormatVersion;
  if (!m.metadata.empty()) {
    ojson md = ojson::object();
    for (const auto& [k, v] : m.metadata) md[k] = v;
    root["metadata"] = md;
  }
  auto quant = [](ojson& j, const QuantParams& q) {
    j["scale"] = q.scale;
    j["zero_point"] = q.zero_point;
    j["qmin"] = q.qmin;
    j["qmax"] = q.qmax;
  };
  auto specs = [&](const std::vector<TensorSpec>& ts) {
    ojson a = ojson::array();
    for (const TensorSpec& t : ts) {
      ojson j;
      j["name"] = t.name;
      j["shape"] = t.shape;
      quant(j, t.q);
      a.push_back(j);
    }
    return a;
  };
  root["inputs"] = specs(m.inputs);
  ojson ops = ojson::array();
  for (const Op& op : m.ops) {
    ojson j;
    j["op"] = op_kind_name(op.kind);
    j["name"] = op.name;
    j["inputs"] = op.inputs;
    j["output"] = op.output;
    quant(j, op.out);
    switch (op.kind) {
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        const bool conv = op.kind == OpKind::kConv2d;
        j[conv ? "out_channels" : "out_features"] = op.out_channels;
        j["weight"] = op.weight.file;
        j["weight_scale"] = scalar_or_list(op.weight_scale);
        j["weight_zero_point"] = scalar_or_list(op.weight_zero_point);
        j["weight_qmin"] = op.weight_qmin;
        j["weight_qmax"] = op.weight_qmax;
        if (!op.bias.empty()) j["bias"] = op.bias.file;
        if (conv) {
          j["kernel"] = pair_json(op.kernel);
          j["stride"] = pair_json(op.stride);
          j["padding"] = pair_json(op.padding);
          j["dilation"] = pair_json(op.dilation);
          j["groups"] = op.groups;
        }
        put_multipliers(j, op.multiplier, "m0", "shift", false);
        break;
      }
      case OpKind::kAdd:
        put_multipliers(j, op.input_multipliers, "input_m0", "input_shift", true);
        j["left_shift"] = op.left_shift;
        put_multipliers(j, op.multiplier, "m0", "shift", false);
        break;
      case OpKind::kMaxPool2d:
      case OpKind::kAvgPool2d:
        j["kernel"] = pair_json(op.kernel);
        j["stride"] = pair_json(op.stride);
        j["padding"] = pair_json(op.padding);
        if (op.kind == OpKind::kMaxPool2d) {
          j["dilation"] = pair_json(op.dilation);
          j["ceil_mode"] = op.ceil_mode;
        } else {
          put_multipliers(j, op.multiplier, "m0", "shift", false);
        }
        break;
      case OpKind::kGlobalAvgPool:
        put_multipliers(j, op.multiplier, "m0", "shift", false);
        break;
      case OpKind::kAdaptiveAvgPool2d:
        j["output_size"] = pair_json(op.output_size);
        put_multipliers(j, op.multiplier, "m0", "shift", false);
        break;
      case OpKind::kConcat:
        j["axis"] = op.axis;
        put_multipliers(j, op.input_multipliers, "input_m0", "input_shift", true);
        break;
      case OpKind::kRelu:
      case OpKind::kClamp:
      case OpKind::kFlatten:
        break;
    }
    ops.push_back(j);
  }
  root["ops"] = ops;
  root["outputs"] = specs(m.outputs);
  // One line per input, op and output: readable in an editor and in a diff, where
  // nlohmann's indented form would put every per-channel value on a line of its own.
  std::string text = "{\n";
  bool first = true;
  for (auto it = root.begin(); it != root.end(); ++it) {
    text += first ? "" : ",\n";
    first = false;
    text += "  " + ojson(it.key()).dump() + ": ";
    if (it.value().is_array()) {
      text += "[";
      for (size_t i = 0; i < it.value().size(); ++i)
        text += (i ? ",\n    " : "\n    ") + it.value()[i].dump();
      text += it.value().empty() ? "]" : "\n  ]";
    } else {
      text += it.value().dump();
    }
  }
  return text + "\n}\n";
}

void save_model(const Model& model, const std::string& dir) {
  Model m = with_file_names(model);
  validate_model(m, "model");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create directory: " + ec.message());
  std::set<std::string> written;
  auto write_array = [&](const IntArray& a, const std::string& what) {
    const std::string problem = array_file_name_problem(a.file);
    if (!problem.empty()) throw Error(dir + ": " + what + ": " + problem);
    if (!written.insert(a.file).second)
      throw Error(dir + ": two arrays would be saved as '" + a.file + "'");
    const std::string path = dir + "/" + a.file;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    write_npy(path, NpyArray::from_ints(a.dtype, a.shape, a.data, what));
  };
  for (const Op& op : m.ops) {
    if (op.kind != OpKind::kConv2d && op.kind != OpKind::kLinear) continue;
    write_array(op.weight, op.name + ".weight");
    if (!op.bias.empty()) write_array(op.bias, op.name + ".bias");
  }
  const std::string text = manifest_json(m);
  write_file_atomic(dir + "/manifest.json", text.data(), text.size());
}

}  // namespace intsim
}  // namespace anybit
