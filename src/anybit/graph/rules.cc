// Config parsing (yaml-cpp; JSON is YAML) and rule resolution; see rules.h.
#include "anybit/graph/rules.h"

#include <fnmatch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace anybit {

bool glob_match(const std::string& pattern, const std::string& text) {
  return fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

namespace {

const std::set<std::string>& known_kinds() {
  static const std::set<std::string> k = {"conv", "linear", "matmul", "relu",  "act",  "softmax",   "norm",
                                          "add",  "mul",    "cat",    "pool",  "bn",   "embedding", "mean",
                                          "input", "any"};
  return k;
}

std::string at_line(const std::string& source, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return source + (m.line >= 0 ? ":" + std::to_string(m.line + 1) : "");
}

std::vector<std::string> strings(const YAML::Node& n, const std::string& where, const char* key) {
  std::vector<std::string> out;
  try {
    if (n.IsSequence()) {
      for (const auto& e : n) out.push_back(e.as<std::string>());
    } else {
      out.push_back(n.as<std::string>());
    }
  } catch (const YAML::Exception&) {
    throw Error(where + ": '" + key + "' must be a string or a list of strings");
  }
  return out;
}

void parse_rule_key(const std::string& key, const YAML::Node& v, const std::string& where, Rule* r);

Rule parse_rule(const YAML::Node& n, const std::string& where) {
  if (!n.IsMap()) throw Error(where + ": a rule must be a mapping such as {kind: conv, spec: int8}");
  Rule r;
  r.where = where;
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    try {
      parse_rule_key(key, kv.second, where, &r);
    } catch (const YAML::Exception&) {
      throw Error(where + ": '" + key + "' must be a single value (a string), not a list or a mapping");
    }
  }
  if (!r.has_spec && r.calibrator.empty())
    throw Error(where + ": the rule sets neither 'spec' nor 'calibrator'");
  return r;
}

void parse_rule_key(const std::string& key, const YAML::Node& v, const std::string& where, Rule* rp) {
  Rule& r = *rp;
  {
    if (key == "match" || key == "name") {
      r.match = strings(v, where, "match");
    } else if (key == "kind" || key == "op") {
      r.kinds = strings(v, where, "kind");
      for (const auto& k : r.kinds)
        if (!known_kinds().count(k))
          throw Error(where + ": unknown kind '" + k +
                      "' (expected conv, linear, matmul, relu, act, softmax, norm, add, mul, cat, pool, bn, embedding, "
                      "mean, input, any)");
    } else if (key == "role") {
      for (const std::string& role : strings(v, where, "role")) {
        if (role != "weight" && role != "bias" && role != "activation" && role != "input" && role != "any")
          throw Error(where + ": unknown role '" + role + "' (expected weight, bias, activation, input or any)");
        if (role == "any") {  // any role: no filter
          r.roles.clear();
          break;
        }
        r.roles.push_back(role);
      }
    } else if (key == "feeds") {
      r.feeds = strings(v, where, "feeds");
      for (const auto& k : r.feeds)
        if (k != "conv" && k != "linear" && k != "matmul")
          throw Error(where + ": feeds: unknown kind '" + k + "' (expected conv, linear or matmul)");
    } else if (key == "position") {
      r.position = v.as<std::string>();
      if (r.position != "first" && r.position != "last") {
        try {
          size_t used = 0;
          (void)std::stoi(r.position, &used);
          if (used != r.position.size()) throw std::invalid_argument("x");
        } catch (const std::exception&) {
          throw Error(where + ": position must be first, last or an integer, got '" + r.position + "'");
        }
      }
    } else if (key == "spec" || key == "quant") {
      try {
        r.spec = parse_spec(v.as<std::string>());
      } catch (const Error& e) {
        throw Error(where + ": " + e.what());
      }
      r.has_spec = true;
    } else if (key == "calibrator") {
      r.calibrator = v.as<std::string>();
    } else if (key == "optional") {
      try {
        r.optional = v.as<bool>();
      } catch (const YAML::Exception&) {
        throw Error(where + ": 'optional' must be true or false");
      }
    } else {
      throw Error(where + ": unknown key '" + key +
                  "' (expected match, kind, role, feeds, position, spec, calibrator, optional)");
    }
  }
}

Config parse_yaml(const YAML::Node& root, const std::string& source) {
  Config c;
  c.source = source;
  if (!root.IsMap()) throw Error(source + ": a config must be a mapping with a 'rules' list");
  bool has_rules = false;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (key == "rules") {
      has_rules = true;
      if (!kv.second.IsSequence()) throw Error(at_line(source, kv.second) + ": 'rules' must be a list");
      int i = 0;
      for (const auto& rn : kv.second) {
        c.rules.push_back(parse_rule(rn, at_line(source, rn) + ": rules[" + std::to_string(i) + "]"));
        ++i;
      }
    } else if (key == "calibrator" || key == "weight_calibrator") {
      if (!kv.second.IsScalar())
        throw Error(at_line(source, kv.second) + ": '" + key + "' must be one calibrator name, not a list or a mapping");
      (key == "calibrator" ? c.calibrator : c.weight_calibrator) = kv.second.as<std::string>();
    } else {
      throw Error(at_line(source, kv.first) + ": unknown key '" + key +
                  "' (expected rules, calibrator, weight_calibrator)");
    }
  }
  if (!has_rules) throw Error(source + ": the config has no 'rules' list");
  return c;
}

}  // namespace

