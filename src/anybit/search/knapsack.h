// The multiple-choice knapsack behind `anybit search` (docs/search.md): choose one option
// per group (one bit width per layer, or one joint choice of widths for an activation and
// the layers it feeds) so that the summed loss (sensitivity) is least while the summed cost
// (weight bits, bytes or bit-operations) stays within a budget.
//
// Solved exactly by dynamic programming over the Pareto frontier: after each group, only
// the partial solutions that no other beats in both cost and loss are kept. The frontier of
// the last group is the whole trade-off curve at once: best_within() reads the optimum for
// any budget off it. Costs are integers, so "within the budget" is exact arithmetic.
// Plain C++17 (no LibTorch).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace anybit::search {

struct Option {
  int64_t cost = 0;
  double loss = 0;
};

struct Solution {
  std::vector<int> choice;  // per group: the index of its option
  int64_t cost = 0;
  double loss = 0;
};

struct Front {
  // Pareto-optimal solutions, by cost ascending and loss strictly descending
  std::vector<Solution> solutions;
  // true when the frontier outgrew max_states and the costs were rounded up to multiples of
  // `quantum` to bound it: every solution still respects its budget (its true cost is at
  // most the rounded one), but a solution a little cheaper may exist
  bool exact = true;
  int64_t quantum = 1;
};

// The frontier of all solutions whose cost is at most max_cost. Throws std::invalid_argument
// for a group without options.
Front pareto_front(const std::vector<std::vector<Option>>& groups,
                   int64_t max_cost = std::numeric_limits<int64_t>::max(), size_t max_states = size_t{1} << 21);

// The cheapest solution possible (every group at its cheapest option): its cost.
int64_t min_cost(const std::vector<std::vector<Option>>& groups);

// The least-loss solution of the front whose cost is at most `budget`; null if none is.
const Solution* best_within(const Front& front, int64_t budget);

}  // namespace anybit::search
