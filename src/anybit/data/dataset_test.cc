// The dataset readers: the real Fashion-MNIST test set, then small fixtures of every format,
// including each way a file can be missing, truncated or corrupt.
#include "anybit/data/dataset.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "anybit/data/test_fixtures.h"

namespace anybit {
namespace data {
namespace {

using fixtures::expect_error;
using fixtures::gzip_bytes;
using fixtures::idx_file;
using fixtures::make_temp_dir;
using fixtures::npy_file;
using fixtures::write_bytes;
using fixtures::write_jpeg;
using fixtures::write_png;

const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist";
constexpr uint32_t kImagesMagic = 0x803, kLabelsMagic = 0x801;

// The labels file decoded here with zlib directly, independently of the reader under test.
std::vector<uint8_t> gunzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << path;
  std::vector<uint8_t> out;
  uint8_t buf[4096];
  int got;
  while (f && (got = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + got);
  if (f) gzclose(f);
  return out;
}

// ---- Fashion-MNIST, the real files ----------------------------------------------------

TEST(FashionMnist, TheTestSetHas10000ImagesOf28x28InZeroToOneWithTheFilesLabels) {
  const auto t0 = std::chrono::steady_clock::now();
  auto d = open_dataset("fmnist:" + kFashionMnist + ":test");
  const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(open_s, 1.0);
  ASSERT_EQ(d->size(), 10000);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{1, 28, 28}));

  const Batch all = batch(*d, 0, d->size());
  EXPECT_EQ(all.shape, (std::vector<int64_t>{10000, 1, 28, 28}));
  const auto [lo, hi] = std::minmax_element(all.images.begin(), all.images.end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
  std::vector<int> per_class(10);
  for (int64_t y : all.labels) {
    ASSERT_GE(y, 0);
    ASSERT_LE(y, 9);
    ++per_class[y];
  }
  EXPECT_EQ(per_class, std::vector<int>(10, 1000));  // the test set is balanced

  const std::vector<uint8_t> labels = gunzip_file(kFashionMnist + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(labels.size(), 8u + 10000u);
  EXPECT_EQ(all.labels[0], labels[8]);
  EXPECT_EQ(all.labels[9999], labels[8 + 9999]);
  // every pixel is a multiple of 1/255
  for (size_t i = 0; i < 784; ++i) EXPECT_EQ(all.images[i], std::round(all.images[i] * 255) / 255.0f);
}

TEST(FashionMnist, TheDefaultSpecIsTheTestSetAndTrainShorthandNamesTheTrainSplit) {
  EXPECT_EQ(open_dataset("fmnist")->size(), 10000);
  EXPECT_EQ(open_dataset("fmnist:train:limit=5")->size(), 5);
  EXPECT_EQ(open_dataset("fmnist::train")->size(), 60000);
}

TEST(FashionMnist, LimitKeepsTheFirstNSamples) {
  auto full = open_dataset("fmnist");
  auto first = open_dataset("fmnist:" + kFashionMnist + ":test:limit=100");
  ASSERT_EQ(first->size(), 100);
  std::vector<float> a(784), b(784);
  int64_t ya, yb;
  full->get(99, a.data(), &ya);
  first->get(99, b.data(), &yb);
  EXPECT_EQ(a, b);
  EXPECT_EQ(ya, yb);
  expect_error([&] { first->get(100, b.data(), &yb); }, {"index 100 out of range [0, 100)"});
  EXPECT_EQ(open_dataset("fmnist:limit=20000")->size(), 10000);
}

// ---- IDX fixtures ---------------------------------------------------------------------

// Three 2x3 images with pixels 0, 1, 2, ... and labels 7, 0, 9.
std::vector<uint8_t> three_images() {
  std::vector<uint8_t> px(18);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 15);
  return idx_file(kImagesMagic, {3, 2, 3}, px);
}
std::vector<uint8_t> three_labels() { return idx_file(kLabelsMagic, {3}, {7, 0, 9}); }

TEST(Idx, PlainAndGzippedFilesReadAlikeWithTheShapeFromTheHeader) {
  const std::string plain = make_temp_dir("idx_plain"), gz = make_temp_dir("idx_gz");
  write_bytes(plain + "/t10k-images-idx3-ubyte", three_images());
  write_bytes(plain + "/t10k-labels-idx1-ubyte", three_labels());
  write_bytes(gz + "/t10k-images-idx3-ubyte.gz", gzip_bytes(three_images()));
  write_bytes(gz + "/t10k-labels-idx1-ubyte.gz", gzip_bytes(three_labels()));
  for (const std::string& dir : {plain, gz}) {
    auto d = open_dataset("mnist:" + dir);
    ASSERT_EQ(d->size(), 3);
    EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{1, 2, 3}));
    const Batch b = batch(*d, 0, 3);
    EXPECT_EQ(b.labels, (std::vector<int64_t>{7, 0, 9}));
    for (size_t i = 0; i < 18; ++i) EXPECT_EQ(b.images[i], static_cast<float>(i * 15) / 255.0f);
  }
}

