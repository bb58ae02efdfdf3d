// The sweep resumes after a kill without recomputing finished runs, and writes its reports.
#include "anybit/study/sweep.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "anybit/graph/rules.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

TEST(Sweep, ResumesAfterAKillWithoutRecomputingFinishedRuns) {
  const std::string dir = ::testing::TempDir() + "/anybit_sweep_resume";
  std::system(("rm -rf '" + dir + "'").c_str());
  SweepOptions o;
  o.models = {std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"};
  o.pairs = {{8, 8}, {4, 4}, {3, 3}};
  o.methods = {"minmax"};
  o.calib_data = "fmnist::train:limit=256";
  o.eval_data = "fmnist::test:limit=300";
  o.calib_batches = 2;
  o.out_dir = dir;
  o.progress = false;
  std::vector<SweepRow> full = run_sweep(o);
  ASSERT_EQ(full.size(), 4u);  // float + 3 pairs
  const std::vector<std::string> before = lines_of(dir + "/results.jsonl");
  ASSERT_EQ(before.size(), 4u);
  // simulate a kill during the third quantized run: two runs written, a line cut short
  {
    std::ofstream f(dir + "/results.jsonl", std::ios::trunc);
    f << before[0] << "\n" << before[1] << "\n" << before[2].substr(0, before[2].size() / 2);
  }
  EXPECT_THROW(run_sweep(o), Error);  // without --resume nothing is overwritten
  o.resume = true;
  int computed = 0;
  std::vector<SweepRow> resumed = run_sweep(o, [&](const SweepRow&) { ++computed; });
  const std::vector<std::string> after = lines_of(dir + "/results.jsonl");
  // the finished lines are untouched, the cut one is redone, nothing is duplicated
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[1]);
  int complete = 0;
  for (const auto& l : after) complete += !l.empty() && l.back() == '}';
  EXPECT_EQ(complete, 4);
  EXPECT_EQ(resumed.size(), 4u);
  for (const auto& r : resumed)
    for (const auto& f : full)
      if (r.method == f.method && r.wbits == f.wbits) EXPECT_NEAR(r.top1, f.top1, 1e-9) << r.wbits;
  for (const char* f : {"/results.csv", "/results.json", "/accuracy.svg"})
    EXPECT_FALSE(lines_of(dir + f).empty()) << f;
  EXPECT_NE(lines_of(dir + "/accuracy.svg")[0].find("<svg"), std::string::npos);
  // each point's config, as quantize -c takes it
  std::ifstream cf(dir + "/configs/minmax_W4A4.yaml");
  const std::string text((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "# anybit sweep: method minmax, W4A4\n" + sweep_config("minmax", 4, 4, false));
  EXPECT_EQ(parse_config_string(text, "saved").rules.size(), parse_config_string(sweep_config("minmax", 4, 4, false), "s").rules.size());
}

// --formats: one row per (method, format), the format in the CSV and the plot's axis; a plain
// intN is the bit sweep's config
TEST(Sweep, FormatsAreAnAxisOfTheirOwn) {
  const std::string dir = ::testing::TempDir() + "/anybit_sweep_formats";
  std::system(("rm -rf '" + dir + "'").c_str());
  SweepOptions o;
  o.models = {std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"};
  o.formats = {"int8", "fp8:e4m3", "mxfp4", "nvfp4", "lut4"};
  o.methods = {"mse"};
  o.calib_data = "fmnist::train:limit=256";
  o.eval_data = "fmnist::test:limit=300";
  o.calib_batches = 2;
  o.out_dir = dir;
  o.progress = false;
  const std::vector<SweepRow> rows = run_sweep(o);
  ASSERT_EQ(rows.size(), 6u);  // float + 5 formats
  EXPECT_EQ(rows[1].format, "int8");
  EXPECT_EQ(rows[2].format, "fp8:e4m3");
  EXPECT_EQ(rows[3].wbits, 4);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_GT(rows[i].top1, 30.0) << rows[i].format;
  const std::vector<std::string> csv = lines_of(dir + "/results.csv");
  ASSERT_EQ(csv.size(), 7u);
  EXPECT_EQ(csv[0].rfind("model,method,format,", 0), 0u) << csv[0];
  EXPECT_NE(csv[3].find(",mse,fp8:e4m3,8,8,"), std::string::npos) << csv[3];
  std::string svg;
  for (const auto& l : lines_of(dir + "/accuracy.svg")) svg += l;
  EXPECT_NE(svg.find(">mxfp4</text>"), std::string::npos);
  EXPECT_EQ(sweep_format_config("mse", "int4", false), sweep_config("mse", 4, 4, false));
  EXPECT_NE(sweep_format_config("mse", "fp4:e2m1", false).find("spec: 'fp4:e2m1:per_channel'"), std::string::npos);
  EXPECT_NE(sweep_format_config("mse", "nvfp4", false).find("calibrator: minmax"), std::string::npos);
  EXPECT_THROW(sweep_format_config("adaround", "fp4:e2m1", false), Error);
  try {
    sweep_format_config("mse", "fp8:e5m3", false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--formats: invalid quantizer spec 'fp8:e5m3'"), std::string::npos) << e.what();
  }
  o.pairs = {{8, 8}};
  EXPECT_THROW(run_sweep(o), Error);  // formats or pairs, not both
}

TEST(Sweep, BadListsAndMethodsAreErrors) {
  EXPECT_EQ(parse_bits_list("8,6,4", "--weights"), (std::vector<int>{8, 6, 4}));
  EXPECT_THROW(parse_bits_list("8,x", "--weights"), Error);
  EXPECT_THROW(parse_bits_list("1", "--acts"), Error);
  EXPECT_THROW(sweep_config("adaroundd", 4, 4, false), Error);
}

}  // namespace
}  // namespace anybit
