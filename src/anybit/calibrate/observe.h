// The observation step of calibration: an `anybit::observe` node at each activation or input
// point to calibrate, the instrumented graph run on calibration batches through a separate
// GraphFunction (the module's own forward never runs before the final rewrite, so its executor
// is built from the final graph), then the nodes removed. What every point saw is kept in a
// calib::Observer on the host (a histogram that does not depend on the batching, min/max and
// their moving averages: what the range searches read). Values on a device are summarized
// there (observe_where_it_is): only the summary and the bin counts come to the host.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <vector>

#include "anybit/calib/calibrator.h"
#include "anybit/graph/graph.h"
#include "anybit/source/data_source.h"

namespace anybit {

struct Observed {
  calib::Observer observer;
  int64_t per_sample_numel = 0;  // elements of one sample's value at the point
};

struct ObserveOptions {
  int64_t samples = 0;  // the first `samples` of the data (at most its size)
  int64_t batch_size = 128;
  // where the passes run; the model comes back to the CPU after them (or on an error)
  c10::Device device = c10::kCPU;
  bool progress = true;
};

// One batch into `observer`, computed with ATen ops where x is (CPU or GPU): the same
// histogram counts, extremes and finite counts as Observer::observe on the host (sum |x| up to
// the order of the double additions). Calibration uses it for values on a device.
void observe_where_it_is(calib::Observer& observer, const at::Tensor& x);

// Observes g.points[i] for each i of `points` (activations or inputs) on `data`; g's graph is
// left as it was. Throws an Error naming the data when the model rejects its batches.
std::map<size_t, Observed> observe_points(ModelGraph& g, const std::vector<size_t>& points, const DataSource& data,
                                          const ObserveOptions& options);

}  // namespace anybit