// A gzip image file whose trailer agrees with its header is inflated as samples are read:
// any order of reads gives the plain file's samples, and damage past the first megabyte
// shows only when a sample there is read, as one error naming the file.
TEST(Idx, GzipImagesAreInflatedOnDemandAndDamageShowsWhereItIsRead) {
  const int64_t n = 3000;
  std::vector<uint8_t> px(n * 28 * 28);
  uint32_t state = 1;
  for (size_t i = 0; i < px.size(); ++i) {  // compressible, not constant: a small LCG in 16 levels
    state = state * 1664525u + 1013904223u;
    px[i] = static_cast<uint8_t>((state >> 28) * 17);
  }
  std::vector<uint8_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
  const std::string plain = make_temp_dir("idx_lazy_plain"), gz = make_temp_dir("idx_lazy_gz"),
                    bad = make_temp_dir("idx_lazy_bad");
  const std::vector<uint8_t> images = idx_file(kImagesMagic, {static_cast<uint32_t>(n), 28, 28}, px);
  write_bytes(plain + "/t10k-images-idx3-ubyte", images);
  write_bytes(gz + "/t10k-images-idx3-ubyte.gz", gzip_bytes(images));
  std::vector<uint8_t> damaged = gzip_bytes(images);
  for (size_t i = damaged.size() - 400; i < damaged.size() - 300; ++i) damaged[i] ^= 0x5a;  // trailer intact
  write_bytes(bad + "/t10k-images-idx3-ubyte.gz", damaged);
  for (const std::string& dir : {plain, gz, bad})
    write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_file(kLabelsMagic, {static_cast<uint32_t>(n)}, labels));
  auto p = open_dataset("mnist:" + plain), g = open_dataset("mnist:" + gz);
  ASSERT_EQ(g->size(), n);
  for (int64_t i : {n - 1, int64_t{0}, n / 2, int64_t{1}}) {
    const Batch a = batch(*p, i, 1), b = batch(*g, i, 1);
    EXPECT_EQ(a.images, b.images) << i;
    EXPECT_EQ(a.labels, b.labels) << i;
  }
  auto d = open_dataset("mnist:" + bad);  // opens: the header and trailer agree
  EXPECT_EQ(batch(*d, 0, 10).images, batch(*p, 0, 10).images);
  expect_error([&] { batch(*d, n - 1, 1); }, {"mnist: " + bad + "/t10k-images-idx3-ubyte.gz", "gzip data"});
}

TEST(Idx, TruncatedGzipIsAnErrorNamingTheFile) {
  const std::string dir = make_temp_dir("idx_cut_gz");
  std::vector<uint8_t> big(16 + 50 * 28 * 28);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7919 >> 3);
  big = idx_file(kImagesMagic, {50, 28, 28}, std::vector<uint8_t>(big.begin() + 16, big.end()));
  std::vector<uint8_t> gz = gzip_bytes(big);
  gz.resize(gz.size() / 2);
  write_bytes(dir + "/t10k-images-idx3-ubyte.gz", gz);
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_file(kLabelsMagic, {50}, std::vector<uint8_t>(50)));
  expect_error([&] { open_dataset("fmnist:" + dir); }, {"fmnist: " + dir + "/t10k-images-idx3-ubyte.gz", "truncated"});
}

