// The sweep resumes after a kill without recomputing finished runs, and writes its reports.
#include "anybit/core/sweep.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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
}

TEST(Sweep, BadListsAndMethodsAreErrors) {
  EXPECT_EQ(parse_bits_list("8,6,4", "--weights"), (std::vector<int>{8, 6, 4}));
  EXPECT_THROW(parse_bits_list("8,x", "--weights"), Error);
  EXPECT_THROW(parse_bits_list("1", "--acts"), Error);
  EXPECT_THROW(sweep_config("adaroundd", 4, 4, false), Error);
}

}  // namespace
}  // namespace anybit
