// Reading the exported integer model: manifest.json and its .npy arrays, every field checked
// with its path in the message (docs/integer-format.md), then validate_model (model.cc).
#include "anybit/intsim/model.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "anybit/intsim/model_internal.h"

namespace anybit {
namespace intsim {

using namespace detail;  // NOLINT: the model files' shared helpers

namespace {

using json = nlohmann::json;

// --- reading JSON with the field path in every message ---------------------------------

std::string describe(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

bool as_int64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  return false;
}

// One JSON object being read; `path` ("ops[3]") prefixes its fields in messages.
class Obj {
 public:
  Obj(const json& j, std::string path, const std::string& origin)
      : j_(j), path_(std::move(path)), origin_(origin) {
    if (!j.is_object()) fail(origin_, path_, "expected an object, got " + describe(j));
  }

  const std::string& path() const { return path_; }
  std::string field(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  bool has(const char* key) const { return j_.contains(key); }
  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail(origin_, field(key), what);
  }
  const json& at(const char* key) const {
    if (!j_.contains(key)) bad(key, "missing");
    return j_.at(key);
  }

  // Rejects keys outside `allowed`: a misspelt field would otherwise be ignored silently.
  void only(const std::vector<std::string>& allowed) const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      bool known = false;
      for (const auto& a : allowed) known = known || a == it.key();
      if (!known) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        bad(it.key(), "unknown field (expected one of: " + list + ")");
      }
    }
  }

  int64_t integer_value(const std::string& key, const json& v, int64_t lo, int64_t hi) const {
    int64_t x = 0;
    if (!as_int64(v, &x)) bad(key, "expected an integer, got " + describe(v));
    if (x < lo || x > hi)
      bad(key, std::to_string(x) + " is outside the allowed range " + range_str(lo, hi));
    return x;
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    return integer_value(key, at(key), lo, hi);
  }
  int64_t integer_or(const char* key, int64_t dflt, int64_t lo, int64_t hi) const {
    return has(key) ? integer(key, lo, hi) : dflt;
  }
  double positive(const char* key) const {
    const json& v = at(key);
    if (!v.is_number()) bad(key, "expected a number, got " + describe(v));
    const double x = v.get<double>();
    if (!std::isfinite(x) || x <= 0) bad(key, "expected a finite number > 0, got " + describe(v));
    return x;
  }
  std::string string(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) bad(key, "expected a string, got " + describe(v));
    return v.get<std::string>();
  }
  bool boolean_or(const char* key, bool dflt) const {
    if (!has(key)) return dflt;
    const json& v = j_.at(key);
    if (!v.is_boolean()) bad(key, "expected true or false, got " + describe(v));
    return v.get<bool>();
  }
  // A number or a list of numbers (per-tensor or per-channel values).
  std::vector<int64_t> int_list(const char* key, int64_t lo, int64_t hi) const {
    const json& v = at(key);
    std::vector<int64_t> out;
    if (v.is_array()) {
      if (v.empty()) bad(key, "expected a number or a non-empty list");
      for (size_t i = 0; i < v.size(); ++i)
        out.push_back(integer_value(std::string(key) + "[" + std::to_string(i) + "]", v[i], lo, hi));
    } else {
      out.push_back(integer_value(key, v, lo, hi));
    }
    return out;
  }
  std::vector<double> positive_list(const char* key) const {
    const json& v = at(key);
    std::vector<double> out;
    auto one = [&](const json& e, const std::string& k) {
      if (!e.is_number()) bad(k, "expected a number, got " + describe(e));
      const double x = e.get<double>();
      if (!std::isfinite(x) || x <= 0) bad(k, "expected a finite number > 0, got " + describe(e));
      out.push_back(x);
    };
    if (v.is_array()) {
      if (v.empty()) bad(key, "expected a number or a non-empty list");
      for (size_t i = 0; i < v.size(); ++i) one(v[i], std::string(key) + "[" + std::to_string(i) + "]");
    } else {
      one(v, key);
    }
    return out;
  }
  // An integer (same value for height and width) or [h, w].
  std::array<int64_t, 2> pair_or(const char* key, std::array<int64_t, 2> dflt, int64_t lo,
                                 int64_t hi) const {
    if (!has(key)) return dflt;
    const json& v = j_.at(key);
    if (v.is_array()) {
      if (v.size() != 2) bad(key, "expected an integer or a list of 2 integers, got " + describe(v));
      return {integer_value(key, v[0], lo, hi), integer_value(key, v[1], lo, hi)};
    }
    const int64_t x = integer_value(key, v, lo, hi);
    return {x, x};
  }
  std::vector<int64_t> shape(const char* key) const {
    const json& v = at(key);
    if (!v.is_array()) bad(key, "expected a list of dimensions, got " + describe(v));
    std::vector<int64_t> out;
    for (size_t i = 0; i < v.size(); ++i) out.push_back(integer_value(key, v[i], 1, kMaxDim));
    return out;
  }
  std::vector<std::string> string_list(const char* key) const {
    const json& v = at(key);
    if (!v.is_array()) bad(key, "expected a list of tensor names, got " + describe(v));
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string())
        bad(std::string(key) + "[" + std::to_string(i) + "]", "expected a string, got " + describe(v[i]));
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }

 private:
  const json& j_;
  std::string path_;
  const std::string& origin_;
};

