// One-dimensional k-means (Lloyd's algorithm) for codebook quantizers (`lutN`): the levels
// that minimize the squared error of rounding each value to its nearest level. Plain C++17.
#pragma once

#include <cstdint>
#include <vector>

namespace anybit {
namespace calib {

class Histogram;

// `k` sorted centres of the values x[0, n) (weights w, or 1 each when w is null): started
// at the weighted quantiles (i + 0.5) / k, then `iterations` rounds of assigning each value
// to its nearest centre (ties to the upper) and moving each centre to its cluster's
// weighted mean; a centre whose cluster is empty stays. Fewer distinct values than k give
// repeated centres. Throws std::invalid_argument for k < 1, n < 1 or a non-finite value.
std::vector<double> kmeans_1d(const float* x, const double* w, int64_t n, int k, int iterations = 30);
// The same on a histogram's bin centres weighted by their counts.
std::vector<double> kmeans_1d(const Histogram& h, int k, int iterations = 30);

}  // namespace calib
}  // namespace anybit
