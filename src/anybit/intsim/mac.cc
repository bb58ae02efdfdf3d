// The built-in multiply-accumulate models and their string form; see mac.h.
#include "anybit/intsim/mac.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>
#include <vector>

#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A double rounded half-even and brought into int64 without undefined behaviour: noise can
// be arbitrarily large, and the engine's accumulator then wraps or saturates it.
int64_t to_int64_rounded(double v) {
  if (std::isnan(v)) return 0;
  const double limit = 4.0e18;  // < 2^62: leaves room for the engine's additions
  if (v > limit) return static_cast<int64_t>(limit);
  if (v < -limit) return static_cast<int64_t>(-limit);
  return static_cast<int64_t>(round_half_even(v));
}

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  // Shortest form that still reads back the same double.
  for (int p = 1; p <= 17; ++p) {
    std::ostringstream s;
    s.precision(p);
    s << v;
    if (std::strtod(s.str().c_str(), nullptr) == v) return s.str();
  }
  return os.str();
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

[[noreturn]] void bad_mac(const std::string& text, const std::string& what) {
  throw Error("MAC model '" + text + "': " + what);
}

class Params {
 public:
  Params(const std::string& text, const std::string& name, const std::string& body,
         const std::vector<std::string>& allowed)
      : text_(text), name_(name) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    std::stringstream ss(body);
    std::string item;
    while (std::getline(ss, item, ',')) {
      item = trim(item);
      if (item.empty()) continue;
      const size_t eq = item.find('=');
      if (eq == std::string::npos) bad_mac(text_, "expected key=value, got '" + item + "'");
      const std::string key = trim(item.substr(0, eq));
      const std::string value = trim(item.substr(eq + 1));
      bool known = false;
      for (const auto& a : allowed) known = known || a == key;
      if (!known)
        bad_mac(text_, "unknown parameter '" + key + "' for " + name_ +
                           (allowed.empty() ? " (it takes none)" : " (expected " + list + ")"));
      if (values_.count(key)) bad_mac(text_, "parameter '" + key + "' given twice");
      values_[key] = value;
    }
  }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  double number(const std::string& key, double dflt, double lo, double hi) const {
    auto it = values_.find(key);
    if (it == values_.end()) return dflt;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0' || !std::isfinite(v))
      bad_mac(text_, key + "=" + it->second + " is not a number");
    if (v < lo || v > hi)
      bad_mac(text_, key + "=" + it->second + " is outside [" + format_double(lo) + ", " +
                         format_double(hi) + "]");
    return v;
  }
  int64_t integer(const std::string& key, int64_t dflt, int64_t lo, int64_t hi) const {
    auto it = values_.find(key);
    if (it == values_.end()) return dflt;
    char* end = nullptr;
    const long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0')
      bad_mac(text_, key + "=" + it->second + " is not an integer");
    if (v < lo || v > hi)
      bad_mac(text_, key + "=" + it->second + " is outside [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
    return v;
  }
  void require(const std::string& key) const {
    if (!has(key)) bad_mac(text_, name_ + " needs " + key + "=...");
  }

 private:
  std::string text_, name_;
  std::map<std::string, std::string> values_;
};

}  // namespace

double PortableRng::uniform() {
  return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
}

double PortableRng::gaussian() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box-Muller; 1 - u lies in (0, 1], so the log is finite.
  const double u1 = 1.0 - uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2 * kPi * u2);
  has_spare_ = true;
  return r * std::cos(2 * kPi * u2);
}

GaussianMac::GaussianMac(double sigma, double rel, uint64_t seed)
    : sigma_(sigma), rel_(rel), rng_(seed) {
  if (!(sigma >= 0) || !(rel >= 0)) throw Error("gauss: sigma and rel must be >= 0");
}

int64_t GaussianMac::dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) {
  const int64_t exact = dot_exact(x, w, n, *ctx.acc);
  const double rel_sigma = rel_ * std::fabs(static_cast<double>(exact));
  // Independent absolute and relative errors: their variances add.
  const double sigma = rel_ == 0 ? sigma_ : std::sqrt(sigma_ * sigma_ + rel_sigma * rel_sigma);
  const double z = rng_.gaussian();  // drawn even for sigma 0, so the stream is the same
  if (sigma == 0) return exact;
  return to_int64_rounded(static_cast<double>(exact) + sigma * z);
}