TEST(Idx, CorruptGzipDataIsAnErrorNamingTheFile) {
  const std::string dir = make_temp_dir("idx_bad_gz");
  std::vector<uint8_t> gz = gzip_bytes(three_images());
  gz[gz.size() - 6] ^= 0xff;  // the CRC
  write_bytes(dir + "/t10k-images-idx3-ubyte.gz", gz);
  write_bytes(dir + "/t10k-labels-idx1-ubyte", three_labels());
  expect_error([&] { open_dataset("fmnist:" + dir); }, {dir + "/t10k-images-idx3-ubyte.gz", "corrupt gzip"});
}

TEST(Idx, WrongMagicIsAnErrorNamingTheFile) {
  const std::string dir = make_temp_dir("idx_magic");
  write_bytes(dir + "/t10k-images-idx3-ubyte", three_labels());  // a labels file in the images' place
  write_bytes(dir + "/t10k-labels-idx1-ubyte", three_labels());
  expect_error([&] { open_dataset("fmnist:" + dir); },
               {dir + "/t10k-images-idx3-ubyte", "bad magic 0x00000801, expected 0x00000803"});
}

TEST(Idx, HeaderCountBeyondTheDataIsTruncation) {
  const std::string dir = make_temp_dir("idx_short");
  std::vector<uint8_t> img = three_images();
  img[7] = 5;  // header: 5 images, data: 3
  write_bytes(dir + "/t10k-images-idx3-ubyte", img);
  write_bytes(dir + "/t10k-labels-idx1-ubyte", three_labels());
  expect_error([&] { open_dataset("fmnist:" + dir); },
               {"fmnist: " + dir + "/t10k-images-idx3-ubyte: truncated: header says 5 images of 2x3, file holds 3"});
  write_bytes(dir + "/t10k-images-idx3-ubyte", std::vector<uint8_t>(img.begin(), img.begin() + 10));
  expect_error([&] { open_dataset("fmnist:" + dir); }, {dir + "/t10k-images-idx3-ubyte", "truncated"});
}

TEST(Idx, LabelCountDifferentFromImageCountIsAnError) {
  const std::string dir = make_temp_dir("idx_count");
  write_bytes(dir + "/t10k-images-idx3-ubyte", three_images());
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_file(kLabelsMagic, {2}, {1, 2}));
  expect_error([&] { open_dataset("fmnist:" + dir); }, {dir + "/t10k-labels-idx1-ubyte", "2 labels, but", "3 images"});
}

TEST(Idx, LabelOutsideZeroToNineIsAnError) {
  const std::string dir = make_temp_dir("idx_label");
  write_bytes(dir + "/t10k-images-idx3-ubyte", three_images());
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_file(kLabelsMagic, {3}, {1, 12, 2}));
  expect_error([&] { open_dataset("fmnist:" + dir); }, {dir + "/t10k-labels-idx1-ubyte", "label 12 of sample 1"});
}

TEST(Idx, MissingFileOrDirectoryIsAnErrorNamingIt) {
  const std::string dir = make_temp_dir("idx_missing");
  write_bytes(dir + "/t10k-images-idx3-ubyte", three_images());
  expect_error([&] { open_dataset("fmnist:" + dir); }, {dir + "/t10k-labels-idx1-ubyte.gz: no such file"});
  expect_error([&] { open_dataset("fmnist:" + dir + ":train"); }, {dir + "/train-images-idx3-ubyte.gz: no such file"});
  expect_error([] { open_dataset("fmnist:/nonexistent/fmnist"); }, {"fmnist: /nonexistent/fmnist: no such directory"});
}

// ---- CIFAR-10 fixtures ------------------------------------------------------------------

// A record whose channels are the constants r, g, b.
std::vector<uint8_t> cifar_record(uint8_t label, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> rec(1, label);
  for (uint8_t v : {r, g, b}) rec.insert(rec.end(), 1024, v);
  return rec;
}

