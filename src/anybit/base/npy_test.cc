// .npy reading and writing: round trips of every dtype, the bytes NumPy writes, and every
// way a file can be corrupt, each giving an Error that names the file and the problem.
#include "anybit/base/npy.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "anybit/base/test_temp_dir.h"

namespace anybit {
namespace {

using testing::TempDir;

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// A .npy file as NumPy lays it out: magic, version, little-endian header length, the
// header dict padded with spaces to a 64-byte boundary and ended by '\n', the payload.
std::vector<uint8_t> npy_file(const std::string& dict, const std::string& payload, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t len = header.size();
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>((len >> 8) & 0xff);
  if (major != 1) out += std::string(2, '\0');
  return bytes_of(out + header + payload);
}

std::string error_of(const std::vector<uint8_t>& bytes, const std::string& name = "x.npy") {
  try {
    parse_npy(bytes.data(), bytes.size(), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Npy, ReadsTheLayoutNumpyWritesForAnInt32Vector) {
  const std::string payload("\x01\x00\x00\x00\xfe\xff\xff\xff\x03\x00\x00\x00", 12);
  const auto file = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", payload);
  ASSERT_EQ(file.size(), 128u + 12u);
  const NpyArray a = parse_npy(file.data(), file.size(), "v.npy");
  EXPECT_EQ(a.dtype, DType::kInt32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.to_int32("v"), (std::vector<int32_t>{1, -2, 3}));
}

TEST(Npy, WritesAHeaderNumpyReadsWithThePayload64ByteAligned) {
  const NpyArray a = NpyArray::from_ints(DType::kInt32, {3}, {1, -2, 3}, "v");
  const std::vector<uint8_t> bytes = serialize_npy(a);
  const std::string payload("\x01\x00\x00\x00\xfe\xff\xff\xff\x03\x00\x00\x00", 12);
  EXPECT_EQ(bytes, npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", payload));
  const NpyArray m = NpyArray::from_ints(DType::kInt8, {2, 2}, {1, 2, 3, 4}, "m");
  const std::vector<uint8_t> mb = serialize_npy(m);
  EXPECT_EQ(mb, npy_file("{'descr': '|i1', 'fortran_order': False, 'shape': (2, 2), }", "\x01\x02\x03\x04"));
}

TEST(Npy, ReadsVersion2And3HeadersAndPython2LongDimensions) {
  const std::string payload("\x07\x00", 2);
  for (int major : {2, 3}) {
    const auto f = npy_file("{'descr': '<i2', 'fortran_order': False, 'shape': (1L,), }", payload, major);
    const NpyArray a = parse_npy(f.data(), f.size(), "v2.npy");
    EXPECT_EQ(a.int_at(0), 7);
  }
  const auto spaced = npy_file("{ \"shape\" : ( 1 , ) , \"fortran_order\" : False , \"descr\" : \"<i2\" }", payload);
  EXPECT_EQ(parse_npy(spaced.data(), spaced.size(), "s.npy").int_at(0), 7);
}

TEST(Npy, RoundTripsEveryDtypeAndShapeThroughAFile) {
  TempDir dir("npy_roundtrip");
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {2, 3}, {2, 0, 4}, {1, 2, 3, 4}};
  for (DType d : {DType::kInt8, DType::kUInt8, DType::kInt16, DType::kInt32, DType::kInt64}) {
    for (const auto& shape : shapes) {
      int64_t n = 1;
      for (int64_t s : shape) n *= s;
      std::vector<int64_t> v;
      for (int64_t i = 0; i < n; ++i) v.push_back(d == DType::kUInt8 ? (i * 37) % 256 : (i % 2 ? -i : i) * 3);
      const NpyArray a = NpyArray::from_int64s(d, shape, v, "a");
      const std::string path = dir.file(std::string(dtype_name(d)) + ".npy");
      write_npy(path, a);
      const NpyArray b = read_npy(path);
      EXPECT_EQ(b.dtype, d);
      EXPECT_EQ(b.shape, shape);
      EXPECT_EQ(b.bytes, a.bytes);
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(b.int_at(i), v[i]);
    }
  }
  for (DType d : {DType::kFloat32, DType::kFloat64}) {
    const std::vector<double> v = {0.5, -1.25, 3e-3, 1e10, -0.0, 42};
    write_npy(dir.file("f.npy"), NpyArray::from_doubles(d, {3, 2}, v));
    const NpyArray b = read_npy(dir.file("f.npy"));
    EXPECT_EQ(b.dtype, d);
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_EQ(b.double_at(static_cast<int64_t>(i)), d == DType::kFloat32 ? static_cast<float>(v[i]) : v[i]);
  }
}

TEST(Npy, WritingLeavesOnlyTheFinalFileBehind) {
  TempDir dir("npy_atomic");
  write_npy(dir.file("a.npy"), NpyArray::from_ints(DType::kInt8, {2}, {1, 2}, "a"));
  write_npy(dir.file("a.npy"), NpyArray::from_ints(DType::kInt8, {3}, {1, 2, 3}, "a"));  // replaces
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"a.npy"});
  EXPECT_EQ(read_npy(dir.file("a.npy")).shape, (std::vector<int64_t>{3}));
  EXPECT_THROW(write_npy(dir.file("no/such/dir/a.npy"), NpyArray::from_ints(DType::kInt8, {1}, {1}, "a")), Error);
}

TEST(Npy, BadMagicIsAnErrorNamingTheFile) {
  auto f = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0'));
  f[1] = 'X';
  const std::string e = error_of(f, "weights/w.npy");
  EXPECT_NE(e.find("weights/w.npy"), std::string::npos) << e;
  EXPECT_NE(e.find("bad magic"), std::string::npos) << e;
}

TEST(Npy, EveryTruncationOfAValidFileIsAnErrorNeverACrash) {
  const auto f = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", std::string(24, '\x05'));
  ASSERT_NO_THROW(parse_npy(f.data(), f.size(), "ok.npy"));
  for (size_t n = 0; n < f.size(); ++n) {
    const std::string e = error_of(std::vector<uint8_t>(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n)), "cut.npy");
    ASSERT_EQ(e.rfind("cut.npy: ", 0), 0u) << n << ": " << e;
  }
  const std::string e = error_of(std::vector<uint8_t>(f.begin(), f.end() - 4));
  EXPECT_NE(e.find("truncated data: shape [2,3] of int32 needs 24 bytes, the file has 20"), std::string::npos) << e;
}

TEST(Npy, TrailingBytesAreASizeMismatch) {
  const auto f = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0'));
  EXPECT_NE(error_of(f).find("size mismatch"), std::string::npos) << error_of(f);
}

TEST(Npy, FortranOrderBigEndianAndUnknownDtypesAreRejected) {
  const std::string four(4, '\0');
  struct Case {
    std::string dict, expect;
  };
  const std::vector<Case> cases = {
      {"{'descr': '<i4', 'fortran_order': True, 'shape': (1,), }", "fortran_order"},
      {"{'descr': '>i4', 'fortran_order': False, 'shape': (1,), }", "big-endian"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype '<c8'"},
      {"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype '|O'"},
      {"{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype '<U1'"},
      {"{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (1,), }", "structured"},
      {"{'descr': '<i4', 'shape': (1,), }", "missing key 'fortran_order'"},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (-1,), }", "non-negative integer"},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': [1], }", "expected '('"},
      {"{'descr': '<i4', 'fortran_order': Maybe, 'shape': (1,), }", "True or False"},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "too large"},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (1,) }junk", "after the header"},
  };
  for (const Case& c : cases) {
    const std::string e = error_of(npy_file(c.dict, four), "bad.npy");
    EXPECT_NE(e.find("bad.npy: "), std::string::npos) << c.dict << " -> " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.dict << " -> " << e;
  }
}

