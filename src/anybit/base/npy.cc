// NumPy .npy reading and writing; see npy.h for what is accepted and why.
#include "anybit/base/npy.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <sstream>

namespace anybit {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// A generous bound on the element count so that size * itemsize never overflows.
constexpr int64_t kMaxElements = int64_t{1} << 48;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Error(name + ": " + what);
}

const char* descr_of(DType d) {
  switch (d) {
    case DType::kInt8: return "|i1";
    case DType::kUInt8: return "|u1";
    case DType::kInt16: return "<i2";
    case DType::kInt32: return "<i4";
    case DType::kInt64: return "<i8";
    case DType::kFloat32: return "<f4";
    case DType::kFloat64: return "<f8";
  }
  return "?";
}

DType dtype_of_descr(const std::string& descr, const std::string& name) {
  // One-byte types carry no byte order ('|'); NumPy also accepts '<' and '=' for them.
  if (descr.size() == 3) {
    const char order = descr[0];
    const std::string kind = descr.substr(1);
    if (order == '>' && kind != "i1" && kind != "u1")
      fail(name, "big-endian dtype '" + descr + "' is not supported (save with '<')");
    const bool one_byte = kind == "i1" || kind == "u1" || kind == "b1";
    const bool order_ok = one_byte ? (order == '|' || order == '<' || order == '=' || order == '>')
                                   : (order == '<');
    if (order_ok) {
      if (kind == "i1") return DType::kInt8;
      if (kind == "u1") return DType::kUInt8;
      if (kind == "i2") return DType::kInt16;
      if (kind == "i4") return DType::kInt32;
      if (kind == "i8") return DType::kInt64;
      if (kind == "f4") return DType::kFloat32;
      if (kind == "f8") return DType::kFloat64;
    }
  }
  fail(name, "unsupported dtype '" + descr +
                 "' (expected int8, uint8, int16, int32, int64, float32 or float64, little endian)");
}

// The header is a Python dict literal such as
//   {'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }
// NumPy itself evaluates it with ast.literal_eval; we accept exactly the subset NumPy
// writes: quoted keys, a quoted descr, True/False, a tuple of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  void parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (have_descr) bad("duplicate key 'descr'");
        if (peek() != '\'' && peek() != '"')
          bad("unsupported dtype (structured or non-string 'descr')");
        *descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) bad("duplicate key 'fortran_order'");
        *fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) bad("duplicate key 'shape'");
        *shape = parse_tuple();
        have_shape = true;
      } else {
        bad("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      if (peek() != '}') bad("expected ',' or '}'");
    }
    skip_ws();
    if (pos_ != s_.size()) bad("unexpected text after the header dict");
    if (!have_descr) bad("missing key 'descr'");
    if (!have_order) bad("missing key 'fortran_order'");
    if (!have_shape) bad("missing key 'shape'");
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    fail(name_, "malformed header: " + what + " at offset " + std::to_string(pos_) +
                    " of \"" + printable(s_) + "\"");
  }
  static std::string printable(const std::string& s) {
    std::string out;
    for (char c : s.substr(0, 120)) out += (c >= 32 && c < 127) ? c : '?';
    return out;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    ++pos_;
    const size_t end = s_.find(q, pos_);
    if (end == std::string::npos) bad("unterminated string");
    std::string r = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return r;
  }
  bool parse_bool() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<int64_t> parse_tuple() {
    std::vector<int64_t> dims;
    expect('(');
    for (;;) {
      skip_ws();
      if (peek() == ')') {
        ++pos_;
        return dims;
      }
      if (peek() < '0' || peek() > '9') bad("expected a non-negative integer dimension");
      int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        v = v * 10 + (peek() - '0');
        if (v > kMaxElements) bad("dimension too large");
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long literal, written by old NumPy
      dims.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        bad("expected ',' or ')' in shape");
      }
    }
  }

  const std::string& s_;
  const std::string& name_;
  size_t pos_ = 0;
};

uint64_t load_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void store_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

int64_t element_count(const std::vector<int64_t>& shape, const std::string& name) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(name, "negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > kMaxElements / d) fail(name, "shape " + shape_str(shape) + " is too large");
    n *= d;
  }
  return n;
}

std::string temp_name_for(const std::string& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".tmp%016llx", static_cast<unsigned long long>(rng()));
  return path + suffix;
}

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::kInt8:
    case DType::kUInt8: return 1;
    case DType::kInt16: return 2;
    case DType::kInt32:
    case DType::kFloat32: return 4;
    case DType::kInt64:
    case DType::kFloat64: return 8;
  }
  return 1;
}

