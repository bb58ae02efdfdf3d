// Dataset readers on the real Fashion-MNIST files and on small corrupt fixtures.
#include "anybit/data/dataset.h"

#include <gtest/gtest.h>
#include <cstddef>
#include <cstdio>
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <cstring>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace anybit {
namespace data {
namespace {

const std::string kFmnist = "/usr/share/datasets/fashion-mnist";

std::string tmpdir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/anybit_data_" + name;
  std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return d;
}

void write(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), b.size());
}

std::vector<uint8_t> idx_header(uint32_t magic, std::vector<uint32_t> dims) {
  std::vector<uint8_t> b;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  return b;
}

template <typename Fn>
void expect_error(Fn fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error, expected one containing " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(FashionMnist, TheRealTestSetHas10kImagesInRangeWithMatchingLabels) {
  auto d = open_dataset("fmnist:" + kFmnist + ":test");
  ASSERT_EQ(d->size(), 10000);
  EXPECT_EQ(d->sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  std::vector<uint8_t> labels = read_file_maybe_gz(kFmnist + "/t10k-labels-idx1-ubyte.gz");
  std::vector<float> x(784);
  float lo = 1, hi = 0;
  for (int64_t i : {0, 1, 4999, 9999}) {
    int64_t y;
    d->get(i, x.data(), &y);
    EXPECT_EQ(y, labels[8 + i]);
    for (float v : x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  EXPECT_GE(lo, 0.0f);
  EXPECT_LE(hi, 1.0f);
  EXPECT_GT(hi, 0.9f);
  EXPECT_EQ(open_dataset("fmnist::train")->size(), 60000);
  EXPECT_EQ(open_dataset("fmnist:" + kFmnist + ":test:limit=100")->size(), 100);
}

TEST(Idx, CorruptFilesGiveAnErrorNamingTheFile) {
  const std::string d = tmpdir("idx");
  // truncated gzip
  std::vector<uint8_t> gz = read_file_maybe_gz(kFmnist + "/t10k-labels-idx1-ubyte.gz");
  {
    std::ifstream f(kFmnist + "/t10k-images-idx3-ubyte.gz", std::ios::binary);
    std::vector<char> raw(4000);
    f.read(raw.data(), raw.size());
    write(d + "/t10k-images-idx3-ubyte.gz", std::vector<uint8_t>(raw.begin(), raw.end()));
  }
  write(d + "/t10k-labels-idx1-ubyte", gz);
  expect_error([&] { open_dataset("fmnist:" + d); }, "t10k-images-idx3-ubyte.gz");
  // bad magic
  write(d + "/t10k-images-idx3-ubyte.gz", {});
  std::remove((d + "/t10k-images-idx3-ubyte.gz").c_str());
  std::vector<uint8_t> img = idx_header(0x0803, {2, 2, 2});
  img.insert(img.end(), 8, 7);
  std::vector<uint8_t> bad = img;
  bad[3] = 0x05;
  write(d + "/t10k-images-idx3-ubyte", bad);
  expect_error([&] { open_dataset("fmnist:" + d); }, "bad magic");
  // count mismatch: 2 images, 10000 labels
  write(d + "/t10k-images-idx3-ubyte", img);
  expect_error([&] { open_dataset("fmnist:" + d); }, "labels for 2 images");
  // header promising more images than the file holds
  std::vector<uint8_t> shortimg = idx_header(0x0803, {5, 2, 2});
  shortimg.insert(shortimg.end(), 8, 7);
  write(d + "/t10k-images-idx3-ubyte", shortimg);
  expect_error([&] { open_dataset("fmnist:" + d); }, "truncated");
}

TEST(Specs, MissingPathsAndUnknownSchemesAreErrors) {
  expect_error([] { open_dataset("fmnist:/nonexistent/dir"); }, "/nonexistent/dir");
  expect_error([] { open_dataset("imagenett:/x"); }, "unknown scheme 'imagenett'");
  expect_error([] { open_dataset("fmnist::valid"); }, "split");
  expect_error([] { open_dataset("npy:/nonexistent.npy"); }, "/nonexistent.npy");
  expect_error([] { open_dataset("fmnist::test:limit=0"); }, "limit");
}

TEST(Cifar10, ReadsRecordsAndNormalizesWithTheCifarStatistics) {
  const std::string d = tmpdir("cifar");
  std::vector<uint8_t> rec(3073, 255);
  rec[0] = 3;
  std::vector<uint8_t> two = rec;
  two.insert(two.end(), rec.begin(), rec.end());
  write(d + "/test_batch.bin", two);
  auto ds = open_dataset("cifar10:" + d);
  ASSERT_EQ(ds->size(), 2);
  std::vector<float> x(3072);
  int64_t y;
  ds->get(1, x.data(), &y);
  EXPECT_EQ(y, 3);
  EXPECT_NEAR(x[0], (1.0f - 0.4914f) / 0.2470f, 1e-5);
  EXPECT_NEAR(x[2048], (1.0f - 0.4465f) / 0.2616f, 1e-5);
  two.pop_back();
  write(d + "/test_batch.bin", two);
  expect_error([&] { open_dataset("cifar10:" + d); }, "test_batch.bin");
}

std::vector<uint8_t> npy(const std::string& descr, const std::string& shape, const std::vector<uint8_t>& data) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::vector<uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(h.size()),
                            static_cast<uint8_t>(h.size() >> 8)};
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

TEST(Npy, ReadsImagesAndLabelsAndRejectsTruncatedFiles) {
  const std::string d = tmpdir("npy");
  std::vector<uint8_t> px = {0, 255, 51, 102};  // 2 images of 1x1x2
  write(d + "/x.npy", npy("|u1", "(2, 1, 1, 2)", px));
  std::vector<uint8_t> lab(16, 0);
  lab[0] = 4;
  lab[8] = 9;
  write(d + "/y.npy", npy("<i8", "(2,)", lab));
  auto ds = open_dataset("npy:" + d + "/x.npy:" + d + "/y.npy");
  ASSERT_EQ(ds->size(), 2);
  std::vector<float> x(2);
  int64_t y;
  ds->get(1, x.data(), &y);
  EXPECT_EQ(y, 9);
  EXPECT_FLOAT_EQ(x[0], 0.2f);
  write(d + "/x.npy", npy("|u1", "(3, 1, 1, 2)", px));
  expect_error([&] { open_dataset("npy:" + d + "/x.npy"); }, "truncated");
  write(d + "/x.npy", npy("<f8", "(2, 1, 1, 2)", std::vector<uint8_t>(32)));
  expect_error([&] { open_dataset("npy:" + d + "/x.npy"); }, "unsupported dtype");
  write(d + "/x.npy", {1, 2, 3});
  expect_error([&] { open_dataset("npy:" + d + "/x.npy"); }, "bad magic");
}

void write_png(const std::string& path, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < px.size(); i += 3) {
    px[i] = r;
    px[i + 1] = g;
    px[i + 2] = b;
  }
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = PNG_FORMAT_RGB;
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, px.data(), 0, nullptr));
}

