// Loading, validating and saving the exported integer model (docs/integer-format.md).
//
// Validation is the engine's first line of defence: once validate_model accepts a model,
// every shape, index and integer range the kernels rely on has been checked, so the
// kernels themselves carry no checks.
#include "anybit/intsim/model.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

namespace anybit {
namespace intsim {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr const char* kFormatName = "anybit-int";
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kMaxDim = kInt32Max;
constexpr int64_t kMaxElements = int64_t{1} << 31;

[[noreturn]] void fail(const std::string& origin, const std::string& field,
                       const std::string& what) {
  throw Error(origin + ": " + field + ": " + what);
}

std::string ints_str(const std::vector<int64_t>& v) { return shape_str(v); }

std::string range_str(int64_t lo, int64_t hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

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

// Array file names are relative to the model directory and may not leave it. Returns
// what is wrong with `file`, or "" if nothing.
std::string array_file_name_problem(const std::string& file) {
  if (file.empty()) return "empty file name";
  if (file[0] == '/' || file.find('\\') != std::string::npos)
    return "'" + file + "' must be a relative path inside the model directory";
  size_t start = 0;
  while (start <= file.size()) {
    const size_t end = std::min(file.find('/', start), file.size());
    if (end - start == 2 && file.compare(start, 2, "..") == 0)
      return "'" + file + "' must not leave the model directory";
    start = end + 1;
  }
  return "";
}

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

// --- validation helpers ------------------------------------------------------------------

bool is_weight_dtype(DType d) {
  return d == DType::kInt8 || d == DType::kInt16 || d == DType::kInt32;
}

void check_quant(const QuantParams& q, const std::string& origin, const std::string& path) {
  if (!std::isfinite(q.scale) || q.scale <= 0)
    fail(origin, path + ".scale", "expected a finite number > 0, got " + std::to_string(q.scale));
  if (q.qmin > q.qmax)
    fail(origin, path + ".qmin",
         "qmin " + std::to_string(q.qmin) + " exceeds qmax " + std::to_string(q.qmax));
  // The engine holds q - z in int32 (the operands of a MAC): both ends must fit.
  if (int64_t{q.qmax} - q.zero_point > kInt32Max || int64_t{q.zero_point} - q.qmin > kInt32Max)
    fail(origin, path + ".zero_point",
         std::to_string(q.zero_point) + " is too far from the range " + range_str(q.qmin, q.qmax) +
             ": q - zero_point must fit in int32");
}

void check_shape(const std::vector<int64_t>& shape, const std::string& origin,
                 const std::string& path) {
  if (shape.empty()) fail(origin, path, "expected at least one dimension (without the batch)");
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 1 || d > kMaxDim) fail(origin, path, "dimension " + std::to_string(d) + " in " + ints_str(shape) + " is not in [1, 2^31)");
    if (n > kMaxElements / d) fail(origin, path, "shape " + ints_str(shape) + " has more than 2^31 elements");
    n *= d;
  }
}

void check_int_array(const IntArray& a, const std::vector<int64_t>& expected_shape,
                     bool weight_dtypes, const std::string& origin, const std::string& path) {
  const bool dtype_ok = weight_dtypes ? is_weight_dtype(a.dtype) : a.dtype == DType::kInt32;
  const char* want = weight_dtypes ? "an int8, int16 or int32" : "an int32";
  if (!dtype_ok || a.shape != expected_shape)
    fail(origin, path, std::string("expected ") + want + " array of shape " +
                           ints_str(expected_shape) + ", got " + dtype_name(a.dtype) + " " +
                           ints_str(a.shape) + (a.file.empty() ? "" : " (" + a.file + ")"));
  const int64_t n = shape_numel(expected_shape, origin + ": " + path);
  if (static_cast<int64_t>(a.data.size()) != n)
    fail(origin, path, "holds " + std::to_string(a.data.size()) + " values, shape " +
                           ints_str(a.shape) + " needs " + std::to_string(n));
}

void check_multipliers(const std::vector<DyadicMultiplier>& m, size_t allowed_a, size_t allowed_b,
                       const std::string& origin, const std::string& path) {
  if (m.size() != allowed_a && m.size() != allowed_b)
    fail(origin, path + ".m0",
         "expected " + std::to_string(allowed_a) +
             (allowed_b != allowed_a ? " or " + std::to_string(allowed_b) : std::string()) +
             " multipliers, got " + std::to_string(m.size()));
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i].m0 < 0)
      fail(origin, path + ".m0[" + std::to_string(i) + "]",
           std::to_string(m[i].m0) + " is negative (m0 must be in [0, 2^31))");
    if (m[i].shift < -31 || m[i].shift > 31)
      fail(origin, path + ".shift[" + std::to_string(i) + "]",
           std::to_string(m[i].shift) + " is outside [-31, 31]");
  }
}

