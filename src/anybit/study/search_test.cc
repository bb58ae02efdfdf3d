// `anybit search`: budgets against a hand count on the shipped model, each budget kind
// respected, the written config reproducing the reported accuracy, resume, clear errors.
#include "anybit/study/search.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "anybit/api/pipeline.h"
#include "anybit/api/quantize.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {

// The shipped model's conv/linear weights, counted by hand from its architecture
// (models/README.md): parameters, output channels and MACs per 28x28 sample.
struct Hand {
  const char* point;
  int64_t params, channels, macs;
};
const Hand kLayers[] = {
    {"stem.0.weight", 16 * 1 * 9, 16, 28 * 28 * 16 * 9},
    {"layer1.conv1.weight", 16 * 16 * 9, 16, 28 * 28 * 16 * 16 * 9},
    {"layer1.conv2.weight", 16 * 16 * 9, 16, 28 * 28 * 16 * 16 * 9},
    {"layer2.downsample.0.weight", 32 * 16, 32, 14 * 14 * 32 * 16},
    {"layer2.conv1.weight", 32 * 16 * 9, 32, 14 * 14 * 32 * 16 * 9},
    {"layer2.conv2.weight", 32 * 32 * 9, 32, 14 * 14 * 32 * 32 * 9},
    {"layer3.downsample.0.weight", 64 * 32, 64, 7 * 7 * 64 * 32},
    {"layer3.conv1.weight", 64 * 32 * 9, 64, 7 * 7 * 64 * 32 * 9},
    {"layer3.conv2.weight", 64 * 64 * 9, 64, 7 * 7 * 64 * 64 * 9},
    {"fc.weight", 10 * 64, 10, 10 * 64},
};

SearchOptions small(const std::string& name) {
  SearchOptions o;
  o.model = std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt";
  o.calib_data = "fmnist::train:limit=256";
  o.eval_data = "fmnist::test:limit=300";
  o.calib_batches = 2;
  o.sensitivity_samples = 128;
  o.weights = {2, 4, 8};
  o.out_dir = ::testing::TempDir() + "/anybit_search_" + name;
  std::system(("rm -rf '" + o.out_dir + "'").c_str());
  o.progress = false;
  return o;
}

// the measures of the chosen widths, by hand
struct Measures {
  double avg_wbits = 0, size_bytes = 0, bops = 0;
};
Measures by_hand(const std::vector<SearchLayer>& layers) {
  int64_t params = 0, bits = 0, size_bits = 0, macs = 0, bops = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Hand& h = kLayers[i];
    params += h.params;
    bits += h.params * layers[i].wbits;
    size_bits += h.params * layers[i].wbits + 32 * h.channels;
    macs += h.macs;
    bops += h.macs * layers[i].wbits * layers[i].abits;
  }
  return {static_cast<double>(bits) / params, size_bits / 8.0, static_cast<double>(bops) / (64.0 * macs)};
}

const SearchRow& row(const SearchResult& r, const std::string& kind, const std::string& label) {
  for (const auto& x : r.rows)
    if (x.kind == kind && x.label == label) return x;
  throw std::runtime_error("no row " + kind + " " + label);
}

TEST(Search, BudgetArithmeticMatchesAHandCountAndEveryKindIsRespected) {
  SearchOptions o = small("budgets");
  o.budget = "avg-wbits=3";
  const SearchResult r = run_search(o);
  ASSERT_EQ(r.layers.size(), std::size(kLayers));
  for (size_t i = 0; i < r.layers.size(); ++i) {
    EXPECT_EQ(r.layers[i].point, kLayers[i].point);
    EXPECT_EQ(r.layers[i].params, kLayers[i].params) << kLayers[i].point;
    EXPECT_EQ(r.layers[i].channels, kLayers[i].channels) << kLayers[i].point;
    EXPECT_EQ(r.layers[i].macs, kLayers[i].macs) << kLayers[i].point;
    EXPECT_EQ(r.layers[i].abits, 8);  // every conv/linear input is quantized at --acts-fixed
  }
  EXPECT_EQ(r.layers[0].input_point, "input.0");
  EXPECT_EQ(r.layers[9].input_point, "pool:out");  // through the flatten
  const Measures m = by_hand(r.layers);
  EXPECT_LE(m.avg_wbits, 3.0);
  const SearchRow& s = row(r, "search", "budget avg-wbits=3");
  EXPECT_NEAR(s.avg_wbits, m.avg_wbits, 1e-12);
  EXPECT_NEAR(s.size_bytes, m.size_bytes, 1e-9);
  EXPECT_NEAR(s.bops, m.bops, 1e-12);
  // the uniform rows, by hand: W4A8 has 4 bits a weight, half of W8A8's bit-operations
  const SearchRow& u4 = row(r, "uniform", "W4A8");
  EXPECT_DOUBLE_EQ(u4.avg_wbits, 4.0);
  EXPECT_DOUBLE_EQ(u4.bops, 0.5);
  // the searched config at a uniform config's budget never costs more than it
  for (const char* w : {"W2A8", "W4A8", "W8A8"})
    EXPECT_LE(row(r, "search", std::string("budget of ") + w).avg_wbits, row(r, "uniform", w).avg_wbits + 1e-12);
  EXPECT_TRUE(r.exact);

  // the other kinds, on the sensitivities measured above (same options: resumed)
  o.resume = true;
  o.budget = "size=28KiB";
  SearchResult z = run_search(o);
  EXPECT_EQ(z.sensitivity_runs, 0);  // measured once
  EXPECT_LE(by_hand(z.layers).size_bytes, 28.0 * 1024);
  EXPECT_GT(by_hand(z.layers).size_bytes, 20.0 * 1024);  // it spends what it may
  o.budget = "bops=0.4";
  SearchResult b = run_search(o);
  EXPECT_LE(by_hand(b.layers).bops, 0.4);
  EXPECT_NEAR(row(b, "search", "budget bops=0.4").bops, by_hand(b.layers).bops, 1e-12);
}

