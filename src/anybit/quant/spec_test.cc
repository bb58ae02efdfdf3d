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
                      BadSpec{"auto", "bit width"}));

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