bool dtype_is_integer(DType d) { return d != DType::kFloat32 && d != DType::kFloat64; }

DType parse_dtype_name(const std::string& name) {
  for (DType d : {DType::kInt8, DType::kUInt8, DType::kInt16, DType::kInt32, DType::kInt64,
                  DType::kFloat32, DType::kFloat64})
    if (name == dtype_name(d)) return d;
  throw Error("unknown dtype '" + name +
              "' (expected int8, uint8, int16, int32, int64, float32 or float64)");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t NpyArray::int_at(int64_t i) const {
  const uint8_t* p = bytes.data() + static_cast<size_t>(i) * dtype_size(dtype);
  switch (dtype) {
    case DType::kInt8: return static_cast<int8_t>(p[0]);
    case DType::kUInt8: return p[0];
    case DType::kInt16: return static_cast<int16_t>(load_le(p, 2));
    case DType::kInt32: return static_cast<int32_t>(load_le(p, 4));
    case DType::kInt64: return static_cast<int64_t>(load_le(p, 8));
    default: throw Error(std::string("int_at on a ") + dtype_name(dtype) + " array");
  }
}

double NpyArray::double_at(int64_t i) const {
  const uint8_t* p = bytes.data() + static_cast<size_t>(i) * dtype_size(dtype);
  if (dtype == DType::kFloat32) {
    const uint32_t bits = static_cast<uint32_t>(load_le(p, 4));
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  if (dtype == DType::kFloat64) {
    const uint64_t bits = load_le(p, 8);
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  return static_cast<double>(int_at(i));
}

std::vector<int32_t> NpyArray::to_int32(const std::string& what) const {
  if (!dtype_is_integer(dtype))
    throw Error(what + ": expected an integer array, got " + dtype_name(dtype));
  std::vector<int32_t> out(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) {
    const int64_t v = int_at(i);
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      throw Error(what + ": value " + std::to_string(v) + " at index " + std::to_string(i) +
                  " does not fit in int32");
    out[static_cast<size_t>(i)] = static_cast<int32_t>(v);
  }
  return out;
}

std::vector<double> NpyArray::to_double() const {
  std::vector<double> out(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) out[static_cast<size_t>(i)] = double_at(i);
  return out;
}

NpyArray NpyArray::from_int64s(DType dtype, std::vector<int64_t> shape,
                               const std::vector<int64_t>& values, const std::string& what) {
  if (!dtype_is_integer(dtype))
    throw Error(what + ": from_int64s needs an integer dtype, got " + dtype_name(dtype));
  NpyArray a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  if (element_count(a.shape, what) != static_cast<int64_t>(values.size()))
    throw Error(what + ": shape " + shape_str(a.shape) + " does not hold " +
                std::to_string(values.size()) + " values");
  const size_t w = dtype_size(dtype);
  int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  switch (dtype) {
    case DType::kInt8: lo = -128, hi = 127; break;
    case DType::kUInt8: lo = 0, hi = 255; break;
    case DType::kInt16: lo = -32768, hi = 32767; break;
    case DType::kInt32: lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max(); break;
    default: break;
  }
  a.bytes.resize(values.size() * w);
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] < lo || values[i] > hi)
      throw Error(what + ": value " + std::to_string(values[i]) + " at index " +
                  std::to_string(i) + " does not fit in " + dtype_name(dtype));
    store_le(a.bytes.data() + i * w, static_cast<uint64_t>(values[i]), w);
  }
  return a;
}

NpyArray NpyArray::from_ints(DType dtype, std::vector<int64_t> shape,
                             const std::vector<int32_t>& values, const std::string& what) {
  return from_int64s(dtype, std::move(shape), std::vector<int64_t>(values.begin(), values.end()),
                     what);
}