TEST(Search, TheConfigReproducesTheReportedAccuracyAndResumeRecomputesNothing) {
  SearchOptions o = small("reproduce");
  o.budget = "avg-wbits=3.5";
  const SearchResult r = run_search(o);
  const SearchRow& s = row(r, "search", "budget avg-wbits=3.5");
  // a plain config: one rule per point, that quantize takes unchanged
  const Config c = parse_config_file(r.config_path);
  int named = 0;
  for (const auto& rule : c.rules) named += rule.match.size() == 1 && rule.match[0].find('*') == std::string::npos;
  EXPECT_GE(named, 10);
  PrepareOptions po;
  po.fold_bn = true;
  auto calib = open_data(o.calib_data);
  auto test = open_data(o.eval_data);
  QuantizeOptions qo;
  qo.calib_batches = o.calib_batches;
  qo.batch_size = o.batch_size;
  qo.progress = false;
  QuantizeResult q = quantize(prepare_model(o.model, po).graph, c, calib.get(), qo);
  for (const auto& p : q.points)
    for (const auto& l : r.layers)
      if (p.point.name == l.point) EXPECT_EQ(p.assignment.spec.bits, l.wbits) << l.point;
  EvalOptions eo;
  eo.progress = false;
  EXPECT_DOUBLE_EQ(evaluate(q.model.module, *test, eo).top1, s.top1);

  // a second run with --resume measures and evaluates nothing again
  EXPECT_THROW(run_search(o), Error);  // without --resume the directory is not overwritten
  o.resume = true;
  const SearchResult again = run_search(o);
  EXPECT_EQ(again.sensitivity_runs, 0);
  ASSERT_EQ(again.rows.size(), r.rows.size());
  for (size_t i = 0; i < r.rows.size(); ++i) {
    EXPECT_EQ(again.rows[i].top1, r.rows[i].top1);
    EXPECT_EQ(again.rows[i].seconds, r.rows[i].seconds);  // read back, not measured again
  }
  // other options on the same directory are refused rather than mixed
  o.weights = {3, 8};
  EXPECT_THROW(run_search(o), Error);
}

TEST(Search, ActivationWidthsUnderABitOperationBudget) {
  SearchOptions o = small("acts");
  o.weights = {4, 8};
  o.acts = {4, 8};
  o.budget = "bops=0.3";
  const SearchResult r = run_search(o);
  for (const auto& l : r.layers) EXPECT_TRUE(l.abits == 4 || l.abits == 8) << l.point;
  EXPECT_LE(by_hand(r.layers).bops, 0.3);
  // both layers fed by one activation see the same width
  EXPECT_EQ(r.layers[3].input_point, r.layers[4].input_point);
  EXPECT_EQ(r.layers[3].abits, r.layers[4].abits);
  EXPECT_NEAR(row(r, "uniform", "W4A4").bops, 0.25, 1e-12);
}

TEST(Search, HessianMetricRanksWeights) {
  SearchOptions o = small("hessian");
  o.metric = "hessian";
  o.hessian_iterations = 2;
  o.budget = "avg-wbits=3";
  const SearchResult r = run_search(o);
  EXPECT_LE(by_hand(r.layers).avg_wbits, 3.0);
  double total = 0;
  for (const auto& l : r.layers) total += std::abs(l.loss);
  EXPECT_GT(total, 0);  // the layers below 8 bits have a measured, nonzero sensitivity
  o.acts = {4, 8};
  o.out_dir += "_acts";
  EXPECT_THROW(run_search(o), Error);
}

TEST(Search, BadBudgetsAreOneClearError) {
  SearchOptions o = small("errors");
  auto message = [&](const std::string& budget) {
    o.budget = budget;
    std::system(("rm -rf '" + o.out_dir + "'").c_str());
    try {
      run_search(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("avg-wbits=1.5").find("below the least the candidates allow (avg-wbits=2"), std::string::npos);
  EXPECT_NE(message("size=1KiB").find("below the least"), std::string::npos);
  EXPECT_NE(message("watts=3").find("unknown budget kind 'watts'"), std::string::npos);
  EXPECT_NE(message("size=3GB").find("unknown size unit 'GB'"), std::string::npos);
  EXPECT_NE(message("avg-wbits").find("KIND=VALUE"), std::string::npos);
  EXPECT_NE(message("bops=-1").find("must be positive"), std::string::npos);
  EXPECT_DOUBLE_EQ(parse_budget("size=40KiB").value, 40960);
  EXPECT_DOUBLE_EQ(parse_budget("size=2MB").value, 2e6);
}

}  // namespace
}  // namespace anybit