TEST(Cifar10, RecordsAreNormalizedWithTheCifarMeanAndStd) {
  const std::string dir = make_temp_dir("cifar");
  std::vector<uint8_t> file = cifar_record(3, 255, 0, 128);
  const std::vector<uint8_t> second = cifar_record(8, 10, 20, 30);
  file.insert(file.end(), second.begin(), second.end());
  write_bytes(dir + "/test_batch.bin", file);
  auto d = open_dataset("cifar10:" + dir);
  ASSERT_EQ(d->size(), 2);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{3, 32, 32}));
  const Batch b = batch(*d, 0, 2);
  EXPECT_EQ(b.labels, (std::vector<int64_t>{3, 8}));
  EXPECT_FLOAT_EQ(b.images[0], (1.0f - 0.4914f) / 0.2470f);
  EXPECT_FLOAT_EQ(b.images[1024 + 5], (0.0f - 0.4822f) / 0.2435f);
  EXPECT_FLOAT_EQ(b.images[2048 + 1023], (128 / 255.0f - 0.4465f) / 0.2616f);
  EXPECT_FLOAT_EQ(b.images[3072 + 2048], (30 / 255.0f - 0.4465f) / 0.2616f);
}

TEST(Cifar10, MeanAndStdReplaceTheDefaultPerChannelOrForAll) {
  const std::string dir = make_temp_dir("cifar_norm");
  write_bytes(dir + "/test_batch.bin", cifar_record(3, 255, 0, 128));
  std::vector<float> x(3072);
  int64_t y;
  open_dataset("cifar10:" + dir + ":mean=0:std=1")->get(0, x.data(), &y);  // the default off: ToTensor only
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1024], 0.0f);
  EXPECT_EQ(x[2048], 128 / 255.0f);
  open_dataset("cifar10:" + dir + ":mean=0.5,0.25,0:std=0.5,2,4")->get(0, x.data(), &y);
  EXPECT_EQ(x[5], (1.0f - 0.5f) / 0.5f);
  EXPECT_EQ(x[1024 + 5], (0.0f - 0.25f) / 2.0f);
  EXPECT_EQ(x[2048 + 5], (128 / 255.0f - 0.0f) / 4.0f);
  open_dataset("cifar10:" + dir + ":std=2")->get(0, x.data(), &y);  // a std alone keeps mean 0
  EXPECT_EQ(x[2048], 128 / 255.0f / 2.0f);
  expect_error([&] { open_dataset("cifar10:" + dir + ":mean=0.1,0.2"); },
               {"data spec 'cifar10:" + dir + ":mean=0.1,0.2'", "mean has 2 values", "the samples have 3"});
}

TEST(Fmnist, MeanAndStdNormalizeAsTorchvisionDoes) {
  auto raw = open_dataset("fmnist:limit=4");
  auto norm = open_dataset("fmnist::test:mean=0.2860:std=0.3530:limit=4");
  ASSERT_EQ(norm->size(), 4);
  const Batch a = batch(*raw, 0, 4), b = batch(*norm, 0, 4);
  ASSERT_EQ(a.images.size(), b.images.size());
  EXPECT_EQ(a.labels, b.labels);
  bool negative = false;
  for (size_t i = 0; i < a.images.size(); ++i) {
    ASSERT_EQ(b.images[i], (a.images[i] - 0.2860f) / 0.3530f) << i;  // ToTensor, then Normalize, in float32
    negative = negative || b.images[i] < 0;
  }
  EXPECT_TRUE(negative);
}

TEST(Spec, BadMeanAndStdAreOneErrorNamingTheSpec) {
  for (const char* bad : {"mean=abc", "mean=", "mean=0.1,,0.2", "mean=nan", "mean=inf", "std=1e999",
                                 "mean=0.5x", "mean= 0.5"})
    expect_error([&] { open_dataset(std::string("fmnist:") + bad); },
                 {std::string("data spec 'fmnist:") + bad + "'", "comma-separated list of numbers"});
  expect_error([] { open_dataset("fmnist:std=0"); }, {"data spec 'fmnist:std=0'", "std must be positive, got 0"});
  expect_error([] { open_dataset("fmnist:mean=0:std=1,-1"); }, {"std has 2 values", "the samples have 1"});
  expect_error([] { open_dataset("fmnist:std=-0.5"); }, {"std must be positive, got -0.5"});
}