NpyArray NpyArray::from_doubles(DType dtype, std::vector<int64_t> shape,
                                const std::vector<double>& values) {
  if (dtype != DType::kFloat32 && dtype != DType::kFloat64)
    throw Error(std::string("from_doubles needs float32 or float64, got ") + dtype_name(dtype));
  NpyArray a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  if (element_count(a.shape, "from_doubles") != static_cast<int64_t>(values.size()))
    throw Error("from_doubles: shape " + shape_str(a.shape) + " does not hold " +
                std::to_string(values.size()) + " values");
  const size_t w = dtype_size(dtype);
  a.bytes.resize(values.size() * w);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kFloat32) {
      const float f = static_cast<float>(values[i]);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      store_le(a.bytes.data() + i * w, bits, 4);
    } else {
      uint64_t bits;
      std::memcpy(&bits, &values[i], 8);
      store_le(a.bytes.data() + i * w, bits, 8);
    }
  }
  return a;
}

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name) {
  if (size < kMagicSize || std::memcmp(data, kMagic, kMagicSize) != 0)
    fail(name, "not a .npy file (bad magic; expected \\x93NUMPY)");
  if (size < kMagicSize + 2) fail(name, "truncated header (no version)");
  const int major = data[6], minor = data[7];
  size_t len_bytes = 0;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2 || major == 3) {
    len_bytes = 4;
  } else {
    fail(name, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (expected 1.0, 2.0 or 3.0)");
  }
  if (minor != 0)
    fail(name, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor));
  if (size < 8 + len_bytes) fail(name, "truncated header (no header length)");
  const uint64_t header_len = load_le(data + 8, len_bytes);
  const size_t header_start = 8 + len_bytes;
  if (header_len > size - header_start)
    fail(name, "truncated header: header length " + std::to_string(header_len) +
                   " exceeds the file size " + std::to_string(size));
  const std::string header(reinterpret_cast<const char*>(data + header_start),
                           static_cast<size_t>(header_len));
  std::string descr;
  bool fortran_order = false;
  NpyArray a;
  HeaderParser(header, name).parse(&descr, &fortran_order, &a.shape);
  if (fortran_order) fail(name, "fortran_order arrays are not supported (save C-contiguous)");
  a.dtype = dtype_of_descr(descr, name);
  const int64_t count = element_count(a.shape, name);
  const uint64_t need = static_cast<uint64_t>(count) * dtype_size(a.dtype);
  const uint64_t have = size - header_start - header_len;
  if (have < need)
    fail(name, "truncated data: shape " + shape_str(a.shape) + " of " + dtype_name(a.dtype) +
                   " needs " + std::to_string(need) + " bytes, the file has " +
                   std::to_string(have));
  if (have > need)
    fail(name, "size mismatch: " + std::to_string(have - need) + " bytes after the data of shape " +
                   shape_str(a.shape) + " " + dtype_name(a.dtype));
  const uint8_t* payload = data + header_start + header_len;
  a.bytes.assign(payload, payload + need);
  return a;
}

std::vector<uint8_t> serialize_npy(const NpyArray& a) {
  if (a.bytes.size() != static_cast<size_t>(element_count(a.shape, "serialize_npy")) *
                            dtype_size(a.dtype))
    throw Error("serialize_npy: " + std::to_string(a.bytes.size()) +
                " payload bytes do not match shape " + shape_str(a.shape) + " of " +
                dtype_name(a.dtype));
  std::string dict = std::string("{'descr': '") + descr_of(a.dtype) +
                     "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < a.shape.size(); ++i) dict += std::to_string(a.shape[i]) + ", ";
  if (a.shape.size() > 1) dict.erase(dict.size() - 2);  // NumPy writes (3, 4) but (3,)
  else if (a.shape.size() == 1) dict.erase(dict.size() - 1);
  dict += "), }";
  // Pad with spaces and a final newline so the payload starts 64-byte aligned, as NumPy does.
  size_t len_bytes = 2;
  int major = 1;
  if (dict.size() + 1 + 64 > 65535) {
    len_bytes = 4;
    major = 2;
  }
  const size_t prefix = 8 + len_bytes;
  size_t total = prefix + dict.size() + 1;
  const size_t pad = (64 - total % 64) % 64;
  dict.append(pad, ' ');
  dict += '\n';
  std::vector<uint8_t> out(prefix + dict.size() + a.bytes.size());
  std::memcpy(out.data(), kMagic, kMagicSize);
  out[6] = static_cast<uint8_t>(major);
  out[7] = 0;
  store_le(out.data() + 8, dict.size(), len_bytes);
  std::memcpy(out.data() + prefix, dict.data(), dict.size());
  if (!a.bytes.empty()) std::memcpy(out.data() + prefix + dict.size(), a.bytes.data(), a.bytes.size());
  return out;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": not a regular file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw Error(path + ": read error");
  return bytes;
}

NpyArray read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_npy(bytes.data(), bytes.size(), path);
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = temp_name_for(path);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot create " + tmp + ": " + std::strerror(errno));
  const bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size) && std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw Error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " to it: " + why);
  }
}

void write_npy(const std::string& path, const NpyArray& array) {
  const std::vector<uint8_t> bytes = serialize_npy(array);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace anybit
