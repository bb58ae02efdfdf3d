// Datasets for calibration and evaluation: float images [C, H, W] and integer labels.
// Plain C++17 (no LibTorch); the core wraps the float arrays in tensors.
//
// Data spec grammar (parts separated by ':'; paths therefore cannot contain ':'):
//
//   spec      := scheme [':' part]*
//   part      := positional | 'limit=' N | 'size=' N | 'resize=' N | 'mean=' LIST | 'std=' LIST
//   LIST      := number [',' number]*      one value for all channels, or one per channel
//
// Preprocessing: every scheme scales pixels to [0, 1] (pixel / 255; npy float32 as stored), then
// normalizes each channel c as (x - mean[c]) / std[c], the float operations of torchvision's
// ToTensor + Normalize. mean= and std= set it (a mean alone keeps std 1, a std alone mean 0);
// without them fmnist, mnist and npy are not normalized, cifar10 uses the CIFAR-10 training-set
// statistics and imagefolder ImageNet's (mean 0.485,0.456,0.406, std 0.229,0.224,0.225);
// `mean=0:std=1` turns a default off. A list whose length is neither 1 nor the channel count, a
// std <= 0 or a value that is not a finite number is an Error naming the spec.
//
//   fmnist[:DIR][:train|test]      Fashion-MNIST IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
//                                  pixel / 255, shape [1, H, W] from the header.
//                                  DIR defaults to /usr/share/datasets/fashion-mnist.
//   mnist[:DIR][:train|test]       the same format; DIR defaults to /usr/share/datasets/mnist.
//   cifar10:DIR[:train|test]       CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin,
//                                  in DIR or DIR/cifar-10-batches-bin); pixel / 255, then by default
//                                  (x - mean) / std with the CIFAR-10 statistics; shape [3, 32, 32].
//   imagefolder:DIR[:size=224][:resize=256]
//                                  one subfolder per class (sorted names -> label 0, 1, ...), images
//                                  .jpg/.jpeg/.png in any case, decoded lazily in get(); the
//                                  ImageNet evaluation transform (see image_resize.h) and by default
//                                  ImageNet's mean and std; shape [3, size, size].
//                                  resize defaults to 256 for size 224, else to size * 256 / 224.
//   npy:IMAGES.npy[:LABELS.npy]    float32 (or uint8, divided by 255) images [N, C, H, W] (any rank >= 2:
//                                  the sample shape is the rest), int64/int32 labels [N]; without a
//                                  labels file every label is -1 (calibration only). An int64 or
//                                  int32 IMAGES file holds integer inputs (token ids, [N, T]):
//                                  fed to the model as int64 (integer_samples()), never
//                                  normalized (mean= and std= are an Error).
//
// The split defaults to test. `fmnist:train` means the default DIR with the train split unless a
// directory named `train` exists. `limit=N` keeps only the first N samples (any scheme).
//
// Every failure (missing path or file, truncated or corrupt data, a bad spec) throws Error with one
// message naming the file and the problem, e.g.
//   fmnist: /x/t10k-images-idx3-ubyte.gz: truncated: header says 10000 images of 28x28, file holds 1234
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "anybit/base/error.h"

namespace anybit {
namespace data {

// A random-access dataset. get() is const and keeps no state, so it may be called from several
// threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual std::vector<int64_t> sample_shape() const = 0;  // C, H, W
  // Writes sample `index` (prod(sample_shape()) floats) to `out` and its label to `*label`;
  // throws Error for an index outside [0, size()) or an image that cannot be decoded.
  virtual void get(int64_t index, float* out, int64_t* label) const = 0;
  // True when the samples are integers (token ids): get_integers() reads them exactly (get()
  // gives them as floats, exact up to 2^24), and the core feeds them to the model as int64.
  virtual bool integer_samples() const { return false; }
  // Writes sample `index` as prod(sample_shape()) integers; throws Error unless integer_samples().
  virtual void get_integers(int64_t index, int64_t* out, int64_t* label) const;
};

struct Batch {
  std::vector<float> images;   // N * C * H * W, C order
  std::vector<int64_t> shape;  // N, C, H, W
  std::vector<int64_t> labels;  // N
};

// Samples [begin, begin + count), with count clipped at the end of the dataset; throws Error for
// begin outside [0, size()] or a negative count.
Batch batch(const Dataset& dataset, int64_t begin, int64_t count);

// Opens a dataset from a spec (grammar above).
std::unique_ptr<Dataset> open_dataset(const std::string& spec);

}  // namespace data
}  // namespace anybit
