// The exact multiple-choice knapsack against brute force.
#include "anybit/search/knapsack.h"

#include <gtest/gtest.h>

#include <random>

namespace anybit::search {
namespace {

using Groups = std::vector<std::vector<Option>>;

// every combination: the least loss within the budget (or +inf)
double brute_force(const Groups& g, int64_t budget, int64_t* cost_out = nullptr) {
  std::vector<int> idx(g.size(), 0);
  double best = std::numeric_limits<double>::infinity();
  for (;;) {
    int64_t c = 0;
    double l = 0;
    for (size_t k = 0; k < g.size(); ++k) c += g[k][idx[k]].cost, l += g[k][idx[k]].loss;
    if (c <= budget && l < best) {
      best = l;
      if (cost_out) *cost_out = c;
    }
    size_t k = 0;
    while (k < g.size() && ++idx[k] == static_cast<int>(g[k].size())) idx[k++] = 0;
    if (k == g.size()) break;
  }
  return best;
}

Groups random_groups(std::mt19937& rng, int n, int k) {
  std::uniform_int_distribution<int64_t> cost(0, 500);
  std::uniform_real_distribution<double> loss(0, 10);
  Groups g(n);
  for (auto& opts : g)
    for (int j = 0; j < k; ++j) opts.push_back({cost(rng), loss(rng)});
  return g;
}

TEST(Knapsack, EqualsBruteForceAtEveryBudget) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const Groups g = random_groups(rng, 1 + trial % 6, 1 + trial % 4);
    const Front f = pareto_front(g);
    ASSERT_TRUE(f.exact);
    for (size_t i = 1; i < f.solutions.size(); ++i) {
      EXPECT_LT(f.solutions[i - 1].cost, f.solutions[i].cost);
      EXPECT_GT(f.solutions[i - 1].loss, f.solutions[i].loss);
    }
    for (int64_t budget = -1; budget <= 3000; budget += 37) {
      const double want = brute_force(g, budget);
      const Solution* s = best_within(f, budget);
      if (std::isinf(want)) {
        EXPECT_EQ(s, nullptr) << "budget " << budget;
        continue;
      }
      ASSERT_NE(s, nullptr) << "budget " << budget;
      EXPECT_NEAR(s->loss, want, 1e-9) << "trial " << trial << " budget " << budget;
      EXPECT_LE(s->cost, budget);
      // the choice adds up to what the solution says
      int64_t c = 0;
      double l = 0;
      for (size_t k = 0; k < g.size(); ++k) c += g[k][s->choice[k]].cost, l += g[k][s->choice[k]].loss;
      EXPECT_EQ(c, s->cost);
      EXPECT_NEAR(l, s->loss, 1e-9);
    }
  }
}

TEST(Knapsack, MaxCostDropsWhatDoesNotFit) {
  const Groups g = {{{1, 5.0}, {4, 1.0}}, {{2, 3.0}, {8, 0.5}}};
  const Front f = pareto_front(g, 6);
  for (const auto& s : f.solutions) EXPECT_LE(s.cost, 6);
  ASSERT_NE(best_within(f, 6), nullptr);
  EXPECT_EQ(best_within(f, 6)->choice, (std::vector<int>{1, 0}));  // 4 + 2, loss 4
  EXPECT_EQ(min_cost(g), 3);
  EXPECT_EQ(best_within(f, 2), nullptr);
}

TEST(Knapsack, RoundedFrontStillRespectsTheBudget) {
  std::mt19937 rng(3);
  const Groups g = random_groups(rng, 8, 4);
  const Front f = pareto_front(g, std::numeric_limits<int64_t>::max(), 16);
  EXPECT_FALSE(f.exact);
  EXPECT_GT(f.quantum, 1);
  for (int64_t budget = 0; budget <= 4000; budget += 101) {
    const Solution* s = best_within(f, budget);
    if (!s) continue;
    EXPECT_LE(s->cost, budget);
    EXPECT_GE(s->loss, brute_force(g, budget) - 1e-9);  // never better than the optimum
  }
}

TEST(Knapsack, EmptyGroupIsAnError) {
  EXPECT_THROW(pareto_front({{{1, 1.0}}, {}}), std::invalid_argument);
}

}  // namespace
}  // namespace anybit::search