void write_jpeg(const std::string& path, int w, int h, uint8_t v) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  FILE* f = std::fopen(path.c_str(), "wb");
  jpeg_stdio_dest(&c, f);
  c.image_width = w;
  c.image_height = h;
  c.input_components = 1;
  c.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(w, v);
  while (c.next_scanline < c.image_height) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

TEST(ImageFolder, DecodesResizesCropsAndNormalizesWithClassesInSortedOrder) {
  const std::string d = tmpdir("imgs");
  ASSERT_EQ(std::system(("mkdir -p '" + d + "/cat' '" + d + "/ant'").c_str()), 0);
  write_png(d + "/cat/a.png", 40, 30, 255, 0, 128);
  write_jpeg(d + "/ant/b.JPG", 20, 50, 200);  // grayscale JPEG expands to RGB
  auto ds = open_dataset("imagefolder:" + d + ":size=16:resize=20");
  ASSERT_EQ(ds->size(), 2);
  EXPECT_EQ(ds->sample_shape(), (std::vector<int64_t>{3, 16, 16}));
  std::vector<float> x(3 * 16 * 16);
  int64_t y;
  ds->get(0, x.data(), &y);  // ant/b.JPG
  EXPECT_EQ(y, 0);
  EXPECT_NEAR(x[0], (200 / 255.0f - 0.485f) / 0.229f, 0.02);
  ds->get(1, x.data(), &y);  // cat/a.png
  EXPECT_EQ(y, 1);
  EXPECT_NEAR(x[5], (1.0f - 0.485f) / 0.229f, 1e-5);
  EXPECT_NEAR(x[256 + 5], (0.0f - 0.456f) / 0.224f, 1e-5);
  EXPECT_NEAR(x[512 + 5], (128 / 255.0f - 0.406f) / 0.225f, 1e-5);
  // an undecodable image names its file
  write(d + "/cat/broken.png", {0x89, 'P', 'N', 'G', 1, 2, 3});
  auto ds2 = open_dataset("imagefolder:" + d + ":size=16:resize=20");
  expect_error([&] { ds2->get(2, x.data(), &y); }, "broken.png");
  expect_error([&] { open_dataset("imagefolder:" + d + "/none"); }, "no such directory");
}

}  // namespace
}  // namespace data
}  // namespace anybit
