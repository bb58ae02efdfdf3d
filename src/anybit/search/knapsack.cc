// Multiple-choice knapsack over a Pareto frontier; see knapsack.h.
#include "anybit/search/knapsack.h"

#include <algorithm>
#include <stdexcept>

namespace anybit::search {

namespace {

struct State {
  int64_t cost;
  double loss;
  int32_t parent;  // index into the previous group's frontier
  int32_t option;
};

// One pass with costs rounded up to multiples of `quantum`; false when the frontier grows
// beyond max_states.
bool solve(const std::vector<std::vector<Option>>& groups, int64_t max_cost, size_t max_states, int64_t quantum,
           Front* out) {
  auto rounded = [&](int64_t c) { return quantum == 1 ? c : (c + quantum - 1) / quantum * quantum; };
  std::vector<std::vector<State>> stages;
  stages.reserve(groups.size());
  std::vector<State> prev = {{0, 0.0, -1, -1}};
  std::vector<State> next;
  for (const auto& g : groups) {
    next.clear();
    for (size_t i = 0; i < prev.size(); ++i)
      for (size_t j = 0; j < g.size(); ++j) {
        const int64_t c = rounded(g[j].cost);
        if (c > max_cost - prev[i].cost) continue;  // also keeps the sum from overflowing
        next.push_back({prev[i].cost + c, prev[i].loss + g[j].loss, static_cast<int32_t>(i), static_cast<int32_t>(j)});
      }
    std::sort(next.begin(), next.end(), [](const State& a, const State& b) {
      return a.cost != b.cost ? a.cost < b.cost : a.loss < b.loss;
    });
    std::vector<State> kept;
    for (const State& s : next)
      if (kept.empty() || s.loss < kept.back().loss) kept.push_back(s);
    if (kept.size() > max_states) return false;
    stages.push_back(kept);
    prev = std::move(kept);
  }
  out->solutions.clear();
  for (size_t k = 0; k < prev.size(); ++k) {
    Solution sol;
    sol.choice.assign(groups.size(), -1);
    int32_t idx = static_cast<int32_t>(k);
    for (size_t g = groups.size(); g-- > 0;) {
      const State& s = stages[g][idx];
      sol.choice[g] = s.option;
      idx = s.parent;
    }
    for (size_t g = 0; g < groups.size(); ++g) {
      sol.cost += groups[g][sol.choice[g]].cost;  // the true cost, not the rounded one
      sol.loss += groups[g][sol.choice[g]].loss;
    }
    out->solutions.push_back(std::move(sol));
  }
  out->exact = quantum == 1;
  out->quantum = quantum;
  return true;
}

}  // namespace

Front pareto_front(const std::vector<std::vector<Option>>& groups, int64_t max_cost, size_t max_states) {
  int64_t total = 0;
  for (const auto& g : groups) {
    if (g.empty()) throw std::invalid_argument("knapsack: a group without options");
    int64_t most = 0;
    for (const auto& o : g) {
      if (o.cost < 0) throw std::invalid_argument("knapsack: a negative cost");
      most = std::max(most, o.cost);
    }
    total = most > std::numeric_limits<int64_t>::max() - total ? std::numeric_limits<int64_t>::max() : total + most;
  }
  Front front;
  const int64_t span = std::min(total, max_cost);
  for (int64_t quantum = 1;; quantum *= 4) {
    // a frontier never has more states than distinct (rounded) costs: once the grid is
    // coarser than max_states cells the pass cannot fail
    if (solve(groups, max_cost, max_states, quantum, &front)) return front;
    if (span / quantum < static_cast<int64_t>(max_states))
      throw std::logic_error("knapsack: the frontier outgrew the states its costs allow");
  }
}

int64_t min_cost(const std::vector<std::vector<Option>>& groups) {
  int64_t c = 0;
  for (const auto& g : groups) {
    int64_t least = std::numeric_limits<int64_t>::max();
    for (const auto& o : g) least = std::min(least, o.cost);
    c += least;
  }
  return c;
}

const Solution* best_within(const Front& front, int64_t budget) {
  // exact fronts ascend in cost and descend in loss; a rounded one ascends in rounded cost
  // only, so every solution is looked at
  const Solution* best = nullptr;
  for (const auto& s : front.solutions)
    if (s.cost <= budget && (!best || s.loss < best->loss)) best = &s;
  return best;
}

}  // namespace anybit::search
