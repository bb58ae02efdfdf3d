// What engine.cc (the engine and its run over a batch), engine_ops.cc (one op of a chunk)
// and engine_prepare.cc (a layer made ready to run) share. Internal to intsim/.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "anybit/intsim/engine.h"
#include "anybit/intsim/kernels.h"

namespace anybit {
namespace intsim {
namespace detail {

// How a conv2d or linear layer computes its accumulators (engine.h).
enum class LayerKernel { kFast, kStepwise, kMac, kReference };

// A conv2d or linear layer ready to run.
struct PreparedLayer {
  LayerKernel kernel = LayerKernel::kMac;
  // A sum-perturbing MAC on the fast or stepwise kernel: the exact sums (no bias) are
  // computed there and handed to SumPerturbingMac::perturb.
  bool perturb = false;
  int mac_layer = -1;               // index into Engine::Impl::mac_layers
  std::vector<uint32_t> w_sq;       // (w - z_w)^2, [O][K] (conv2d) or [K][O] (linear): rel noise
  std::vector<double> w_sq_f64;     // conv2d: the same as doubles where their sums stay exact
  bool int16_operands = false;      // x - z_x and w - z_w both fit int16
  std::vector<int32_t> w_offset;    // w - z_w, [O][K]
  std::vector<int16_t> w_offset16;  // the same in int16: stepwise with int16 operands
  PackedWeights<int16_t> packed16;  // fast, int16 operands
  PackedWeights<int32_t> packed32;  // fast, int32 operands
  int64_t out_channels = 0, patch = 0;
};

struct PreparedOp {
  std::vector<int> inputs;  // tensor ids
  int output = -1;
  std::vector<const TensorInfo*> input_info;
  const TensorInfo* output_info = nullptr;
  PreparedLayer layer;
};

int64_t numel_of(const std::vector<int64_t>& shape);

// Largest |q - z| over a tensor's integer range.
int64_t max_abs_offset(const QuantParams& q);

Conv2dGeometry conv_geometry(const Op& op, const std::vector<int64_t>& in_shape_nchw);

// Prepares a conv2d or linear layer; `info` gets its full scale. A MAC model that perturbs
// weights changes w - z_w here, before the bound and the packing see them.
PreparedLayer prepare_layer(const Op& op, const TensorInfo& in, const EngineOptions& options,
                            const MacModel& mac, MacLayer& info);

// y = requantize_dyadic(acc, M[channel], ...) over [batch][channels][inner].
void requantize_channels(const int32_t* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y);

void requantize_channels(const int64_t* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y);

Pool2dGeometry pool_geometry(const Op& op, const std::vector<int64_t>& in_nchw,
                             const std::vector<int64_t>& out_chw);

// The accumulators of a conv2d or linear layer on its fast or stepwise kernel (bias may be
// null); the stepwise kernels add their overflow events to *overflows.
void exact_sums(const PreparedLayer& L, bool conv, const Conv2dGeometry& g, int64_t batch, int64_t in_features,
                const int32_t* xd, int32_t zx, const int32_t* bias, int32_t* acc, const AccumulatorSpec& spec,
                int64_t* overflows, KernelScratch& scratch);

// What one thread needs to run the ops on a chunk of the batch.
struct Worker {
  std::vector<Tensor> env;                  // the chunk's tensors, by id
  std::vector<std::vector<int32_t>> spare;  // storage of tensors no longer needed, for reuse
  KernelScratch scratch;
  std::vector<int32_t> acc32;
  std::vector<int64_t> acc64;
  std::vector<double> squares;
  // an additive MAC model's noise (run_perturbed): a block as drawn, the layer's on the grid
  std::vector<int32_t> noise_block, noise32;
  std::vector<int64_t> changed;  // a sparse MAC model's elements that may change
  std::vector<LayerStats> stats;  // by op: counts since they were last added to the engine's
  // Engine::calibrate: |exact| of sampled elements, by MAC layer
  std::vector<std::vector<int32_t>> samples;

  // Gives t the shape [batch, ...shape] and storage for it: its own, or the most recently
  // released (still in cache). Nothing is allocated once the buffers have grown.
  void shape_tensor(Tensor& t, int64_t batch, const std::vector<int64_t>& shape) {
    if (t.data.capacity() == 0 && !spare.empty()) {
      t.data = std::move(spare.back());
      spare.pop_back();
    }
    t.shape = shape;
    t.shape.insert(t.shape.begin(), batch);
    t.data.resize(static_cast<size_t>(t.numel()));
  }

  void release(Tensor& t) {
    if (t.data.capacity() > 0) spare.push_back(std::move(t.data));
    t = Tensor{};
  }
};

// A chunk's largest activation is kept to about this size (the order of an L2 cache), and
// a chunk to at most kMaxChunkImages images.
constexpr int64_t kChunkBytes = 256 * 1024;
constexpr int64_t kMaxChunkImages = 16;
// Elements a sum-perturbing MAC model gets at once (whole channels of one image): its
// results, their fit and the requantization stay in the L1 cache.
constexpr int64_t kPerturbBlock = 1024;
// A sparse MAC model's elements are redone one by one while that costs at most this many
// multiply-adds per element of the image (else the image takes the steps).
constexpr int64_t kSparseMacs = 8;

}  // namespace detail

using namespace detail;  // NOLINT: the engine files' shared types

struct Engine::Impl {
  Model model;
  EngineOptions options;
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, int> ids;
  std::vector<std::string> names;       // by id
  std::vector<const TensorInfo*> info;  // by id
  std::vector<int> last_use;            // by id: index of the last op reading it (-1: none)
  std::vector<bool> is_output;          // by id
  std::vector<PreparedOp> ops;
  std::vector<LayerStats> stats;
  std::shared_ptr<MacModel> mac;
  const SumPerturbingMac* perturber = nullptr;  // mac, when it is one
  std::vector<MacLayer> mac_layers;             // the conv2d/linear layers, in order
  bool mac_ready = false;                       // prepare() has accepted mac_layers
  int64_t next_image = 0;                       // MacContext::image of the next run's first image
  bool calibrating = false;                     // Engine::calibrate's run: exact, sampled
  int64_t sample_stride = 1;
  // True unless a layer calls the MAC model: the batch may then be cut into chunks that
  // run independently, in any order, on any thread.
  bool chunked = true;
  int64_t chunk_images = 1;
  int threads = 1;
  std::vector<Worker> workers;  // kept between runs, with their buffers

  int id_of(const std::string& name) {
    auto it = ids.find(name);
    if (it != ids.end()) return it->second;
    const int id = static_cast<int>(names.size());
    ids[name] = id;
    names.push_back(name);
    return id;
  }

  void run_chunk(Worker& w, const std::vector<Tensor>& inputs, int64_t begin, int64_t end,
                 bool keep_all, std::vector<Tensor>& results);
  void run_op(size_t k, Worker& w, int64_t batch, int64_t first_image);
  void run_perturbed(const Op& op, const PreparedOp& p, Worker& w, LayerStats& st, int64_t batch,
                     int64_t first_image, const Tensor& x, Tensor& y);
  // Engine::calibrate's pass: the percentile of |exact| of each layer into mac_layers.
  void collect(const std::vector<Tensor>& inputs, double pct);
  std::vector<Tensor> run_batch(const std::vector<Tensor>& inputs, std::map<std::string, Tensor>* tensors);
};

}  // namespace intsim
}  // namespace anybit
