// QuantSpec parsing, printing and integer ranges.
#include "anybit/quant/spec.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace anybit {
namespace {

TEST(QuantSpec, SignedAndUnsignedRangesFollowTheDesignForEveryWidth) {
  for (int b = 2; b <= 16; ++b) {
    QuantSpec s = parse_spec("int" + std::to_string(b));
    EXPECT_EQ(s.qmin(), -(1 << (b - 1)));
    EXPECT_EQ(s.qmax(), (1 << (b - 1)) - 1);
    QuantSpec u = parse_spec("uint" + std::to_string(b));
    EXPECT_EQ(u.qmin(), 0);
    EXPECT_EQ(u.qmax(), (1 << b) - 1);
  }
  EXPECT_EQ(parse_spec("int8:narrow").qmin(), -127);
  EXPECT_EQ(parse_spec("uint1").qmax(), 1);
}

TEST(QuantSpec, EveryExampleFromTheIssueParsesAndPrintsBack) {
  const std::vector<std::string> examples = {
      "int4", "uint8", "int6:per_channel", "int8:asym", "fixed:Q2.5", "log4",
      "binary", "ternary", "int4:pow2scale", "float", "int4:group=32", "uint4:pact",
      "int3:per_channel:lsq", "int8:round=stochastic", "ternary:threshold=0.5",
      "int8:axis=1", "ufixed:Q0.8", "int8:narrow", "binary:per_channel:lsq", "ternary:lsq:threshold=0.5"};
  for (const auto& e : examples) {
    QuantSpec s = parse_spec(e);
    EXPECT_EQ(parse_spec(s.str()), s) << e << " -> " << s.str();
  }
}

TEST(QuantSpec, FixedPointIsSignedWithOneSignBitAndPowerOfTwoStep) {
  QuantSpec s = parse_spec("fixed:Q2.5");
  EXPECT_EQ(s.scheme, Scheme::kFixed);
  EXPECT_EQ(s.bits, 8);
  EXPECT_EQ(s.int_bits, 2);
  EXPECT_EQ(s.frac_bits, 5);
  EXPECT_EQ(s.qmin(), -128);
  EXPECT_EQ(s.qmax(), 127);
  EXPECT_TRUE(s.pow2_scale);
  EXPECT_EQ(parse_spec("ufixed:Q1.7").bits, 8);
}

TEST(QuantSpec, ModifiersAreCaseInsensitiveAndOrderFree) {
  EXPECT_EQ(parse_spec("INT8:Per_Channel:ASYM"), parse_spec("int8:asym:per_channel"));
  QuantSpec g = parse_spec("int4:group=64");
  EXPECT_EQ(g.granularity, Granularity::kPerGroup);
  EXPECT_EQ(g.group_size, 64);
  EXPECT_EQ(parse_spec("int8:round=floor").rounding, Rounding::kFloor);
  EXPECT_EQ(parse_spec("log5").log_exponents(), 15);
}

struct BadSpec {
  const char* text;
  const char* fragment;  // the message must contain this
};

void PrintTo(const BadSpec& b, std::ostream* os) { *os << "'" << b.text << "'"; }

class InvalidSpec : public ::testing::TestWithParam<BadSpec> {};

TEST_P(InvalidSpec, GivesAClearErrorNamingTheProblem) {
  const BadSpec& b = GetParam();
  try {
    parse_spec(b.text);
    FAIL() << "accepted " << b.text;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(b.fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find(b.text), std::string::npos) << "message should quote the spec: " << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(
    QuantSpec, InvalidSpec,
    ::testing::Values(BadSpec{"int0", "outside 1..16"}, BadSpec{"int17", "outside 1..16"},
                      BadSpec{"uint1:asym", "1-bit"}, BadSpec{"int1", "binary"},
                      BadSpec{"fixed:Q9.9", "19 bits"}, BadSpec{"garbage", "unknown scheme"},
                      BadSpec{"int", "bit width"}, BadSpec{"int4x", "bit width"},
                      BadSpec{"", "empty"}, BadSpec{"int8:wat", "unknown modifier"},
                      BadSpec{"fixed:Q2", "Qm.n"}, BadSpec{"fixed", "Qm.n"},
                      BadSpec{"binary:asym", "asym"}, BadSpec{"log1", "at least 2 bits"},
                      BadSpec{"int8:group=0", "positive"}, BadSpec{"int8:round=up", "rounding"},
                      BadSpec{"int4:pact", "pact"}, BadSpec{"log4:lsq", "binary/ternary"}, BadSpec{"fixed:Q2.5:lsq", "use int8:lsq"}, BadSpec{"ufixed:Q3.4:lsq", "use uint7:lsq"},
                      BadSpec{"float:per_channel", "no modifiers"},
                      BadSpec{"int8:threshold=0.3", "ternary only"},
                      BadSpec{"uint2:narrow", "narrow"}, BadSpec{"auto1", "at least 2 bits"},
                      BadSpec{"auto4:pact", "pact"}, BadSpec{"auto8:narrow", "narrow"},
                      BadSpec{"auto", "bit width"}, BadSpec{"fp8", "exponent and mantissa"},
                      BadSpec{"fp8:e4m4", "needs 1 + 4 + 4 = 9"}, BadSpec{"fp11:e9m1", "outside 1 <= X <= 8"},
                      BadSpec{"fp13:e1m11", "outside"}, BadSpec{"fp8:e4x3", "eXmY"},
                      BadSpec{"fp8:e4m3:asym", "asym"}, BadSpec{"fp8:e4m3:round=floor", "nearest even"},
                      BadSpec{"fp8:e4m3:narrow", "narrow"}, BadSpec{"fp8:e4m3:pact", "pact"},
                      BadSpec{"fp1:e1m0", "needs 1 + 1 + 0 = 2"}, BadSpec{"mxfp8", "element format"},
                      BadSpec{"mxfp8:e4m4", "1 + X + Y = 8"}, BadSpec{"nvfp4:per_channel", "block format"},
                      BadSpec{"mxint8:lsq", "block format"}, BadSpec{"int8:block=16", "use group=K"},
                      BadSpec{"mxfp4:block=0", "positive"}, BadSpec{"mxint1", "2..16"},
                      BadSpec{"lut2:levels=-1/0/1", "4 levels, 3 given"}, BadSpec{"lut1:levels=1/-1", "ascending"},
                      BadSpec{"int4:levels=0/1", "lutN spec only"}, BadSpec{"lut1:levels=0/x", "numbers"}));

TEST(QuantSpec, CodebookLevelsPrintBackExactly) {
  const QuantSpec s = parse_spec("lut2:levels=-1/-0.123456789012/0.25/1:per_channel");
  EXPECT_EQ(s.levels, (std::vector<double>{-1, -0.123456789012, 0.25, 1}));
  EXPECT_EQ(s.str(), "lut2:per_channel:levels=-1/-0.123456789012/0.25/1");
  EXPECT_EQ(parse_spec(s.str()).levels, s.levels);
  EXPECT_EQ(parse_spec("nf4").str(), "nf4");
  EXPECT_EQ(parse_spec("LUT3:lsq").str(), "lut3:lsq");
}

TEST(QuantSpec, BlockFormatsParsePrintBackAndKeepTheirAxisApartFromPerChannel) {
  struct Case {
    const char* text;
    const char* canonical;
    Scheme scheme;
    int bits, e, m, block;
  };
  for (const Case& c : {Case{"mxfp8:e4m3", "mxfp8:e4m3", Scheme::kMx, 8, 4, 3, 32},
                        Case{"MXFP8:E5M2:block=16", "mxfp8:e5m2:block=16", Scheme::kMx, 8, 5, 2, 16},
                        Case{"mxfp6:e3m2", "mxfp6:e3m2", Scheme::kMx, 6, 3, 2, 32},
                        Case{"mxfp6:e2m3", "mxfp6:e2m3", Scheme::kMx, 6, 2, 3, 32},
                        Case{"mxfp4", "mxfp4", Scheme::kMx, 4, 2, 1, 32},
                        Case{"mxfp4:e2m1", "mxfp4", Scheme::kMx, 4, 2, 1, 32},
                        Case{"mxint8", "mxint8", Scheme::kMx, 8, 0, 8, 32},
                        Case{"nvfp4", "nvfp4", Scheme::kNvfp4, 4, 2, 1, 16},
                        Case{"nvfp4:axis=0:block=32", "nvfp4:block=32:axis=0", Scheme::kNvfp4, 4, 2, 1, 32}}) {
    const QuantSpec s = parse_spec(c.text);
    EXPECT_EQ(s.scheme, c.scheme) << c.text;
    EXPECT_EQ(s.str(), c.canonical) << c.text;
    EXPECT_EQ(parse_spec(s.str()), s) << c.text;
    EXPECT_EQ(s.bits, c.bits) << c.text;
    EXPECT_EQ(s.exp_bits, c.e) << c.text;
    EXPECT_EQ(s.man_bits, c.m) << c.text;
    EXPECT_EQ(s.block, c.block) << c.text;
    EXPECT_TRUE(s.is_block());
    EXPECT_EQ(s.granularity, Granularity::kPerTensor) << c.text;  // axis= names the blocks' axis
  }
}

// fpN:eXmY: the OCP formats and any other width, with the integer specs' modifiers
TEST(QuantSpec, MinifloatsParsePrintBackAndKnowTheirLargestValue) {
  struct Case {
    const char* text;
    int bits, e, m;
    double max;
  };
  for (const Case& c : {Case{"fp8:e4m3", 8, 4, 3, 448}, Case{"fp8:e5m2", 8, 5, 2, 57344},
                        Case{"fp6:e3m2", 6, 3, 2, 28}, Case{"fp6:e2m3", 6, 2, 3, 7.5}, Case{"fp4:e2m1", 4, 2, 1, 6},
                        Case{"fp16:e5m10", 16, 5, 10, 65504}, Case{"bf16", 16, 8, 7, 3.3895313892515355e38},
                        Case{"fp5:e2m2", 5, 2, 2, 7}, Case{"fp3:e1m1", 3, 1, 1, 3}}) {
    const QuantSpec s = parse_spec(c.text);
    EXPECT_EQ(s.scheme, Scheme::kMinifloat) << c.text;
    EXPECT_EQ(s.bits, c.bits) << c.text;
    EXPECT_EQ(s.exp_bits, c.e) << c.text;
    EXPECT_EQ(s.man_bits, c.m) << c.text;
    EXPECT_TRUE(s.is_signed());
    EXPECT_FALSE(s.is_uniform());
    EXPECT_EQ(parse_spec(s.str()), s) << s.str();
    EXPECT_DOUBLE_EQ(minifloat_max(c.e, c.m), c.max) << c.text;
  }
  EXPECT_EQ(parse_spec("bf16").str(), "fp16:e8m7");
  EXPECT_EQ(minifloat_special(4, 3), MinifloatSpecial::kNanOnly);
  EXPECT_EQ(minifloat_special(5, 2), MinifloatSpecial::kIeee);
  EXPECT_EQ(minifloat_special(2, 1), MinifloatSpecial::kNone);
  const QuantSpec g = parse_spec("FP4:E2M1:group=32:lsq");
  EXPECT_EQ(g.str(), "fp4:e2m1:group=32:lsq");
  EXPECT_EQ(g.granularity, Granularity::kPerGroup);
  EXPECT_EQ(parse_spec("fp8:e4m3:per_channel:pow2scale").str(), "fp8:e4m3:pow2scale:per_channel");
}

TEST(QuantSpec, AutoSignIsUnsignedForNonNegativeDataAndAsymmetricSignedOtherwise) {
  const QuantSpec a = parse_spec("auto4:lsq");
  EXPECT_TRUE(a.auto_sign);
  EXPECT_EQ(a.str(), "auto4:lsq");
  EXPECT_EQ(parse_spec(a.str()), a);
  const QuantSpec u = a.resolve_sign(0.0);
  EXPECT_EQ(u.str(), "uint4:lsq");
  EXPECT_FALSE(u.auto_sign);
  EXPECT_EQ(u.qmin(), 0);
  EXPECT_EQ(u.qmax(), 15);
  const QuantSpec s = a.resolve_sign(-1e-6);
  EXPECT_EQ(s.str(), "int4:asym:lsq");
  EXPECT_EQ(s.qmin(), -8);
  // `:sym` keeps the signed case symmetric; it prints back
  const QuantSpec sym = parse_spec("AUTO8:Sym:per_channel");
  EXPECT_EQ(sym.str(), "auto8:sym:per_channel");
  EXPECT_EQ(parse_spec(sym.str()), sym);
  EXPECT_EQ(sym.resolve_sign(-3).str(), "int8:per_channel");
  EXPECT_EQ(sym.resolve_sign(3).str(), "uint8:per_channel");
  EXPECT_NE(parse_spec("auto8"), parse_spec("int8:asym"));  // not the same spec before calibration
  // every other spec resolves to itself
  for (const char* t : {"int8", "uint4", "int8:asym", "binary", "fixed:Q2.5"})
    EXPECT_EQ(parse_spec(t).resolve_sign(-1), parse_spec(t)) << t;
}

}  // namespace
}  // namespace anybit
