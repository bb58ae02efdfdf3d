// Parsing and printing of QuantSpec short strings; see spec.h for the grammar.
#include "anybit/quant/spec.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace anybit {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

[[noreturn]] void bad(const std::string& text, const std::string& why) {
  throw Error("invalid quantizer spec '" + text + "': " + why +
              " (expected e.g. int8, uint4:asym, auto8, int6:per_channel, fixed:Q2.5, log4, fp8:e4m3, "
              "binary, ternary, int4:pow2scale, float)");
}

// Strict decimal integer: digits only, so "int4x" or "int" are rejected.
bool parse_int(const std::string& s, int* out) {
  if (s.empty() || s.size() > 6) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  int v = 0;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = neg ? -v : v;
  return true;
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

}  // namespace

int QuantSpec::qmin() const {
  switch (scheme) {
    case Scheme::kInt:
    case Scheme::kFixed:
      return narrow ? -(1 << (bits - 1)) + 1 : -(1 << (bits - 1));
    case Scheme::kUInt:
    case Scheme::kUFixed:
      return 0;
    case Scheme::kBinary:
    case Scheme::kTernary:
      return -1;
    default:
      return 0;
  }
}

int QuantSpec::qmax() const {
  switch (scheme) {
    case Scheme::kInt:
    case Scheme::kFixed:
      return (1 << (bits - 1)) - 1;
    case Scheme::kUInt:
    case Scheme::kUFixed:
      return (1 << bits) - 1;
    case Scheme::kBinary:
    case Scheme::kTernary:
      return 1;
    default:
      return 0;
  }
}

MinifloatSpecial minifloat_special(int exp_bits, int man_bits) {
  if (exp_bits >= 5) return MinifloatSpecial::kIeee;
  return 1 + exp_bits + man_bits >= 8 ? MinifloatSpecial::kNanOnly : MinifloatSpecial::kNone;
}

double minifloat_max(int exp_bits, int man_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int top = (1 << exp_bits) - 1;  // the largest exponent code
  switch (minifloat_special(exp_bits, man_bits)) {
    case MinifloatSpecial::kIeee: return std::ldexp(2.0 - std::ldexp(1.0, -man_bits), top - 1 - bias);
    case MinifloatSpecial::kNanOnly:
      // the top code's mantissa of all ones is NaN: the largest has mantissa 1..10 (Y >= 3 here)
      return std::ldexp(2.0 - std::ldexp(1.0, 1 - man_bits), top - bias);
    case MinifloatSpecial::kNone: break;
  }
  return std::ldexp(2.0 - std::ldexp(1.0, -man_bits), top - bias);
}

const char* rounding_name(Rounding r) {
  switch (r) {
    case Rounding::kHalfEven: return "half_even";
    case Rounding::kHalfAway: return "half_away";
    case Rounding::kFloor: return "floor";
    case Rounding::kStochastic: return "stochastic";
  }
  return "?";
}

Rounding parse_rounding(const std::string& name) {
  const std::string n = lower(name);
  if (n == "half_even" || n == "nearest" || n == "even") return Rounding::kHalfEven;
  if (n == "half_away" || n == "away") return Rounding::kHalfAway;
  if (n == "floor") return Rounding::kFloor;
  if (n == "stochastic") return Rounding::kStochastic;
  throw Error("unknown rounding '" + name + "' (expected half_even, half_away, floor or stochastic)");
}

bool QuantSpec::operator==(const QuantSpec& o) const { return str() == o.str(); }

QuantSpec QuantSpec::resolve_sign(double min_value) const {
  if (!auto_sign) return *this;
  QuantSpec s = *this;
  s.auto_sign = false;
  if (min_value >= 0) {
    s.scheme = Scheme::kUInt;
    s.asymmetric = false;
  }
  return s;
}