TEST(Cifar10, TrainSplitConcatenatesTheFiveBatchesInOrder) {
  const std::string root = make_temp_dir("cifar_train");
  const std::string dir = root + "/cifar-10-batches-bin";  // as the archive unpacks
  std::filesystem::create_directories(dir);
  for (int i = 1; i <= 5; ++i)
    write_bytes(dir + "/data_batch_" + std::to_string(i) + ".bin", cifar_record(static_cast<uint8_t>(i), 1, 2, 3));
  const Batch b = batch(*open_dataset("cifar10:" + root + ":train"), 0, 10);
  EXPECT_EQ(b.labels, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  std::filesystem::remove(dir + "/data_batch_4.bin");
  expect_error([&] { open_dataset("cifar10:" + dir + ":train"); }, {"cifar10: " + dir + "/data_batch_4.bin: no such file"});
}

TEST(Cifar10, PartialRecordIsAnErrorNamingTheFile) {
  const std::string dir = make_temp_dir("cifar_cut");
  std::vector<uint8_t> file = cifar_record(1, 0, 0, 0);
  file.resize(3000);
  write_bytes(dir + "/test_batch.bin", file);
  expect_error([&] { open_dataset("cifar10:" + dir); }, {dir + "/test_batch.bin", "truncated", "3073-byte records"});
  write_bytes(dir + "/test_batch.bin", cifar_record(42, 0, 0, 0));
  expect_error([&] { open_dataset("cifar10:" + dir); }, {dir + "/test_batch.bin", "label 42"});
}

// ---- npy fixtures -----------------------------------------------------------------------

template <typename T>
std::vector<uint8_t> raw(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(NpyDataset, FloatImagesAndInt64LabelsAreReadAsIs) {
  const std::string dir = make_temp_dir("npy_f4");
  std::vector<float> x(2 * 3 * 2 * 2);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * static_cast<float>(i) - 3.0f;
  write_bytes(dir + "/x.npy", npy_file("<f4", "(2, 3, 2, 2)", raw(x)));
  write_bytes(dir + "/y.npy", npy_file("<i8", "(2,)", raw(std::vector<int64_t>{4, 1000})));
  auto d = open_dataset("npy:" + dir + "/x.npy:" + dir + "/y.npy");
  ASSERT_EQ(d->size(), 2);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{3, 2, 2}));
  const Batch b = batch(*d, 0, 2);
  EXPECT_EQ(b.images, x);
  EXPECT_EQ(b.labels, (std::vector<int64_t>{4, 1000}));
}

TEST(NpyDataset, Uint8ImagesAreDividedBy255AndInt32LabelsWidened) {
  const std::string dir = make_temp_dir("npy_u1");
  write_bytes(dir + "/x.npy", npy_file("|u1", "(2, 1, 1, 2)", {0, 255, 51, 102}));
  write_bytes(dir + "/y.npy", npy_file("<i4", "(2,)", raw(std::vector<int32_t>{6, 2})));
  const Batch b = batch(*open_dataset("npy:" + dir + "/x.npy:" + dir + "/y.npy"), 0, 2);
  EXPECT_EQ(b.images, (std::vector<float>{0.0f, 1.0f, 51 / 255.0f, 102 / 255.0f}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{6, 2}));
}