void check_array_file_name(const Obj& o, const char* key, const std::string& file) {
  const std::string problem = array_file_name_problem(file);
  if (!problem.empty()) o.bad(key, problem);
}

IntArray load_int_array(const Obj& o, const char* key,
                        const std::function<NpyArray(const std::string&)>& load_array,
                        const std::string& origin) {
  IntArray a;
  a.file = o.string(key);
  check_array_file_name(o, key, a.file);
  NpyArray npy;
  try {
    npy = load_array(a.file);
  } catch (const Error& e) {
    fail(origin, o.field(key), e.what());
  }
  a.dtype = npy.dtype;
  a.shape = npy.shape;
  // Float arrays keep no data; validation reports the dtype with the expected shape.
  if (dtype_is_integer(npy.dtype)) {
    try {
      a.data = npy.to_int32(a.file);
    } catch (const Error& e) {
      fail(origin, o.field(key), e.what());
    }
  }
  return a;
}

std::vector<DyadicMultiplier> read_multipliers(const Obj& o, const char* m0_key,
                                               const char* shift_key) {
  const std::vector<int64_t> m0 = o.int_list(m0_key, 0, kInt32Max);
  const std::vector<int64_t> shift = o.int_list(shift_key, -31, 31);
  if (m0.size() != shift.size())
    o.bad(shift_key, std::to_string(shift.size()) + " values, but " + m0_key + " has " +
                         std::to_string(m0.size()));
  std::vector<DyadicMultiplier> out;
  for (size_t i = 0; i < m0.size(); ++i)
    out.push_back({static_cast<int32_t>(m0[i]), static_cast<int>(shift[i])});
  return out;
}

// Output quantization as written in the manifest: required for ops that requantize,
// optional (and checked against the derived values) for the others.
struct DeclaredQuant {
  bool has_scale = false, has_zero_point = false, has_qmin = false, has_qmax = false;
  QuantParams q;
};

DeclaredQuant read_quant(const Obj& o, bool required) {
  DeclaredQuant d;
  if (required || o.has("scale")) d.q.scale = o.positive("scale"), d.has_scale = true;
  if (required || o.has("zero_point"))
    d.q.zero_point = static_cast<int32_t>(o.integer("zero_point", kInt32Min, kInt32Max)),
    d.has_zero_point = true;
  if (required || o.has("qmin"))
    d.q.qmin = static_cast<int32_t>(o.integer("qmin", kInt32Min, kInt32Max)), d.has_qmin = true;
  if (required || o.has("qmax"))
    d.q.qmax = static_cast<int32_t>(o.integer("qmax", kInt32Min, kInt32Max)), d.has_qmax = true;
  return d;
}

bool same_scale(double a, double b) { return std::fabs(a - b) <= 1e-6 * std::max(a, b); }

void check_declared(const DeclaredQuant& d, const QuantParams& actual, const std::string& origin,
                    const std::string& path, const std::string& tensor) {
  auto mismatch = [&](const char* key, const std::string& got, const std::string& want) {
    fail(origin, path + "." + key,
         got + " does not match the " + key + " " + want + " of tensor '" + tensor + "'");
  };
  if (d.has_scale && !same_scale(d.q.scale, actual.scale))
    mismatch("scale", std::to_string(d.q.scale), std::to_string(actual.scale));
  if (d.has_zero_point && d.q.zero_point != actual.zero_point)
    mismatch("zero_point", std::to_string(d.q.zero_point), std::to_string(actual.zero_point));
  if (d.has_qmin && d.q.qmin != actual.qmin)
    mismatch("qmin", std::to_string(d.q.qmin), std::to_string(actual.qmin));
  if (d.has_qmax && d.q.qmax != actual.qmax)
    mismatch("qmax", std::to_string(d.q.qmax), std::to_string(actual.qmax));
}

const std::vector<std::string>& common_fields() {
  static const std::vector<std::string> f = {"op", "name", "inputs", "output",
                                             "scale", "zero_point", "qmin", "qmax"};
  return f;
}

std::vector<std::string> with_common(std::initializer_list<const char*> extra) {
  std::vector<std::string> f = common_fields();
  for (const char* e : extra) f.push_back(e);
  return f;
}

}  // namespace