std::string QuantSpec::str() const {
  std::ostringstream os;
  switch (scheme) {
    case Scheme::kFloat: return "float";
    case Scheme::kInt: os << (auto_sign ? "auto" : "int") << bits; break;
    case Scheme::kUInt: os << "uint" << bits; break;
    case Scheme::kFixed: os << "fixed:Q" << int_bits << "." << frac_bits; break;
    case Scheme::kUFixed: os << "ufixed:Q" << int_bits << "." << frac_bits; break;
    case Scheme::kLog: os << "log" << bits; break;
    case Scheme::kBinary: os << "binary"; break;
    case Scheme::kTernary: os << "ternary"; break;
    case Scheme::kMinifloat: os << "fp" << bits << ":e" << exp_bits << "m" << man_bits; break;
    case Scheme::kMx:
      if (exp_bits == 0) {
        os << "mxint" << bits;
      } else {
        os << "mxfp" << bits;
        if (!(exp_bits == 2 && man_bits == 1)) os << ":e" << exp_bits << "m" << man_bits;
      }
      break;
    case Scheme::kNvfp4: os << "nvfp4"; break;
    case Scheme::kNf4: os << "nf4"; break;
    case Scheme::kLut: os << "lut" << bits; break;
  }
  if ((scheme == Scheme::kMx && block != 32) || (scheme == Scheme::kNvfp4 && block != 16)) os << ":block=" << block;
  if (auto_sign ? !asymmetric : asymmetric) os << (auto_sign ? ":sym" : ":asym");
  if (narrow) os << ":narrow";
  if (pow2_scale && scheme != Scheme::kFixed && scheme != Scheme::kUFixed) os << ":pow2scale";
  if (granularity == Granularity::kPerChannel) os << ":per_channel";
  if (axis >= 0) os << ":axis=" << axis;
  if (granularity == Granularity::kPerGroup) os << ":group=" << group_size;
  if (rounding != Rounding::kHalfEven) os << ":round=" << rounding_name(rounding);
  if (learn == Learn::kLsq) os << ":lsq";
  if (learn == Learn::kPact) os << ":pact";
  if (scheme == Scheme::kTernary && threshold != 0.7) os << ":threshold=" << threshold;
  if (!levels.empty()) {
    os << ":levels=";
    for (size_t i = 0; i < levels.size(); ++i) {
      // the shortest decimal that reads back as the same double
      std::string t;
      for (int p = 6; p <= 17; ++p) {
        std::ostringstream v;
        v.precision(p);
        v << levels[i];
        t = v.str();
        if (std::strtod(t.c_str(), nullptr) == levels[i]) break;
      }
      os << (i ? "/" : "") << t;
    }
  }
  return os.str();
}