TEST(NpyDataset, Int64AndInt32InputsAreIntegerSamplesReadExactlyAndNeverNormalized) {
  const std::string dir = make_temp_dir("npy_ids");
  // token ids, one beyond float32's exact integers (2^24 + 1)
  const std::vector<int64_t> ids = {0, 7, 999, (int64_t{1} << 24) + 1, 3, 42};
  write_bytes(dir + "/x.npy", npy_file("<i8", "(2, 3)", raw(ids)));
  write_bytes(dir + "/y.npy", npy_file("<i8", "(2,)", raw(std::vector<int64_t>{1, 0})));
  for (const std::string spec : {"npy:" + dir + "/x.npy:" + dir + "/y.npy", "npy:" + dir + "/x.npy:" + dir + "/y.npy:limit=2"}) {
    auto d = open_dataset(spec);
    ASSERT_TRUE(d->integer_samples()) << spec;
    EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{3}));
    std::vector<int64_t> got(3);
    int64_t label = -5;
    d->get_integers(1, got.data(), &label);
    EXPECT_EQ(got, (std::vector<int64_t>(ids.begin() + 3, ids.end())));
    EXPECT_EQ(label, 0);
    std::vector<float> f(3);
    d->get(0, f.data(), &label);
    EXPECT_EQ(f, (std::vector<float>{0, 7, 999}));
    expect_error([&] { d->get_integers(2, got.data(), &label); }, {"npy", "sample index 2 out of range"});
  }
  write_bytes(dir + "/x4.npy", npy_file("<i4", "(1, 2)", raw(std::vector<int32_t>{-3, 5})));
  auto d4 = open_dataset("npy:" + dir + "/x4.npy");
  ASSERT_TRUE(d4->integer_samples());
  std::vector<int64_t> got(2);
  int64_t label = 0;
  d4->get_integers(0, got.data(), &label);
  EXPECT_EQ(got, (std::vector<int64_t>{-3, 5}));
  EXPECT_EQ(label, -1);
  // images are not integer samples, and integers are not normalized
  write_bytes(dir + "/img.npy", npy_file("|u1", "(1, 1, 1, 2)", {0, 255}));
  auto img = open_dataset("npy:" + dir + "/img.npy");
  EXPECT_FALSE(img->integer_samples());
  expect_error([&] { img->get_integers(0, got.data(), &label); }, {"not integers"});
  expect_error([&] { open_dataset("npy:" + dir + "/x.npy:mean=0.5"); }, {"npy:" + dir + "/x.npy:mean=0.5", "integers", "mean= and std="});
}

TEST(NpyDataset, WithoutALabelsFileEveryLabelIsMinusOne) {
  const std::string dir = make_temp_dir("npy_nolabels");
  write_bytes(dir + "/x.npy", npy_file("|u1", "(3, 1, 1, 1)", {1, 2, 3}));
  EXPECT_EQ(batch(*open_dataset("npy:" + dir + "/x.npy:limit=2"), 0, 5).labels, (std::vector<int64_t>{-1, -1}));
}

TEST(NpyDataset, BadShapesDtypesAndCountsAreErrorsNamingTheFile) {
  const std::string dir = make_temp_dir("npy_bad");
  const std::string x = dir + "/x.npy", y = dir + "/y.npy";
  write_bytes(x, npy_file("|u1", "(2, 1, 1, 2)", {0, 1, 2, 3}));
  write_bytes(y, npy_file("<i8", "(3,)", raw(std::vector<int64_t>{1, 2, 3})));
  expect_error([&] { open_dataset("npy:" + x + ":" + y); }, {"npy: " + y + ": 3 labels, but", "2 images"});
  write_bytes(y, npy_file("<f4", "(2,)", raw(std::vector<float>{1, 2})));
  expect_error([&] { open_dataset("npy:" + x + ":" + y); }, {y, "labels must be int64 or int32"});
  write_bytes(x, npy_file("<f8", "(1, 1)", raw(std::vector<double>{1})));
  expect_error([&] { open_dataset("npy:" + x); }, {x, "images must be float32 or uint8"});
  write_bytes(x, npy_file("<f4", "(4,)", raw(std::vector<float>{1, 2, 3, 4})));
  expect_error([&] { open_dataset("npy:" + x); }, {x, "rank >= 2"});
  write_bytes(x, npy_file("|u1", "(3, 1, 1, 2)", {0, 1, 2, 3}));
  expect_error([&] { open_dataset("npy:" + x); }, {"npy: " + x, "truncated data", "needs 6 bytes", "has 4"});
  expect_error([&] { open_dataset("npy:" + dir + "/none.npy"); }, {"npy: " + dir + "/none.npy: no such file"});
}

// ---- image folder fixtures --------------------------------------------------------------

std::vector<uint8_t> constant_rgb(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> px;
  for (int i = 0; i < w * h; ++i) px.insert(px.end(), {r, g, b});
  return px;
}