// Output size of a sliding window (PyTorch's pooling_output_shape / conv formula).
int64_t window_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (span + (ceil_mode ? s - 1 : 0)) / s + 1;
  // With ceil_mode the last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

void check_window(const Op& op, bool use_dilation, const std::string& origin,
                  const std::string& path) {
  for (int i = 0; i < 2; ++i) {
    if (op.kernel[i] < 1 || op.kernel[i] > kMaxDim) fail(origin, path + ".kernel", "must be >= 1");
    if (op.stride[i] < 1 || op.stride[i] > kMaxDim) fail(origin, path + ".stride", "must be >= 1");
    if (op.padding[i] < 0 || op.padding[i] > kMaxDim) fail(origin, path + ".padding", "must be >= 0");
    if (op.dilation[i] < 1 || op.dilation[i] > kMaxDim) fail(origin, path + ".dilation", "must be >= 1");
    if (!use_dilation && op.dilation[i] != 1)
      fail(origin, path + ".dilation", std::string(op_kind_name(op.kind)) + " has no dilation");
  }
}

std::vector<int64_t> pool_out_shape(const Op& op, const std::vector<int64_t>& in,
                                    const std::string& origin, const std::string& path) {
  for (int i = 0; i < 2; ++i) {
    // PyTorch: "pad should be at most half of effective kernel size", so that every
    // window holds at least one real element.
    const int64_t eff = op.dilation[i] * (op.kernel[i] - 1) + 1;
    if (op.padding[i] > eff / 2)
      fail(origin, path + ".padding", std::to_string(op.padding[i]) +
                                          " is more than half the kernel " + std::to_string(eff));
  }
  const int64_t oh = window_out_size(in[1], op.kernel[0], op.stride[0], op.padding[0], op.dilation[0], op.ceil_mode);
  const int64_t ow = window_out_size(in[2], op.kernel[1], op.stride[1], op.padding[1], op.dilation[1], op.ceil_mode);
  if (oh < 1 || ow < 1)
    fail(origin, path + ".kernel", "window larger than the padded input " + ints_str(in));
  return {in[0], oh, ow};
}

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

const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kConv2d: return "conv2d";
    case OpKind::kLinear: return "linear";
    case OpKind::kAdd: return "add";
    case OpKind::kRelu: return "relu";
    case OpKind::kClamp: return "clamp";
    case OpKind::kMaxPool2d: return "maxpool2d";
    case OpKind::kAvgPool2d: return "avgpool2d";
    case OpKind::kGlobalAvgPool: return "global_avgpool";
    case OpKind::kAdaptiveAvgPool2d: return "adaptive_avgpool2d";
    case OpKind::kFlatten: return "flatten";
    case OpKind::kConcat: return "concat";
  }
  return "?";
}

OpKind parse_op_kind(const std::string& name) {
  static const OpKind kAll[] = {OpKind::kConv2d,    OpKind::kLinear,         OpKind::kAdd,
                                OpKind::kRelu,      OpKind::kClamp,          OpKind::kMaxPool2d,
                                OpKind::kAvgPool2d, OpKind::kGlobalAvgPool,  OpKind::kAdaptiveAvgPool2d,
                                OpKind::kFlatten,   OpKind::kConcat};
  std::string list;
  for (OpKind k : kAll) {
    if (name == op_kind_name(k)) return k;
    list += (list.empty() ? "" : ", ") + std::string(op_kind_name(k));
  }
  throw Error("unknown op '" + name + "' (expected one of: " + list + ")");
}