std::string GaussianMac::describe() const {
  std::string s = "gauss:sigma=" + format_double(sigma_);
  if (rel_ != 0) s += ",rel=" + format_double(rel_);
  return s + ",seed=" + std::to_string(rng_.seed());
}

AdcMac::AdcMac(int bits, double range) : bits_(bits), range_(range) {
  if (bits < 1 || bits > 32) throw Error("adc: bits must be in [1, 32]");
  if (!(range > 0) || !std::isfinite(range)) throw Error("adc: range must be > 0");
  step_ = 2 * range / std::ldexp(1.0, bits);
}

int64_t AdcMac::dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) {
  const int64_t exact = dot_exact(x, w, n, *ctx.acc);
  const double lo = -std::ldexp(1.0, bits_ - 1), hi = std::ldexp(1.0, bits_ - 1) - 1;
  double code = round_half_even(static_cast<double>(exact) / step_);
  if (code < lo || code > hi) {
    ++clipped_;
    code = code < lo ? lo : hi;
  }
  return to_int64_rounded(code * step_);
}

std::string AdcMac::describe() const {
  return "adc:bits=" + std::to_string(bits_) + ",range=" + format_double(range_);
}

BitFlipMac::BitFlipMac(double rate, uint64_t seed) : rate_(rate), rng_(seed) {
  if (!(rate >= 0 && rate <= 1)) throw Error("bitflip: rate must be in [0, 1]");
}

int64_t BitFlipMac::dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) {
  const int64_t exact = dot_exact(x, w, n, *ctx.acc);
  const int bits = ctx.acc->spec().bits;
  // Flip bits of the accumulator word as stored: two's complement in `bits` bits.
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t word = static_cast<uint64_t>(exact) & mask;
  for (int b = 0; b < bits; ++b)
    if (rng_.uniform() < rate_) word ^= uint64_t{1} << b;
  const uint64_t sign = uint64_t{1} << (bits - 1);
  return (word & sign) ? static_cast<int64_t>(word) - static_cast<int64_t>(mask) - 1
                       : static_cast<int64_t>(word);
}

std::string BitFlipMac::describe() const {
  return "bitflip:rate=" + format_double(rate_) + ",seed=" + std::to_string(rng_.seed());
}

std::unique_ptr<MacModel> parse_mac_model(const std::string& text_in) {
  const std::string text = trim(text_in);
  const size_t colon = text.find(':');
  const std::string name = trim(text.substr(0, colon));
  const std::string body = colon == std::string::npos ? "" : text.substr(colon + 1);
  const int64_t kMaxSeed = std::numeric_limits<int64_t>::max();
  if (name == "exact") {
    Params p(text, name, body, {});
    return std::make_unique<ExactMac>();
  }
  if (name == "gauss") {
    Params p(text, name, body, {"sigma", "rel", "seed"});
    if (!p.has("sigma") && !p.has("rel")) bad_mac(text, "gauss needs sigma=... or rel=...");
    return std::make_unique<GaussianMac>(p.number("sigma", 0, 0, 1e18), p.number("rel", 0, 0, 1e6),
                                         static_cast<uint64_t>(p.integer("seed", 0, 0, kMaxSeed)));
  }
  if (name == "adc") {
    Params p(text, name, body, {"bits", "range"});
    p.require("bits");
    p.require("range");
    const double range = p.number("range", 1, 0, 1e18);
    if (range == 0) bad_mac(text, "range must be > 0");
    return std::make_unique<AdcMac>(static_cast<int>(p.integer("bits", 8, 1, 32)), range);
  }
  if (name == "bitflip") {
    Params p(text, name, body, {"rate", "seed"});
    p.require("rate");
    return std::make_unique<BitFlipMac>(p.number("rate", 0, 0, 1),
                                        static_cast<uint64_t>(p.integer("seed", 0, 0, kMaxSeed)));
  }
  bad_mac(text, "unknown model '" + name + "' (expected exact, gauss, adc or bitflip)");
}

}  // namespace intsim
}  // namespace anybit