QuantSpec parse_spec(const std::string& text_in) {
  const std::string text = lower(text_in);
  std::vector<std::string> parts = split(text, ':');
  for (auto& p : parts) {
    // tolerate spaces around separators
    size_t b = p.find_first_not_of(" \t"), e = p.find_last_not_of(" \t");
    p = b == std::string::npos ? "" : p.substr(b, e - b + 1);
  }
  const std::string& base = parts[0];
  QuantSpec s;
  size_t first_mod = 1;
  int bits = 0;
  if (base.empty()) bad(text_in, "empty spec");
  if (base == "float" || base == "fp32" || base == "none") {
    if (parts.size() > 1) bad(text_in, "'float' takes no modifiers");
    return s;
  } else if (base == "binary") {
    s.scheme = Scheme::kBinary;
    s.bits = 1;
  } else if (base == "ternary") {
    s.scheme = Scheme::kTernary;
    s.bits = 2;
  } else if (base == "nf4") {
    s.scheme = Scheme::kNf4;
    s.bits = 4;
  } else if (base.rfind("lut", 0) == 0) {
    s.scheme = Scheme::kLut;
    if (!parse_int(base.substr(3), &bits) || bits < 1 || bits > 8)
      bad(text_in, "'lut' must be followed by the codebook's bits, 1..8 (2^N levels), as in lut4");
    s.bits = bits;
  } else if (base == "nvfp4") {
    s.scheme = Scheme::kNvfp4;
    s.bits = 4;
    s.exp_bits = 2;
    s.man_bits = 1;
    s.block = 16;
  } else if (base.rfind("mxint", 0) == 0) {
    s.scheme = Scheme::kMx;
    if (!parse_int(base.substr(5), &bits) || bits < 2 || bits > 16)
      bad(text_in, "'mxint' must be followed by an element width of 2..16 bits, as in mxint8");
    s.bits = s.man_bits = bits;
    s.block = 32;
  } else if (base.rfind("mxfp", 0) == 0) {
    s.scheme = Scheme::kMx;
    s.block = 32;
    if (!parse_int(base.substr(4), &bits)) bad(text_in, "'mxfp' must be followed by a bit width, as in mxfp8:e4m3");
    s.bits = bits;
    std::string fmt = parts.size() > 1 && !parts[1].empty() && parts[1][0] == 'e' ? parts[1] : "";
    if (fmt.empty() && bits != 4)
      bad(text_in, "an MX float needs its element format, as in mxfp8:e4m3, mxfp8:e5m2, mxfp6:e3m2, mxfp6:e2m3");
    if (fmt.empty()) fmt = "e2m1";  // mxfp4
    else first_mod = 2;
    const size_t mpos = fmt.find('m');
    if (mpos == std::string::npos || !parse_int(fmt.substr(1, mpos - 1), &s.exp_bits) ||
        !parse_int(fmt.substr(mpos + 1), &s.man_bits))
      bad(text_in, "element format '" + fmt + "' must be eXmY with integers X and Y, as in e4m3");
    if (s.exp_bits < 1 || s.exp_bits > 8 || s.man_bits < 0 || s.man_bits > 10 || 1 + s.exp_bits + s.man_bits != bits)
      bad(text_in, "mxfp" + std::to_string(bits) + " elements must be e" + "XmY with 1 + X + Y = " +
                       std::to_string(bits) + ", 1 <= X <= 8, 0 <= Y <= 10");
  } else if (base == "bf16" || (base.size() > 2 && base[0] == 'f' && base[1] == 'p' && base != "fp32")) {
    s.scheme = Scheme::kMinifloat;
    std::string fmt;
    if (base == "bf16") {
      s.bits = 16;
      fmt = "e8m7";
    } else {
      if (!parse_int(base.substr(2), &bits))
        bad(text_in, "'fp' must be followed by a bit width, as in fp8:e4m3");
      if (parts.size() < 2 || parts[1].empty() || parts[1][0] != 'e')
        bad(text_in, "a minifloat needs its exponent and mantissa widths, as in fp8:e4m3, fp8:e5m2, fp6:e3m2, "
                     "fp6:e2m3, fp4:e2m1");
      s.bits = bits;
      fmt = parts[1];
      first_mod = 2;
    }
    const size_t mpos = fmt.find('m');
    if (mpos == std::string::npos || !parse_int(fmt.substr(1, mpos - 1), &s.exp_bits) ||
        !parse_int(fmt.substr(mpos + 1), &s.man_bits))
      bad(text_in, "minifloat format '" + fmt + "' must be eXmY with integers X and Y, as in e4m3");
    if (s.exp_bits < 1 || s.exp_bits > 8 || s.man_bits < 0 || s.man_bits > 10)
      bad(text_in, "minifloat e" + std::to_string(s.exp_bits) + "m" + std::to_string(s.man_bits) +
                       " is outside 1 <= X <= 8 exponent and 0 <= Y <= 10 mantissa bits");
    if (1 + s.exp_bits + s.man_bits != s.bits)
      bad(text_in, "fp" + std::to_string(s.bits) + " has " + std::to_string(s.bits) + " bits but e" +
                       std::to_string(s.exp_bits) + "m" + std::to_string(s.man_bits) + " needs 1 + " +
                       std::to_string(s.exp_bits) + " + " + std::to_string(s.man_bits) + " = " +
                       std::to_string(1 + s.exp_bits + s.man_bits));
  } else if (base == "fixed" || base == "ufixed") {
    s.scheme = base == "fixed" ? Scheme::kFixed : Scheme::kUFixed;
    if (parts.size() < 2 || parts[1].size() < 4 || parts[1][0] != 'q')
      bad(text_in, "fixed point needs a Qm.n format, as in fixed:Q2.5");
    auto mn = split(parts[1].substr(1), '.');
    if (mn.size() != 2 || !parse_int(mn[0], &s.int_bits) || !parse_int(mn[1], &s.frac_bits) ||
        s.int_bits < 0 || s.frac_bits < 0)
      bad(text_in, "fixed point format must be Qm.n with non-negative integers m and n");
    s.bits = s.int_bits + s.frac_bits + (s.scheme == Scheme::kFixed ? 1 : 0);
    if (s.bits > 16)
      bad(text_in, "Q" + std::to_string(s.int_bits) + "." + std::to_string(s.frac_bits) +
                       " needs " + std::to_string(s.bits) + " bits; at most 16 are supported");
    if (s.bits < 1 || (s.scheme == Scheme::kFixed && s.bits < 2))
      bad(text_in, "fixed point needs at least one magnitude bit");
    s.pow2_scale = true;
    first_mod = 2;
  } else {
    std::string prefix;
    for (const char* p : {"uint", "int", "auto", "log"}) {
      if (base.rfind(p, 0) == 0) {
        prefix = p;
        break;
      }
    }
    if (prefix.empty()) bad(text_in, "unknown scheme '" + base + "'");
    if (!parse_int(base.substr(prefix.size()), &bits))
      bad(text_in, "'" + prefix + "' must be followed by a bit width, as in " + prefix + "8");
    if (bits < 1 || bits > 16)
      bad(text_in, "bit width " + std::to_string(bits) + " is outside 1..16");
    s.bits = bits;
    if (prefix == "uint") {
      s.scheme = Scheme::kUInt;
    } else if (prefix == "int") {
      s.scheme = Scheme::kInt;
      if (bits < 2) bad(text_in, "a signed 1-bit integer has only the levels {-1, 0}; use 'binary'");
    } else if (prefix == "auto") {
      s.scheme = Scheme::kInt;
      s.auto_sign = true;
      s.asymmetric = true;
      if (bits < 2) bad(text_in, "auto needs at least 2 bits (its signed case is an int); use uint1 or binary");
    } else {
      s.scheme = Scheme::kLog;
      if (bits < 2) bad(text_in, "log needs at least 2 bits (one sign bit and one exponent code)");
    }
  }
  for (size_t i = first_mod; i < parts.size(); ++i) {
    const std::string& m = parts[i];
    std::string key = m, val;
    auto eq = m.find('=');
    if (eq != std::string::npos) {
      key = m.substr(0, eq);
      val = m.substr(eq + 1);
    }
    if (key == "asym" || key == "asymmetric") {
      s.asymmetric = true;
    } else if (key == "sym" || key == "symmetric") {
      s.asymmetric = false;
    } else if (key == "narrow") {
      s.narrow = true;
    } else if (key == "pow2scale" || key == "pow2") {
      s.pow2_scale = true;
    } else if (key == "per_tensor") {
      s.granularity = Granularity::kPerTensor;
    } else if (key == "per_channel") {
      s.granularity = Granularity::kPerChannel;
    } else if (key == "axis") {
      if (!parse_int(val, &s.axis) || s.axis < 0) bad(text_in, "axis must be a non-negative integer");
      // a block format's axis is the one its blocks run along; anything else gets a scale per channel
      if (!s.is_block()) s.granularity = Granularity::kPerChannel;
    } else if (key == "block") {
      if (!s.is_block()) bad(text_in, "'block' applies to the block formats (mxfp*, mxint*, nvfp4); use group=K");
      if (!parse_int(val, &s.block) || s.block < 1) bad(text_in, "block must be a positive integer");
    } else if (key == "group") {
      if (!parse_int(val, &s.group_size) || s.group_size < 1)
        bad(text_in, "group must be a positive integer");
      s.granularity = Granularity::kPerGroup;
    } else if (key == "round") {
      try {
        s.rounding = parse_rounding(val);
      } catch (const Error& e) {
        bad(text_in, e.what());
      }
    } else if (key == "lsq") {
      s.learn = Learn::kLsq;
    } else if (key == "pact") {
      s.learn = Learn::kPact;
    } else if (key == "levels") {
      s.levels.clear();
      for (const std::string& v : split(val, '/')) {
        double d;
        if (!parse_double(v, &d) || !std::isfinite(d))
          bad(text_in, "levels must be numbers separated by '/', as in levels=-1/-0.25/0.25/1");
        s.levels.push_back(d);
      }
    } else if (key == "threshold") {
      if (!parse_double(val, &s.threshold) || !(s.threshold >= 0))
        bad(text_in, "threshold must be a non-negative number");
    } else {
      bad(text_in, "unknown modifier '" + m + "'");
    }
  }
  // Combinations that have no meaning.
  if (s.is_block() && (s.granularity != Granularity::kPerTensor || s.learn != Learn::kNone || s.asymmetric ||
                       s.narrow || s.pow2_scale || s.rounding != Rounding::kHalfEven))
    bad(text_in, "a block format computes its scales from each block (block=K, axis=K change the block); "
                 "per_channel, group, lsq, pact, asym, narrow, pow2scale and round do not apply");
  if (s.auto_sign && s.narrow) bad(text_in, "'narrow' applies to signed int/fixed quantizers only, not auto");
  if (s.auto_sign && s.learn == Learn::kPact)
    bad(text_in, "'pact' learns the clip of an unsigned activation quantizer (use uintN:pact)");
  if (s.asymmetric && !s.is_uniform())
    bad(text_in, "'asym' applies to int/uint quantizers only");
  if (s.asymmetric && (s.scheme == Scheme::kFixed || s.scheme == Scheme::kUFixed))
    bad(text_in, "fixed point has no zero point; 'asym' does not apply");
  if (s.asymmetric && s.bits < 2)
    bad(text_in, "an asymmetric 1-bit range has no room for a zero point besides one level");
  if (s.narrow && s.scheme != Scheme::kInt && s.scheme != Scheme::kFixed)
    bad(text_in, "'narrow' applies to signed int/fixed quantizers only");
  if (s.narrow && s.bits < 3)
    bad(text_in, "'narrow' needs at least 3 bits");
  if (s.learn == Learn::kPact && !(s.scheme == Scheme::kUInt))
    bad(text_in, "'pact' learns the clip of an unsigned activation quantizer (use uintN:pact)");
  if (s.learn == Learn::kLsq && !s.is_uniform() && s.scheme != Scheme::kBinary && s.scheme != Scheme::kTernary &&
      s.scheme != Scheme::kMinifloat && s.scheme != Scheme::kNf4 && s.scheme != Scheme::kLut)
    bad(text_in, "'lsq' learns the step of a uniform quantizer (int/uint), the scale of a minifloat or nf4, the levels "
                 "of a lut, or the scale (and ternary threshold) of binary/ternary");
  if ((s.scheme == Scheme::kNf4 || s.scheme == Scheme::kLut) && s.pow2_scale)
    bad(text_in, "'pow2scale' does not apply to a codebook");
  if (s.scheme == Scheme::kLut && s.granularity == Granularity::kPerGroup)
    bad(text_in, "a lut learns its levels per tensor or per channel (per_channel), not per group");
  if (s.learn != Learn::kNone && s.is_fixed_point()) {
    // clip(round(w / step), a, b) with a learned step is a uniform spec of the same width
    const std::string same = std::string(s.scheme == Scheme::kFixed ? "int" : "uint") + std::to_string(s.bits) +
                             (s.learn == Learn::kPact ? ":pact" : ":lsq");
    bad(text_in, "fixed point has a fixed step 2^-n; it cannot be learned: for a learned step of the same width, "
                 "use " + same);
  }
  if (!s.levels.empty()) {
    if (s.scheme != Scheme::kLut) bad(text_in, "'levels' gives the codebook of a lutN spec only");
    if (static_cast<int64_t>(s.levels.size()) != (int64_t{1} << s.bits))
      bad(text_in, "lut" + std::to_string(s.bits) + " has " + std::to_string(1 << s.bits) + " levels, " +
                       std::to_string(s.levels.size()) + " given");
    for (size_t i = 1; i < s.levels.size(); ++i)
      if (!(s.levels[i - 1] < s.levels[i])) bad(text_in, "levels must be distinct and ascending");
  }
  if (s.threshold != 0.7 && s.scheme != Scheme::kTernary)
    bad(text_in, "'threshold' applies to ternary only");
  if (s.rounding != Rounding::kHalfEven && !s.is_uniform() && s.scheme != Scheme::kLog)
    bad(text_in, "rounding modes apply to uniform and log quantizers only (minifloats round to nearest even)");
  return s;
}

}  // namespace anybit