TEST(ImageFolder, LabelsFollowSortedClassNamesAndImagesAreSortedWithinAClass) {
  const std::string dir = make_temp_dir("folder_order");
  for (const char* c : {"cat", "ant", "bee"}) std::filesystem::create_directories(dir + "/" + c);
  std::filesystem::create_directories(dir + "/bee/nested");
  // the colour tells the files apart: red = 10 * position in the expected order
  write_png(dir + "/ant/b.PNG", 8, 8, 3, constant_rgb(8, 8, 10, 0, 0));
  write_png(dir + "/ant/a.png", 8, 8, 3, constant_rgb(8, 8, 0, 0, 0));
  write_jpeg(dir + "/bee/z.JPEG", 8, 8, 3, constant_rgb(8, 8, 20, 0, 0), 100);
  write_png(dir + "/bee/nested/a.png", 8, 8, 3, constant_rgb(8, 8, 30, 0, 0));
  write_jpeg(dir + "/cat/x.Jpg", 8, 8, 3, constant_rgb(8, 8, 40, 0, 0), 100);
  write_bytes(dir + "/cat/notes.txt", {'h', 'i'});
  write_bytes(dir + "/README", {'h', 'i'});
  auto d = open_dataset("imagefolder:" + dir + ":size=4:resize=4");
  ASSERT_EQ(d->size(), 5);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{3, 4, 4}));
  const Batch b = batch(*d, 0, 5);
  EXPECT_EQ(b.labels, (std::vector<int64_t>{0, 0, 1, 1, 2}));
  for (int i = 0; i < 5; ++i)
    EXPECT_NEAR(b.images[i * 48] * 0.229f + 0.485f, 10.0f * i / 255.0f, 1.5f / 255.0f) << "sample " << i;
}

TEST(ImageFolder, ConstantColourImageGivesTheNormalizedConstant) {
  const std::string dir = make_temp_dir("folder_const");
  std::filesystem::create_directories(dir + "/only");
  write_png(dir + "/only/a.png", 50, 30, 3, constant_rgb(50, 30, 200, 100, 50));
  auto d = open_dataset("imagefolder:" + dir + ":size=16:resize=20");
  std::vector<float> x(3 * 16 * 16);
  int64_t y = -7;
  d->get(0, x.data(), &y);
  EXPECT_EQ(y, 0);
  const float expect[3] = {(200 / 255.0f - 0.485f) / 0.229f, (100 / 255.0f - 0.456f) / 0.224f,
                           (50 / 255.0f - 0.406f) / 0.225f};
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < 256; ++k) ASSERT_FLOAT_EQ(x[c * 256 + k], expect[c]) << "channel " << c << " pixel " << k;
}

TEST(ImageFolder, GrayscaleJpegBecomesThreeEqualChannels) {
  const std::string dir = make_temp_dir("folder_gray");
  std::filesystem::create_directories(dir + "/g");
  write_jpeg(dir + "/g/a.jpg", 24, 24, 1, std::vector<uint8_t>(24 * 24, 128), 100);
  std::vector<float> x(3 * 8 * 8);
  int64_t y;
  open_dataset("imagefolder:" + dir + ":size=8:resize=8")->get(0, x.data(), &y);
  for (int c = 0; c < 3; ++c) {
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std_[3] = {0.229f, 0.224f, 0.225f};
    EXPECT_NEAR(x[c * 64 + 10] * std_[c] + mean[c], 128 / 255.0f, 1.01f / 255.0f) << "channel " << c;
  }
}

TEST(ImageFolder, SizeDefaultsTo224AndResizeTo256) {
  const std::string dir = make_temp_dir("folder_default");
  std::filesystem::create_directories(dir + "/c");
  write_png(dir + "/c/a.png", 300, 260, 3, constant_rgb(300, 260, 1, 2, 3));
  auto d = open_dataset("imagefolder:" + dir);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{3, 224, 224}));
  std::vector<float> x(3 * 224 * 224);
  int64_t y;
  d->get(0, x.data(), &y);
  EXPECT_FLOAT_EQ(x[0], (1 / 255.0f - 0.485f) / 0.229f);
}

