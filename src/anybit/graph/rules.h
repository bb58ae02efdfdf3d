// Configs: ordered rules that select quantization points and give them a quantizer
// spec and a calibrator. Later rules override earlier ones. YAML (JSON accepted).
//
//   calibrator: minmax            # default for activations and inputs
//   weight_calibrator: minmax     # default for weights and biases
//   rules:
//     - {kind: conv, role: weight, spec: int11}
//     - {match: "classifier.1.weight", spec: int10}
//     - {match: "features.*:out", kind: relu, spec: uint8, calibrator: "percentile:99.99"}
//     - {kind: conv, role: weight, position: first, spec: int8}
//
// Selectors (all optional, all must hold): match (glob on the point name, or a list of
// globs), kind (conv, linear, relu, act, add, mul, cat, pool, bn, mean, input, any; or a
// list), role (weight, bias, activation, input, any; or a list), position (first, last, or an
// index, negative from the end, among the points the other selectors picked).
// A rule that matches no point is an error: a typo must never quantize nothing
// (unless the rule says `optional: true`).
#pragma once

#include <string>
#include <vector>

#include "anybit/graph/point.h"
#include "anybit/quant/spec.h"

namespace anybit {

struct Rule {
  std::vector<std::string> match;  // globs; empty = any
  std::vector<std::string> kinds;  // empty = any
  std::vector<std::string> roles;  // empty = any
  std::vector<std::string> feeds;  // conv, linear, matmul: activations read by one of these; empty = any
  std::string position;            // "", first, last, or an integer
  QuantSpec spec;
  bool has_spec = false;
  std::string calibrator;          // "" = keep
  std::string where;               // "config.yaml:12: rules[3]" for messages
  bool optional = false;           // may match nothing (generated configs)
};

struct Config {
  std::string source;  // file name or "<string>"
  std::string calibrator = "minmax";
  std::string weight_calibrator = "minmax";
  std::vector<Rule> rules;
};

struct Assignment {
  QuantSpec spec;             // float = leave alone
  std::string calibrator;
  int rule = -1;              // index of the last rule that set the spec
};

Config parse_config_file(const std::string& path);
Config parse_config_string(const std::string& text, const std::string& source = "<config>");
// A config of one rule per line given on the command line, e.g. "kind=conv,role=weight,spec=int4".
Rule parse_rule_string(const std::string& text);

// Resolves every point's spec. Throws Error for a rule that matches nothing.
std::vector<Assignment> assign(const Config& config, const std::vector<const PointDesc*>& points);

// Shell-style glob: * (any run), ? (one char), [abc] classes.
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace anybit