Config parse_config_string(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(source + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML/JSON: " + e.msg);
  }
  return parse_yaml(root, source);
}

Config parse_config_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open config file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config_string(ss.str(), path);
}

Rule parse_rule_string(const std::string& text) {
  // key=value pairs separated by commas; globs may not contain commas
  YAML::Node n(YAML::NodeType::Map);
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw Error("rule '" + text + "': expected key=value pairs, e.g. kind=conv,role=weight,spec=int4");
    n[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return parse_rule(n, "rule '" + text + "'");
}

std::vector<Assignment> assign(const Config& config, const std::vector<const PointDesc*>& points) {
  std::vector<Assignment> out(points.size());
  for (size_t i = 0; i < points.size(); ++i) {
    const bool param = points[i]->role == Role::kWeight || points[i]->role == Role::kBias;
    out[i].calibrator = param ? config.weight_calibrator : config.calibrator;
  }
  for (size_t ri = 0; ri < config.rules.size(); ++ri) {
    const Rule& r = config.rules[ri];
    std::vector<size_t> sel;
    for (size_t i = 0; i < points.size(); ++i) {
      const PointDesc& p = *points[i];
      bool ok = r.match.empty();
      for (const auto& g : r.match) ok = ok || glob_match(g, p.name);
      if (!ok) continue;
      if (!r.kinds.empty()) {
        bool k = false;
        for (const auto& kind : r.kinds)
          k = k || kind == "any" || kind == p.kind ||
              std::find(p.also_kinds.begin(), p.also_kinds.end(), kind) != p.also_kinds.end();
        if (!k) continue;
      }
      if (!r.roles.empty() && std::find(r.roles.begin(), r.roles.end(), role_name(p.role)) == r.roles.end()) continue;
      if (!r.feeds.empty()) {
        bool f = false;
        for (const auto& k : r.feeds) f = f || std::find(p.feeds.begin(), p.feeds.end(), k) != p.feeds.end();
        if (!f) continue;
      }
      sel.push_back(i);
    }
    if (!r.position.empty() && !sel.empty()) {
      long idx;
      if (r.position == "first") idx = 0;
      else if (r.position == "last") idx = -1;
      else idx = std::stol(r.position);
      if (idx < 0) idx += static_cast<long>(sel.size());
      if (idx < 0 || idx >= static_cast<long>(sel.size())) {
        throw Error(r.where + ": position " + r.position + " is outside the " +
                    std::to_string(sel.size()) + " points the rule selects");
      }
      sel = {sel[idx]};
    }
    if (sel.empty() && r.optional) continue;
    if (sel.empty()) {
      std::string desc;
      for (const auto& g : r.match) desc += (desc.empty() ? "match '" : ", '") + g + "'";
      for (const auto& k : r.kinds) desc += (desc.empty() ? "" : ", ") + std::string("kind ") + k;
      for (const auto& role : r.roles) desc += (desc.empty() ? "" : ", ") + std::string("role ") + role;
      for (const auto& k : r.feeds) desc += (desc.empty() ? "" : ", ") + std::string("feeds ") + k;
      throw Error(r.where + " (" + desc + ") matches no point; `anybit inspect MODEL` lists them");
    }
    for (size_t i : sel) {
      if (r.has_spec) {
        out[i].spec = r.spec;
        out[i].rule = static_cast<int>(ri);
      }
      if (!r.calibrator.empty()) out[i].calibrator = r.calibrator;
    }
  }
  return out;
}

}  // namespace anybit
