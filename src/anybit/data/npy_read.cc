// Strict .npy parsing; see npy_read.h. Every read is preceded by a bounds check against the
// buffer, and every size computation by an overflow check.
#include "anybit/data/npy_read.h"

#include <cctype>
#include <cstring>
#include <limits>

#include "anybit/data/dataset.h"
#include "anybit/data/file_read.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy_read assumes a little-endian host"
#endif

namespace anybit {
namespace data {
namespace {

// Recursive-descent parser for the header dict, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (10, 3, 32, 32), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  void parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{');
    skip_space();
    while (peek() != '}') {
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) fail("'descr' appears twice");
        *descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) fail("'fortran_order' appears twice");
        *fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) fail("'shape' appears twice");
        *shape = parse_shape();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++p_;
        skip_space();
      } else if (peek() != '}') {
        fail("expected ',' or '}' at header offset " + std::to_string(p_));
      }
    }
    ++p_;
    skip_space();
    if (p_ != s_.size()) fail("unexpected text after the header dict");
    if (!have_descr) fail("header has no 'descr'");
    if (!have_order) fail("header has no 'fortran_order'");
    if (!have_shape) fail("header has no 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw Error("npy: " + name_ + ": bad header: " + why); }
  // '\0' past the end: never a valid token character, so every loop below stops there.
  char peek() const { return p_ < s_.size() ? s_[p_] : '\0'; }
  void skip_space() {
    while (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r') ++p_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "' at header offset " + std::to_string(p_));
    ++p_;
  }
  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string at header offset " + std::to_string(p_));
    ++p_;
    std::string out;
    while (peek() != quote) {
      if (peek() == '\0' || peek() == '\\' || peek() == '\n') fail("unterminated or escaped string");
      out += s_[p_++];
    }
    ++p_;
    return out;
  }
  bool parse_bool() {
    if (s_.compare(p_, 4, "True") == 0) {
      p_ += 4;
      return true;
    }
    if (s_.compare(p_, 5, "False") == 0) {
      p_ += 5;
      return false;
    }
    fail("'fortran_order' must be True or False");
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(');
    skip_space();
    while (peek() != ')') {
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("shape must be a tuple of non-negative integers");
      int64_t v = 0;
      int digits = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (++digits > 15) fail("shape dimension too large");
        v = v * 10 + (s_[p_++] - '0');
      }
      shape.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++p_;
        skip_space();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in shape");
      }
    }
    ++p_;
    if (shape.size() > 32) fail("shape has more than 32 dimensions");
    return shape;
  }

  const std::string& s_;
  const std::string& name_;
  size_t p_ = 0;
};

size_t item_size_of(const std::string& descr, const std::string& name) {
  if (descr == "<f4" || descr == "<i4") return 4;
  if (descr == "<f8" || descr == "<i8") return 8;
  if (descr == "|u1" || descr == "|i1" || descr == "|b1" || descr == "<u1") return 1;
  if (!descr.empty() && descr[0] == '>')
    throw Error("npy: " + name + ": big-endian dtype '" + descr + "' is not supported (save it little-endian)");
  throw Error("npy: " + name + ": unsupported dtype '" + descr + "'");
}

}  // namespace

int64_t NpyArray::element_count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

NpyArray parse_npy(const uint8_t* b, size_t size, const std::string& name) {
  auto fail = [&](const std::string& why) { return Error("npy: " + name + ": " + why); };
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 8 || std::memcmp(b, kMagic, 6) != 0) throw fail("not a .npy file (bad magic)");
  const int major = b[6];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    if (size < 10) throw fail("truncated: the file ends inside the header length");
    header_len = b[8] | (size_t{b[9]} << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw fail("truncated: the file ends inside the header length");
    header_len = b[8] | (size_t{b[9]} << 8) | (size_t{b[10]} << 16) | (size_t{b[11]} << 24);
    header_start = 12;
  } else {
    throw fail("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(b[7]));
  }
  if (size - header_start < header_len)
    throw fail("truncated: header of " + std::to_string(header_len) + " bytes, file holds " +
               std::to_string(size - header_start));
  const std::string header(reinterpret_cast<const char*>(b + header_start), header_len);

  NpyArray a;
  bool fortran_order = false;
  HeaderParser(header, name).parse(&a.descr, &fortran_order, &a.shape);
  if (fortran_order) throw fail("Fortran-order arrays are not supported (save with np.ascontiguousarray)");
  a.item_size = item_size_of(a.descr, name);

  const size_t data_start = header_start + header_len;
  const size_t have = size - data_start;
  uint64_t count = 1;
  for (int64_t d : a.shape) {
    if (d != 0 && count > std::numeric_limits<uint64_t>::max() / a.item_size / static_cast<uint64_t>(d))
      throw fail("shape too large");
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t need = count * a.item_size;
  if (need > have)
    throw fail("truncated: shape needs " + std::to_string(need) + " bytes of data, file holds " + std::to_string(have));
  if (need < have)
    throw fail("corrupt: shape needs " + std::to_string(need) + " bytes of data, file holds " + std::to_string(have));
  a.data.assign(b + data_start, b + size);
  return a;
}

NpyArray read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes("npy", path);
  return parse_npy(bytes.data(), bytes.size(), path);
}

}  // namespace data
}  // namespace anybit