Model parse_manifest(const std::string& text, const std::string& origin,
                     const std::function<NpyArray(const std::string& file)>& load_array) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(origin + ": not valid JSON: " + e.what());
  }
  Model m;
  std::vector<std::pair<size_t, DeclaredQuant>> declared_ops;
  std::vector<DeclaredQuant> declared_outputs;
  std::vector<std::vector<int64_t>> declared_output_shapes;
  try {
    if (!root.is_object()) throw Error(origin + ": expected a JSON object at the top level");
    const Obj top(root, "", origin);
    top.only({"format", "version", "metadata", "inputs", "ops", "outputs"});
    const std::string format = top.string("format");
    if (format != kFormatName)
      fail(origin, "format", "expected \"" + std::string(kFormatName) + "\", got \"" + format + "\"");
    const int64_t version = top.integer("version", 1, std::numeric_limits<int64_t>::max());
    if (version > kFormatVersion)
      fail(origin, "version", "version " + std::to_string(version) +
                                  " is newer than this engine reads (" + std::to_string(kFormatVersion) + ")");
    if (top.has("metadata")) {
      const json& md = root.at("metadata");
      if (!md.is_object()) fail(origin, "metadata", "expected an object");
      for (auto it = md.begin(); it != md.end(); ++it)
        m.metadata[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    }

    const json& inputs = top.at("inputs");
    if (!inputs.is_array()) fail(origin, "inputs", "expected a list");
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Obj o(inputs[i], "inputs[" + std::to_string(i) + "]", origin);
      o.only({"name", "shape", "scale", "zero_point", "qmin", "qmax"});
      TensorSpec t;
      t.name = o.string("name");
      t.shape = o.shape("shape");
      t.q = read_quant(o, true).q;
      m.inputs.push_back(t);
    }

    const json& ops = top.at("ops");
    if (!ops.is_array()) fail(origin, "ops", "expected a list");
    for (size_t k = 0; k < ops.size(); ++k) {
      const Obj o(ops[k], "ops[" + std::to_string(k) + "]", origin);
      Op op;
      try {
        op.kind = parse_op_kind(o.string("op"));
      } catch (const Error& e) {
        if (o.has("op") && o.at("op").is_string()) o.bad("op", e.what());
        throw;
      }
      op.name = o.string("name");
      op.inputs = o.string_list("inputs");
      op.output = o.string("output");
      const std::array<int64_t, 2> one{{1, 1}}, zero{{0, 0}};
      bool requantizes = true;
      switch (op.kind) {
        case OpKind::kConv2d:
        case OpKind::kLinear: {
          const bool conv = op.kind == OpKind::kConv2d;
          if (conv)
            o.only(with_common({"weight", "weight_scale", "weight_zero_point", "weight_qmin",
                                "weight_qmax", "bias", "out_channels", "kernel", "stride",
                                "padding", "dilation", "groups", "m0", "shift"}));
          else
            o.only(with_common({"weight", "weight_scale", "weight_zero_point", "weight_qmin",
                                "weight_qmax", "bias", "out_features", "m0", "shift"}));
          op.out_channels = o.integer(conv ? "out_channels" : "out_features", 1, kMaxDim);
          op.weight = load_int_array(o, "weight", load_array, origin);
          // The weight range defaults to its storage dtype's range.
          int64_t lo = kInt32Min, hi = kInt32Max;
          if (op.weight.dtype == DType::kInt8) lo = -128, hi = 127;
          if (op.weight.dtype == DType::kInt16) lo = -32768, hi = 32767;
          op.weight_qmin = static_cast<int32_t>(o.integer_or("weight_qmin", lo, kInt32Min, kInt32Max));
          op.weight_qmax = static_cast<int32_t>(o.integer_or("weight_qmax", hi, kInt32Min, kInt32Max));
          op.weight_scale = o.positive_list("weight_scale");
          for (int64_t z : o.int_list("weight_zero_point", kInt32Min, kInt32Max))
            op.weight_zero_point.push_back(static_cast<int32_t>(z));
          if (o.has("bias")) op.bias = load_int_array(o, "bias", load_array, origin);
          if (conv) {
            if (!o.has("kernel")) o.bad("kernel", "missing");
            op.kernel = o.pair_or("kernel", one, 1, kMaxDim);
            op.stride = o.pair_or("stride", one, 1, kMaxDim);
            op.padding = o.pair_or("padding", zero, 0, kMaxDim);
            op.dilation = o.pair_or("dilation", one, 1, kMaxDim);
            op.groups = o.integer_or("groups", 1, 1, kMaxDim);
          }
          op.multiplier = read_multipliers(o, "m0", "shift");
          break;
        }
        case OpKind::kAdd:
          o.only(with_common({"input_m0", "input_shift", "left_shift", "m0", "shift"}));
          op.input_multipliers = read_multipliers(o, "input_m0", "input_shift");
          op.left_shift = static_cast<int>(o.integer("left_shift", 0, 30));
          op.multiplier = read_multipliers(o, "m0", "shift");
          break;
        case OpKind::kRelu:
        case OpKind::kFlatten:
          o.only(common_fields());
          requantizes = false;
          break;
        case OpKind::kClamp:
          o.only(common_fields());
          op.out.qmin = static_cast<int32_t>(o.integer("qmin", kInt32Min, kInt32Max));
          op.out.qmax = static_cast<int32_t>(o.integer("qmax", kInt32Min, kInt32Max));
          requantizes = false;
          break;
        case OpKind::kMaxPool2d:
        case OpKind::kAvgPool2d: {
          const bool avg = op.kind == OpKind::kAvgPool2d;
          if (avg)
            o.only(with_common({"kernel", "stride", "padding", "m0", "shift"}));
          else
            o.only(with_common({"kernel", "stride", "padding", "dilation", "ceil_mode"}));
          if (!o.has("kernel")) o.bad("kernel", "missing");
          op.kernel = o.pair_or("kernel", one, 1, kMaxDim);
          op.stride = o.pair_or("stride", op.kernel, 1, kMaxDim);  // PyTorch: stride = kernel
          op.padding = o.pair_or("padding", zero, 0, kMaxDim);
          if (!avg) {
            op.dilation = o.pair_or("dilation", one, 1, kMaxDim);
            op.ceil_mode = o.boolean_or("ceil_mode", false);
            requantizes = false;
          } else {
            op.multiplier = read_multipliers(o, "m0", "shift");
          }
          break;
        }
        case OpKind::kGlobalAvgPool:
          o.only(with_common({"m0", "shift"}));
          op.multiplier = read_multipliers(o, "m0", "shift");
          break;
        case OpKind::kAdaptiveAvgPool2d:
          o.only(with_common({"output_size", "m0", "shift"}));
          if (!o.has("output_size")) o.bad("output_size", "missing");
          op.output_size = o.pair_or("output_size", one, 1, kMaxDim);
          op.multiplier = read_multipliers(o, "m0", "shift");
          break;
        case OpKind::kConcat:
          o.only(with_common({"axis", "input_m0", "input_shift"}));
          op.axis = o.integer_or("axis", 1, 1, 64);
          op.input_multipliers = read_multipliers(o, "input_m0", "input_shift");
          break;
      }
      const DeclaredQuant d = read_quant(o, requantizes);
      if (requantizes) {
        op.out = d.q;
      } else if (op.kind != OpKind::kClamp) {
        declared_ops.emplace_back(k, d);
      } else {
        DeclaredQuant sz = d;  // clamp: qmin/qmax are its bounds, scale/zero_point derived
        sz.has_qmin = sz.has_qmax = false;
        declared_ops.emplace_back(k, sz);
      }
      m.ops.push_back(std::move(op));
    }

    const json& outputs = top.at("outputs");
    if (!outputs.is_array()) fail(origin, "outputs", "expected a list");
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Obj o(outputs[i], "outputs[" + std::to_string(i) + "]", origin);
      o.only({"name", "shape", "scale", "zero_point", "qmin", "qmax"});
      TensorSpec t;
      t.name = o.string("name");
      declared_outputs.push_back(read_quant(o, false));
      declared_output_shapes.push_back(o.has("shape") ? o.shape("shape") : std::vector<int64_t>{});
      m.outputs.push_back(t);
    }
  } catch (const json::exception& e) {
    // Obj checks types before every access, so this is a safety net only.
    throw Error(origin + ": " + e.what());
  }

  validate_model(m, origin);

  // Fields that are derived but were also written must agree with the derivation.
  for (const auto& [k, d] : declared_ops)
    check_declared(d, m.ops[k].out, origin, "ops[" + std::to_string(k) + "]", m.ops[k].output);
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    const std::string path = "outputs[" + std::to_string(i) + "]";
    check_declared(declared_outputs[i], m.outputs[i].q, origin, path, m.outputs[i].name);
    if (!declared_output_shapes[i].empty() && declared_output_shapes[i] != m.outputs[i].shape)
      fail(origin, path + ".shape",
           ints_str(declared_output_shapes[i]) + " does not match the shape " +
               ints_str(m.outputs[i].shape) + " of tensor '" + m.outputs[i].name + "'");
  }
  return m;
}

Model load_model(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  const std::string text(bytes.begin(), bytes.end());
  return parse_manifest(text, path,
                        [&dir](const std::string& file) { return read_npy(dir + "/" + file); });
}

}  // namespace intsim
}  // namespace anybit
