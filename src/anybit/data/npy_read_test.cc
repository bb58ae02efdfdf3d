// The strict .npy parser: what np.save writes parses; everything malformed is an Error, and
// no truncation or corruption makes it read outside the buffer.
#include "anybit/data/npy_read.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "anybit/data/dataset.h"
#include "anybit/data/test_fixtures.h"

namespace anybit {
namespace data {
namespace {

using fixtures::expect_error;
using fixtures::npy_file;

NpyArray parse(const std::vector<uint8_t>& b) { return parse_npy(b.data(), b.size(), "t.npy"); }

// A file with a hand-written header (padding and newline added), format 1.0.
std::vector<uint8_t> with_header(const std::string& dict, const std::vector<uint8_t>& data) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  const uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(h.size()), 0};
  std::vector<uint8_t> b(10 + h.size() + data.size());
  std::copy(prefix, prefix + 10, b.begin());
  std::copy(h.begin(), h.end(), b.begin() + 10);
  std::copy(data.begin(), data.end(), b.begin() + 10 + static_cast<std::ptrdiff_t>(h.size()));
  return b;
}

TEST(NpyRead, ParsesVersion1And2HeadersAsNpSaveWritesThem) {
  for (bool v2 : {false, true}) {
    std::vector<uint8_t> data(2 * 3 * 4);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
    const NpyArray a = parse(npy_file("<f4", "(2, 3)", data, v2));
    EXPECT_EQ(a.descr, "<f4");
    EXPECT_EQ(a.item_size, 4u);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.element_count(), 6);
    EXPECT_EQ(a.data, data);
  }
}

TEST(NpyRead, ScalarsEmptyArraysAndCompactHeadersParse) {
  EXPECT_EQ(parse(npy_file("<i8", "()", std::vector<uint8_t>(8))).element_count(), 1);
  EXPECT_EQ(parse(npy_file("|u1", "(0, 3)", {})).element_count(), 0);
  const NpyArray a = parse(with_header("{\"descr\":\"|u1\",\"shape\":(3,),\"fortran_order\":False}", {1, 2, 3}));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.data, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(NpyRead, MalformedHeadersAreErrorsNamingTheFile) {
  const std::vector<uint8_t> one = {7};
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': True, 'shape': (1,), }", one)); },
               {"t.npy", "Fortran-order"});
  expect_error([&] { parse(with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", one)); },
               {"t.npy", "big-endian"});
  expect_error([&] { parse(with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", one)); },
               {"unsupported dtype '<c8'"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'shape': (1,), }", one)); }, {"no 'fortran_order'"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1,)}", one)); },
               {"'descr' appears twice"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), 'x': 1}", one)); },
               {"unexpected key 'x'"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (-1,), }", one)); },
               {"non-negative integers"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), } x", one)); },
               {"unexpected text after the header"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (1,", one)); },
               {"bad header"});
  expect_error([&] { parse(with_header("{'descr': '|u1', 'fortran_order': Maybe, 'shape': (1,)}", one)); },
               {"True or False"});
}

TEST(NpyRead, BadMagicVersionAndDataSizeAreErrors) {
  expect_error([] { parse({1, 2, 3}); }, {"t.npy: not a .npy file (bad magic)"});
  std::vector<uint8_t> b = npy_file("|u1", "(2,)", {1, 2});
  b[6] = 4;
  expect_error([&] { parse(b); }, {"unsupported .npy format version 4.0"});
  expect_error([] { parse(npy_file("|u1", "(3,)", {1, 2})); }, {"truncated: shape needs 3 bytes of data, file holds 2"});
  expect_error([] { parse(npy_file("|u1", "(1,)", {1, 2})); }, {"corrupt: shape needs 1 bytes of data, file holds 2"});
}

TEST(NpyRead, ShapesTooLargeToAllocateAreErrorsNotAllocations) {
  expect_error([] { parse(npy_file("<f8", "(999999999999999, 999999999999999)", {})); }, {"shape too large"});
  expect_error([] { parse(npy_file("<f4", "(100000, 100000)", {})); }, {"truncated"});
  expect_error([] { parse(npy_file("|u1", "(1234567890123456789,)", {})); }, {"shape dimension too large"});
}

TEST(NpyRead, EveryTruncationOfAValidFileIsAnError) {
  const std::vector<uint8_t> full = npy_file("<i4", "(2, 2)", std::vector<uint8_t>(16, 1), true);
  for (size_t n = 0; n < full.size(); ++n) {
    // an exact-size copy, so a read past its end would be one past the allocation
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    EXPECT_THROW(parse(cut), Error) << "length " << n;
  }
  EXPECT_NO_THROW(parse(full));
}

TEST(NpyRead, RandomCorruptionEitherParsesConsistentlyOrIsAnError) {
  const std::vector<uint8_t> good = npy_file("<f4", "(3, 2)", std::vector<uint8_t>(24, 0x3f));
  std::mt19937 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> b = good;
    const int flips = 1 + trial % 4;
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (trial % 5 == 0) b.resize(rng() % b.size());
    try {
      const NpyArray a = parse(b);
      ASSERT_EQ(a.data.size(), static_cast<size_t>(a.element_count()) * a.item_size);
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace data
}  // namespace anybit