int64_t shape_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > kMaxElements / d))
      throw Error(what + ": shape " + ints_str(shape) + " is invalid or has more than 2^31 elements");
    n *= d;
  }
  return n;
}

std::map<std::string, TensorInfo> validate_model(Model& m, const std::string& origin) {
  std::map<std::string, TensorInfo> tensors;
  if (m.inputs.empty()) fail(origin, "inputs", "the model has no inputs");
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    const std::string path = "inputs[" + std::to_string(i) + "]";
    const TensorSpec& in = m.inputs[i];
    if (in.name.empty()) fail(origin, path + ".name", "empty tensor name");
    if (tensors.count(in.name)) fail(origin, path + ".name", "duplicate tensor name '" + in.name + "'");
    check_shape(in.shape, origin, path + ".shape");
    check_quant(in.q, origin, path);
    tensors[in.name] = {in.shape, in.q, -1};
  }

  std::set<std::string> op_names;
  for (size_t k = 0; k < m.ops.size(); ++k) {
    Op& op = m.ops[k];
    const std::string path = "ops[" + std::to_string(k) + "]";
    const char* kind = op_kind_name(op.kind);
    if (op.name.empty()) fail(origin, path + ".name", "empty op name");
    if (!op_names.insert(op.name).second)
      fail(origin, path + ".name", "duplicate op name '" + op.name + "'");

    // Inputs: known tensors, defined earlier (the op list is in topological order).
    size_t min_inputs = 1, max_inputs = 1;
    if (op.kind == OpKind::kAdd) min_inputs = max_inputs = 2;
    if (op.kind == OpKind::kConcat) max_inputs = std::numeric_limits<size_t>::max();
    if (op.inputs.size() < min_inputs || op.inputs.size() > max_inputs)
      fail(origin, path + ".inputs",
           std::string(kind) + " takes " +
               (op.kind == OpKind::kConcat ? std::string("at least 1 input")
                                           : std::to_string(min_inputs) +
                                                 (min_inputs == 1 ? " input" : " inputs")) +
               ", got " + std::to_string(op.inputs.size()));
    std::vector<const TensorInfo*> in;
    for (size_t j = 0; j < op.inputs.size(); ++j) {
      auto it = tensors.find(op.inputs[j]);
      if (it == tensors.end())
        fail(origin, path + ".inputs[" + std::to_string(j) + "]",
             "unknown tensor '" + op.inputs[j] + "' (not a model input or an earlier op's output)");
      in.push_back(&it->second);
    }
    if (op.output.empty()) fail(origin, path + ".output", "empty tensor name");
    if (tensors.count(op.output))
      fail(origin, path + ".output", "tensor '" + op.output + "' is already defined");

    auto need_rank = [&](size_t j, size_t rank, const char* layout) {
      if (in[j]->shape.size() != rank)
        fail(origin, path + ".inputs[" + std::to_string(j) + "]",
             std::string(kind) + " needs a " + layout + " input, '" + op.inputs[j] +
                 "' has shape " + ints_str(in[j]->shape));
    };

    TensorInfo out;
    out.producer = static_cast<int>(k);
    switch (op.kind) {
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        const bool conv = op.kind == OpKind::kConv2d;
        const int64_t O = op.out_channels;
        const char* o_field = conv ? ".out_channels" : ".out_features";
        if (O < 1 || O > kMaxDim) fail(origin, path + o_field, "must be >= 1");
        std::vector<int64_t> wshape;
        if (conv) {
          need_rank(0, 3, "[C,H,W]");
          check_window(op, true, origin, path);
          const int64_t C = in[0]->shape[0];
          if (op.groups < 1 || C % op.groups != 0 || O % op.groups != 0)
            fail(origin, path + ".groups",
                 std::to_string(op.groups) + " must divide the " + std::to_string(C) +
                     " input channels and the " + std::to_string(O) + " output channels");
          wshape = {O, C / op.groups, op.kernel[0], op.kernel[1]};
          const int64_t oh = window_out_size(in[0]->shape[1], op.kernel[0], op.stride[0], op.padding[0], op.dilation[0], false);
          const int64_t ow = window_out_size(in[0]->shape[2], op.kernel[1], op.stride[1], op.padding[1], op.dilation[1], false);
          if (oh < 1 || ow < 1)
            fail(origin, path + ".kernel",
                 "the dilated kernel is larger than the padded input " + ints_str(in[0]->shape));
          out.shape = {O, oh, ow};
        } else {
          need_rank(0, 1, "[features]");
          wshape = {O, in[0]->shape[0]};
          out.shape = {O};
        }
        if (op.weight_qmin > op.weight_qmax)
          fail(origin, path + ".weight_qmin", std::to_string(op.weight_qmin) + " exceeds weight_qmax " + std::to_string(op.weight_qmax));
        check_int_array(op.weight, wshape, true, origin, path + ".weight");
        for (size_t i = 0; i < op.weight.data.size(); ++i) {
          const int32_t w = op.weight.data[i];
          if (w < op.weight_qmin || w > op.weight_qmax)
            fail(origin, path + ".weight",
                 "value " + std::to_string(w) + " at index " + std::to_string(i) +
                     " is outside weight_qmin..weight_qmax " + range_str(op.weight_qmin, op.weight_qmax));
        }
        const size_t on = static_cast<size_t>(O);
        if (op.weight_zero_point.size() != 1 && op.weight_zero_point.size() != on)
          fail(origin, path + ".weight_zero_point",
               "expected 1 or " + std::to_string(O) + " values, got " + std::to_string(op.weight_zero_point.size()));
        for (int32_t zw : op.weight_zero_point)
          if (int64_t{op.weight_qmax} - zw > kInt32Max || int64_t{zw} - op.weight_qmin > kInt32Max)
            fail(origin, path + ".weight_zero_point",
                 std::to_string(zw) + " is too far from " + range_str(op.weight_qmin, op.weight_qmax) +
                     ": w - zero_point must fit in int32");
        if (op.weight_scale.size() != 1 && op.weight_scale.size() != on)
          fail(origin, path + ".weight_scale",
               "expected 1 or " + std::to_string(O) + " values, got " + std::to_string(op.weight_scale.size()));
        for (double s : op.weight_scale)
          if (!std::isfinite(s) || s <= 0)
            fail(origin, path + ".weight_scale", "expected finite numbers > 0, got " + std::to_string(s));
        if (!op.bias.empty()) check_int_array(op.bias, {O}, false, origin, path + ".bias");
        check_multipliers(op.multiplier, 1, on, origin, path);
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
      case OpKind::kAdd: {
        if (in[0]->shape != in[1]->shape)
          fail(origin, path + ".inputs",
               "add needs equal shapes, got " + ints_str(in[0]->shape) + " and " + ints_str(in[1]->shape));
        check_multipliers(op.input_multipliers, 2, 2, origin, path + ".input");
        check_multipliers(op.multiplier, 1, 1, origin, path);
        if (op.left_shift < 0 || op.left_shift > 30)
          fail(origin, path + ".left_shift", std::to_string(op.left_shift) + " is outside [0, 30]");
        for (size_t j = 0; j < 2; ++j) {
          const QuantParams& q = in[j]->q;
          const int64_t mag = std::max(int64_t{q.qmax} - q.zero_point, int64_t{q.zero_point} - q.qmin);
          if ((mag << op.left_shift) > kInt32Max)
            fail(origin, path + ".left_shift",
                 std::to_string(op.left_shift) + " overflows int32 for input '" + op.inputs[j] +
                     "' (range " + range_str(q.qmin, q.qmax) + ", zero point " +
                     std::to_string(q.zero_point) + ")");
        }
        check_quant(op.out, origin, path);
        out.shape = in[0]->shape;
        out.q = op.out;
        break;
      }
      case OpKind::kRelu: {
        out.shape = in[0]->shape;
        out.q = in[0]->q;
        // relu(x) = max(q, z): real zero is the zero point (clamped into the range).
        out.q.qmin = std::min(std::max(out.q.zero_point, out.q.qmin), out.q.qmax);
        op.out = out.q;
        break;
      }
      case OpKind::kClamp: {
        if (op.out.qmin > op.out.qmax)
          fail(origin, path + ".qmin", std::to_string(op.out.qmin) + " exceeds qmax " + std::to_string(op.out.qmax));
        out.shape = in[0]->shape;
        out.q = in[0]->q;
        out.q.qmin = op.out.qmin;
        out.q.qmax = op.out.qmax;
        check_quant(out.q, origin, path);
        op.out = out.q;
        break;
      }
      case OpKind::kMaxPool2d:
      case OpKind::kAvgPool2d: {
        need_rank(0, 3, "[C,H,W]");
        const bool avg = op.kind == OpKind::kAvgPool2d;
        check_window(op, !avg, origin, path);
        if (avg && op.ceil_mode)
          fail(origin, path + ".ceil_mode", "avgpool2d does not support ceil_mode");
        out.shape = pool_out_shape(op, in[0]->shape, origin, path);
        if (avg) {
          check_multipliers(op.multiplier, 1, 1, origin, path);
          check_quant(op.out, origin, path);
          out.q = op.out;
        } else {
          out.q = in[0]->q;
          op.out = out.q;
        }
        break;
      }
      case OpKind::kGlobalAvgPool: {
        need_rank(0, 3, "[C,H,W]");
        check_multipliers(op.multiplier, 1, 1, origin, path);
        check_quant(op.out, origin, path);
        out.shape = {in[0]->shape[0], 1, 1};
        out.q = op.out;
        break;
      }
      case OpKind::kAdaptiveAvgPool2d: {
        need_rank(0, 3, "[C,H,W]");
        for (int i = 0; i < 2; ++i)
          if (op.output_size[i] < 1 || op.output_size[i] > kMaxDim)
            fail(origin, path + ".output_size", "must be >= 1");
        out.shape = {in[0]->shape[0], op.output_size[0], op.output_size[1]};
        check_shape(out.shape, origin, path + ".output_size");
        // one multiplier for all windows, or one per output position (their sizes differ)
        check_multipliers(op.multiplier, 1, static_cast<size_t>(op.output_size[0] * op.output_size[1]),
                          origin, path);
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
      case OpKind::kFlatten: {
        out.shape = {shape_numel(in[0]->shape, origin)};
        out.q = in[0]->q;
        op.out = out.q;
        break;
      }
      case OpKind::kConcat: {
        const int64_t rank = static_cast<int64_t>(in[0]->shape.size());
        if (op.axis < 1 || op.axis > rank)
          fail(origin, path + ".axis",
               std::to_string(op.axis) + " is outside [1, " + std::to_string(rank) +
                   "] (axis 0 is the batch)");
        out.shape = in[0]->shape;
        out.shape[op.axis - 1] = 0;
        for (size_t j = 0; j < in.size(); ++j) {
          std::vector<int64_t> a = in[j]->shape, b = in[0]->shape;
          if (a.size() == b.size()) a[op.axis - 1] = b[op.axis - 1] = 0;
          if (a != b)
            fail(origin, path + ".inputs[" + std::to_string(j) + "]",
                 "shape " + ints_str(in[j]->shape) + " does not match " + ints_str(in[0]->shape) +
                     " outside axis " + std::to_string(op.axis));
          out.shape[op.axis - 1] += in[j]->shape[op.axis - 1];
        }
        check_shape(out.shape, origin, path + ".output");
        check_multipliers(op.input_multipliers, in.size(), in.size(), origin, path + ".input");
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
    }
    tensors[op.output] = out;
  }

  if (m.outputs.empty()) fail(origin, "outputs", "the model has no outputs");
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    auto it = tensors.find(m.outputs[i].name);
    if (it == tensors.end())
      fail(origin, "outputs[" + std::to_string(i) + "].name",
           "unknown tensor '" + m.outputs[i].name + "'");
    m.outputs[i].shape = it->second.shape;
    m.outputs[i].q = it->second.q;
  }
  return tensors;
}

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
  ojson inputs = ojson::array();
  for (const TensorSpec& t : m.inputs) {
    ojson j;
    j["name"] = t.name;
    j["shape"] = t.shape;
    quant(j, t.q);
    inputs.push_back(j);
  }
  root["inputs"] = inputs;
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
  ojson outputs = ojson::array();
  for (const TensorSpec& t : m.outputs) {
    ojson j;
    j["name"] = t.name;
    j["shape"] = t.shape;
    quant(j, t.q);
    outputs.push_back(j);
  }
  root["outputs"] = outputs;
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
