// The string form of the built-in MAC models (mac.h): parsing a model, expanding a swept
// parameter into levels, and setting a seed.
#include "anybit/intsim/mac.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "anybit/intsim/mac_internal.h"

namespace anybit {
namespace intsim {
namespace detail {

std::string format_double(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
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

}  // namespace detail

using detail::format_double;

namespace {

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
  std::string text(const std::string& key) const {
    auto it = values_.find(key);
    return it == values_.end() ? "" : it->second;
  }
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

// --- parsing --------------------------------------------------------------------------------

std::unique_ptr<MacModel> parse_mac_model(const std::string& text_in) {
  const std::string text = trim(text_in);
  const size_t colon = text.find(':');
  const std::string name = trim(text.substr(0, colon));
  const std::string body = colon == std::string::npos ? "" : text.substr(colon + 1);
  const int64_t kMaxSeed = std::numeric_limits<int64_t>::max();
  auto seed_of = [&](const Params& p) { return static_cast<uint64_t>(p.integer("seed", 0, 0, kMaxSeed)); };
  if (name == "exact") {
    Params p(text, name, body, {});
    return std::make_unique<ExactMac>();
  }
  if (name == "gauss") {
    Params p(text, name, body, {"sigma", "rel", "fs", "seed"});
    if (!p.has("sigma") && !p.has("rel") && !p.has("fs")) bad_mac(text, "gauss needs sigma=..., rel=... or fs=...");
    return std::make_unique<GaussianMac>(p.number("sigma", 0, 0, 1e18), p.number("rel", 0, 0, 1e6),
                                         p.number("fs", 0, 0, 1e6), seed_of(p));
  }
  if (name == "adc") {
    Params p(text, name, body, {"bits", "range", "fs", "pct"});
    p.require("bits");
    const int bits = static_cast<int>(p.integer("bits", 8, 1, 32));
    if (p.has("range") == p.has("fs")) bad_mac(text, "adc needs range=... (or range=auto) or fs=..., one of them");
    if (p.has("pct") && p.text("range") != "auto") bad_mac(text, "pct=... goes with range=auto");
    if (p.has("fs")) {
      const double fs = p.number("fs", 1, 0, 1e6);
      if (fs == 0) bad_mac(text, "fs must be > 0");
      return std::make_unique<AdcMac>(bits, fs, AdcMac::Range::kFullScale);
    }
    if (p.text("range") == "auto") {
      const double pct = p.number("pct", 99.99, 0, 100);
      if (pct == 0) bad_mac(text, "pct must be > 0");
      return std::make_unique<AdcMac>(bits, 0, AdcMac::Range::kCalibrated, pct);
    }
    const double range = p.number("range", 1, 0, 1e18);
    if (range == 0) bad_mac(text, "range must be > 0");
    return std::make_unique<AdcMac>(bits, range);
  }
  if (name == "bitflip") {
    Params p(text, name, body, {"rate", "seed"});
    p.require("rate");
    return std::make_unique<BitFlipMac>(p.number("rate", 0, 0, 1), seed_of(p));
  }
  if (name == "wnoise") {
    Params p(text, name, body, {"rel", "seed"});
    p.require("rel");
    return std::make_unique<WeightNoiseMac>(p.number("rel", 0, 0, 1e6), seed_of(p));
  }
  bad_mac(text, "unknown model '" + name + "' (expected exact, gauss, adc, bitflip or wnoise)");
}

std::vector<std::string> expand_mac_levels(const std::string& text_in, std::string* key,
                                           std::vector<double>* values) {
  const std::string text = trim(text_in);
  const size_t colon = text.find(':');
  std::vector<std::string> items;  // key=value items, the swept one with its values
  std::vector<std::string> swept;
  std::string swept_key;
  int swept_item = -1;
  if (colon != std::string::npos) {
    std::stringstream ss(text.substr(colon + 1));
    std::string item;
    while (std::getline(ss, item, ',')) {
      item = trim(item);
      if (item.empty()) continue;
      if (item.find('=') != std::string::npos) {
        items.push_back(item);
        continue;
      }
      // a bare value: one more level of the key=value before it
      if (items.empty()) bad_mac(text, "expected key=value, got '" + item + "'");
      const std::string& prev = items.back();
      const std::string prev_key = trim(prev.substr(0, prev.find('=')));
      if (swept_item >= 0 && swept_item != static_cast<int>(items.size()) - 1)
        bad_mac(text, "only one parameter may take several values (" + swept_key + " and " + prev_key + ")");
      if (swept_item < 0) {
        swept_item = static_cast<int>(items.size()) - 1;
        swept_key = prev_key;
        swept.push_back(trim(prev.substr(prev.find('=') + 1)));
      }
      swept.push_back(item);
    }
  }
  if (key) *key = swept_key;
  std::vector<std::string> out;
  const std::string name = trim(text.substr(0, colon));
  if (swept_item < 0) {
    parse_mac_model(text);
    out.push_back(text);
  } else {
    for (const std::string& v : swept) {
      std::string s = name + ":";
      for (size_t i = 0; i < items.size(); ++i)
        s += (i ? "," : "") + (static_cast<int>(i) == swept_item ? swept_key + "=" + v : items[i]);
      parse_mac_model(s);
      out.push_back(s);
    }
  }
  if (values) {
    values->clear();
    for (const std::string& v : swept) values->push_back(std::strtod(v.c_str(), nullptr));
  }
  return out;
}

std::string with_mac_seed(const std::string& text_in, uint64_t seed) {
  const std::string text = trim(text_in);
  if (!parse_mac_model(text)->seed()) return text;
  const std::string name = trim(text.substr(0, text.find(':')));
  std::string body = text.find(':') == std::string::npos ? "" : text.substr(text.find(':') + 1);
  std::stringstream ss(body);
  std::string item, out = name + ":";
  bool first = true;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty() || trim(item.substr(0, item.find('='))) == "seed") continue;
    out += (first ? "" : ",") + item;
    first = false;
  }
  return out + (first ? "" : ",") + "seed=" + std::to_string(seed);
}

}  // namespace intsim
}  // namespace anybit