TEST(ImageFolder, UndecodableOrTruncatedImageIsAnErrorNamingTheFileWhenRead) {
  const std::string dir = make_temp_dir("folder_bad");
  std::filesystem::create_directories(dir + "/c");
  write_bytes(dir + "/c/garbage.jpg", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  write_jpeg(dir + "/c/good.jpg", 32, 32, 3, constant_rgb(32, 32, 9, 9, 9));
  std::vector<uint8_t> cut;
  {
    write_jpeg(dir + "/c/tmp.jpg", 64, 64, 3, constant_rgb(64, 64, 90, 9, 9));
    std::ifstream f(dir + "/c/tmp.jpg", std::ios::binary);
    cut.assign(std::istreambuf_iterator<char>(f), {});
    std::filesystem::remove(dir + "/c/tmp.jpg");
  }
  cut.resize(cut.size() * 2 / 3);
  write_bytes(dir + "/c/truncated.jpg", cut);
  write_bytes(dir + "/c/zbad.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'});
  auto d = open_dataset("imagefolder:" + dir + ":size=8:resize=8");  // listing only: opens fine
  ASSERT_EQ(d->size(), 4);
  std::vector<float> x(3 * 8 * 8);
  int64_t y;
  expect_error([&] { d->get(0, x.data(), &y); }, {"imagefolder: " + dir + "/c/garbage.jpg: not a JPEG or PNG"});
  d->get(1, x.data(), &y);
  expect_error([&] { d->get(2, x.data(), &y); }, {"imagefolder: " + dir + "/c/truncated.jpg: cannot decode JPEG"});
  expect_error([&] { d->get(3, x.data(), &y); }, {"imagefolder: " + dir + "/c/zbad.png: cannot decode PNG"});
}

TEST(ImageFolder, MissingEmptyOrClasslessFoldersAreErrorsNamingThem) {
  const std::string dir = make_temp_dir("folder_empty");
  expect_error([&] { open_dataset("imagefolder:" + dir); }, {"imagefolder: " + dir + ": no class folders"});
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  write_png(dir + "/a/x.png", 2, 2, 1, {1, 2, 3, 4});
  expect_error([&] { open_dataset("imagefolder:" + dir); }, {"imagefolder: " + dir + "/b: class folder holds no"});
  expect_error([&] { open_dataset("imagefolder:" + dir + "/nope"); }, {dir + "/nope: no such directory"});
}

// ---- specs and batching -----------------------------------------------------------------

TEST(Spec, UnknownSchemeIsAnErrorNamingIt) {
  expect_error([] { open_dataset("imagenet:/data"); }, {"unknown scheme 'imagenet'"});
  expect_error([] { open_dataset(""); }, {"unknown scheme ''"});
}

TEST(Spec, BadModifiersSplitsAndExtraPartsAreErrors) {
  expect_error([] { open_dataset("fmnist:limit=0"); }, {"limit must be a positive integer, got '0'"});
  expect_error([] { open_dataset("fmnist:limit=ten"); }, {"limit must be a positive integer, got 'ten'"});
  expect_error([] { open_dataset("fmnist:limit=99999999999999999999"); }, {"limit must be a positive integer"});
  expect_error([] { open_dataset("fmnist::valid"); }, {"split must be train or test, got 'valid'"});
  expect_error([] { open_dataset("fmnist:size=32"); }, {"size= and resize= apply only to imagefolder"});
  expect_error([] { open_dataset("fmnist:/a:test:extra"); }, {"unexpected 'extra'"});
  expect_error([] { open_dataset("imagefolder:/x:size=224:resize=200"); }, {"resize (200) must be at least size (224)"});
  expect_error([] { open_dataset("cifar10"); }, {"cifar10 needs a directory"});
  expect_error([] { open_dataset("npy"); }, {"npy needs a file"});
}

TEST(Batch, StacksSamplesInOrderAndClipsAtTheEnd) {
  auto d = open_dataset("fmnist:limit=10");
  const Batch b = batch(*d, 8, 5);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 1, 28, 28}));
  ASSERT_EQ(b.images.size(), 2u * 784u);
  std::vector<float> x(784);
  int64_t y;
  d->get(9, x.data(), &y);
  EXPECT_EQ(std::vector<float>(b.images.begin() + 784, b.images.end()), x);
  EXPECT_EQ(b.labels[1], y);
  EXPECT_EQ(batch(*d, 10, 4).shape, (std::vector<int64_t>{0, 1, 28, 28}));
  expect_error([&] { batch(*d, 11, 1); }, {"begin 11 outside [0, 10]"});
  expect_error([&] { batch(*d, 0, -1); }, {"negative count"});
}

}  // namespace
}  // namespace data
}  // namespace anybit