TEST(Npy, UnsupportedVersionsAndHugeShapesAreErrors) {
  auto f = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0'));
  f[6] = 4;
  EXPECT_NE(error_of(f).find("unsupported .npy format version 4.0"), std::string::npos);
  const auto huge = npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (100000, 100000, 100000), }", "");
  EXPECT_NE(error_of(huge).find("too large"), std::string::npos) << error_of(huge);
}

TEST(Npy, MissingFileAndDirectoryAreErrorsNamingThePath) {
  TempDir dir("npy_missing");
  try {
    read_npy(dir.file("nope.npy"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.npy: no such file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_npy(dir.path()), Error);
}

TEST(Npy, ConversionsRejectFloatsAndValuesThatDoNotFit) {
  const NpyArray f = NpyArray::from_doubles(DType::kFloat32, {1}, {1.0});
  EXPECT_THROW(f.to_int32("f"), Error);
  const NpyArray big = NpyArray::from_int64s(DType::kInt64, {1}, {int64_t{1} << 40}, "big");
  EXPECT_THROW(big.to_int32("big"), Error);
  EXPECT_THROW(NpyArray::from_ints(DType::kInt8, {1}, {128}, "w"), Error);
  EXPECT_THROW(NpyArray::from_ints(DType::kUInt8, {1}, {-1}, "w"), Error);
  EXPECT_THROW(NpyArray::from_ints(DType::kInt8, {2}, {1}, "w"), Error);
  EXPECT_EQ(parse_dtype_name("int16"), DType::kInt16);
  EXPECT_THROW(parse_dtype_name("int4"), Error);
}

// The cases of the dataset reader's former parser (data/), now read by this one: what
// np.save writes parses, and every malformed header is an Error naming the file.
NpyArray parse(const std::vector<uint8_t>& b) { return parse_npy(b.data(), b.size(), "t.npy"); }

void expect_error_with(const std::vector<uint8_t>& bytes, const std::vector<std::string>& fragments) {
  const std::string e = error_of(bytes, "t.npy");
  for (const auto& f : fragments) EXPECT_NE(e.find(f), std::string::npos) << "missing '" << f << "' in: " << e;
}

TEST(Npy, ScalarsEmptyArraysAndCompactDoubleQuotedHeadersParse) {
  EXPECT_EQ(parse(npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", std::string(8, '\0'))).size(), 1);
  EXPECT_EQ(parse(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (0, 3), }", "")).size(), 0);
  const NpyArray a = parse(npy_file("{\"descr\":\"|u1\",\"shape\":(3,),\"fortran_order\":False}", "\x01\x02\x03"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.bytes, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(Npy, MalformedHeadersAreErrorsNamingTheFile) {
  const std::string one = "\x07";
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': True, 'shape': (1,), }", one), {"t.npy", "fortran_order"});
  expect_error_with(npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", one), {"t.npy", "big-endian"});
  expect_error_with(npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", one), {"unsupported dtype '<c8'"});
  expect_error_with(npy_file("{'descr': '|u1', 'shape': (1,), }", one), {"missing key 'fortran_order'"});
  expect_error_with(npy_file("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1,)}", one),
                    {"duplicate key 'descr'"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), 'x': 1}", one),
                    {"unexpected key 'x'"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (-1,), }", one),
                    {"non-negative integer"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), } x", one),
                    {"unexpected text after the header"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,", one), {"t.npy", "malformed header"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': Maybe, 'shape': (1,)}", one), {"True or False"});
}

TEST(Npy, TooFewOrTooManyDataBytesAndHugeShapesAreErrorsNotAllocations) {
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", "\x01\x02"),
                    {"t.npy", "truncated data", "needs 3 bytes", "has 2"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", "\x01\x02"),
                    {"t.npy", "size mismatch"});
  expect_error_with(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999999, 999999999999999), }", ""),
                    {"too large"});
  expect_error_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", ""),
                    {"truncated data"});
  expect_error_with(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1234567890123456789,), }", ""),
                    {"too large"});
}

TEST(Npy, RandomCorruptionEitherParsesConsistentlyOrIsAnError) {
  const std::vector<uint8_t> good =
      npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", std::string(24, '\x3f'));
  std::mt19937 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> b = good;
    const int flips = 1 + trial % 4;
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (trial % 5 == 0) b.resize(rng() % b.size());
    // an exact-size copy, so a read past its end would be one past the allocation
    const std::vector<uint8_t> exact(b.begin(), b.end());
    try {
      const NpyArray a = parse(exact);
      ASSERT_EQ(a.bytes.size(), static_cast<size_t>(a.size()) * dtype_size(a.dtype));
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace anybit
