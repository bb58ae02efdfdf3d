// The exported integer model format: save/load round trips, and every corrupt or
// inconsistent manifest giving one Error that names the manifest, the field and what was
// expected.
#include "anybit/intsim/model.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "anybit/intsim/test_util.h"

namespace anybit {
namespace intsim {
namespace {

using json = nlohmann::json;
using testing::ModelBuilder;
using testing::TempDir;

Model model_with_every_op(uint64_t seed) {
  ModelBuilder b(seed);
  QuantParams q;
  q.scale = 0.03;
  q.zero_point = 10;
  q.qmin = 0;
  q.qmax = 255;
  const std::string x = b.input("image", {3, 9, 9}, q);
  const std::string c1 = b.conv2d(x, 8, 3, 1, 1, 1, 1, /*relu=*/true);
  const std::string dw = b.conv2d(c1, 8, 3, 1, 1, 1, /*groups=*/8);
  const std::string sum = b.add(c1, dw);
  const std::string r = b.relu(sum);
  const std::string cl = b.clamp(r, 0, 100);
  const std::string mp = b.maxpool(cl, 3, 2, 1, 1, /*ceil_mode=*/true);
  const std::string ap = b.avgpool(c1, 3, 2, 1);
  const std::string cat = b.concat({mp, ap});
  const std::string gap = b.global_avgpool(cat);
  const std::string flat = b.flatten(gap);
  const std::string fc = b.linear(flat, 5, false, /*per_channel=*/true, /*weight_bits=*/12);
  const std::string ad = b.adaptive_avgpool(c1, 5, 2);  // 9x9 -> 5x2: windows of 2 and 3 rows
  b.output(fc);
  b.output(gap);
  b.output(ad);
  b.model.metadata["producer"] = "model_test";
  return b.model;
}

TEST(ModelFormat, SavedModelLoadsBackWithEveryOpAndFieldIntact) {
  TempDir dir("model_roundtrip");
  Model m = model_with_every_op(1);
  save_model(m, dir.path());
  Model loaded = load_model(dir.path());
  validate_model(m, "model");
  EXPECT_EQ(manifest_json(loaded), manifest_json(m));
  ASSERT_EQ(loaded.ops.size(), m.ops.size());
  for (size_t k = 0; k < m.ops.size(); ++k) {
    EXPECT_EQ(loaded.ops[k].weight.data, m.ops[k].weight.data) << k;
    EXPECT_EQ(loaded.ops[k].weight.dtype, m.ops[k].weight.dtype) << k;
    EXPECT_EQ(loaded.ops[k].bias.data, m.ops[k].bias.data) << k;
  }
  EXPECT_EQ(loaded.metadata.at("producer"), "model_test");
  // loading twice gives the same text: the manifest is a fixed point of save/load
  save_model(loaded, dir.path());
  EXPECT_EQ(manifest_json(load_model(dir.path())), manifest_json(m));
}

TEST(ModelFormat, ManifestIsPlainJsonWithTheDocumentedKeys) {
  TempDir dir("model_keys");
  save_model(model_with_every_op(2), dir.path());
  std::ifstream f(dir.file("manifest.json"));
  const json j = json::parse(f);
  EXPECT_EQ(j["format"], "anybit-int");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["inputs"][0]["name"], "image");
  EXPECT_EQ(j["inputs"][0]["shape"], json::array({3, 9, 9}));
  const json& conv = j["ops"][0];
  EXPECT_EQ(conv["op"], "conv2d");
  EXPECT_EQ(conv["name"], "layer0.conv");
  EXPECT_EQ(conv["inputs"], json::array({"image"}));
  EXPECT_EQ(conv["output"], "layer0.conv:out");
  EXPECT_EQ(conv["weight"], "layer0.conv.weight.npy");
  EXPECT_EQ(conv["bias"], "layer0.conv.bias.npy");
  EXPECT_EQ(conv["m0"].size(), 8u);  // per output channel
  for (const char* key : {"scale", "zero_point", "qmin", "qmax", "weight_scale", "weight_zero_point",
                          "kernel", "stride", "padding", "dilation", "groups", "shift"})
    EXPECT_TRUE(conv.contains(key)) << key;
  EXPECT_EQ(j["ops"][2]["op"], "add");
  EXPECT_EQ(j["ops"][2]["input_m0"].size(), 2u);
  const json& adaptive = j["ops"][11];
  EXPECT_EQ(adaptive["op"], "adaptive_avgpool2d");
  EXPECT_EQ(adaptive["output_size"], json::array({5, 2}));
  EXPECT_EQ(adaptive["m0"].size(), 10u);  // one per output position
  EXPECT_EQ(adaptive["shift"].size(), 10u);
  EXPECT_TRUE(std::filesystem::exists(dir.file("layer10.fc.weight.npy")));
  EXPECT_EQ(read_npy(dir.file("layer10.fc.weight.npy")).dtype, DType::kInt16);
}

// A small hand-written model (conv2d -> relu -> flatten -> linear) that each test below
// breaks in one way.
class CorruptModel : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest = json::parse(R"({
      "format": "anybit-int", "version": 1,
      "inputs": [{"name": "x", "shape": [1, 6, 6], "scale": 0.02, "zero_point": 0, "qmin": -128, "qmax": 127}],
      "ops": [
        {"op": "conv2d", "name": "conv1", "inputs": ["x"], "output": "conv1:out",
         "weight": "conv1.weight.npy", "weight_scale": 0.01, "weight_zero_point": 0,
         "bias": "conv1.bias.npy", "out_channels": 16, "kernel": 3, "padding": 1,
         "m0": 1518500250, "shift": 6, "scale": 0.05, "zero_point": -128, "qmin": -128, "qmax": 127},
        {"op": "relu", "name": "relu1", "inputs": ["conv1:out"], "output": "relu1:out"},
        {"op": "flatten", "name": "flat", "inputs": ["relu1:out"], "output": "flat:out"},
        {"op": "linear", "name": "fc", "inputs": ["flat:out"], "output": "fc:out",
         "weight": "fc.weight.npy", "weight_scale": [0.01, 0.02], "weight_zero_point": [0, 1],
         "out_features": 2, "m0": [1518500250, 1518500250], "shift": [3, 4],
         "scale": 0.1, "zero_point": 0, "qmin": -128, "qmax": 127}
      ],
      "outputs": [{"name": "fc:out", "scale": 0.1, "zero_point": 0}]
    })");
    write_npy(dir.file("conv1.weight.npy"), NpyArray::from_ints(DType::kInt8, {16, 1, 3, 3}, std::vector<int32_t>(144, 3), "w"));
    write_npy(dir.file("conv1.bias.npy"), NpyArray::from_ints(DType::kInt32, {16}, std::vector<int32_t>(16, -7), "b"));
    write_npy(dir.file("fc.weight.npy"), NpyArray::from_ints(DType::kInt8, {2, 576}, std::vector<int32_t>(1152, -2), "w"));
  }

  void write_manifest() {
    std::ofstream(dir.file("manifest.json")) << manifest.dump(1);
  }

  // The message of the Error load_model throws ("(no error)" if none).
  std::string load_error() {
    write_manifest();
    try {
      load_model(dir.path());
    } catch (const Error& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("(not an anybit::Error: ") + e.what() + ")";
    }
    return "(no error)";
  }

  // Expects "<dir>/manifest.json: <field>: ...<text>...".
  void expect_error(const std::string& field, const std::string& text) {
    const std::string e = load_error();
    EXPECT_EQ(e.rfind(dir.file("manifest.json") + ": " + field + ": ", 0), 0u) << e;
    EXPECT_NE(e.find(text), std::string::npos) << e;
  }

  TempDir dir{"corrupt_model"};
  json manifest;
};

TEST_F(CorruptModel, TheUnbrokenModelLoads) { EXPECT_EQ(load_error(), "(no error)"); }

TEST_F(CorruptModel, MissingManifestIsAnErrorNamingIt) {
  TempDir empty("empty_model");
  try {
    load_model(empty.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json: no such file"), std::string::npos) << e.what();
  }
}

TEST_F(CorruptModel, InvalidJsonIsAnErrorNamingTheManifest) {
  std::ofstream(dir.file("manifest.json")) << "{\"format\": ";
  try {
    load_model(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json: not valid JSON"), std::string::npos) << e.what();
  }
}

TEST_F(CorruptModel, ManifestNamingAMissingArrayNamesTheFieldAndTheFile) {
  manifest["ops"][3]["weight"] = "fc.weights.npy";
  expect_error("ops[3].weight", "fc.weights.npy: no such file");
}

TEST_F(CorruptModel, WeightWithTheWrongShapeSaysWhichShapeWasExpected) {
  write_npy(dir.file("conv1.weight.npy"), NpyArray::from_ints(DType::kInt32, {16, 3, 3}, std::vector<int32_t>(144, 1), "w"));
  expect_error("ops[0].weight",
               "expected an int8, int16 or int32 array of shape [16,1,3,3], got int32 [16,3,3]");
}

TEST_F(CorruptModel, WeightStoredAsFloatIsAWrongDtype) {
  write_npy(dir.file("conv1.weight.npy"), NpyArray::from_doubles(DType::kFloat32, {16, 1, 3, 3}, std::vector<double>(144, 0.5)));
  expect_error("ops[0].weight", "got float32 [16,1,3,3]");
}

TEST_F(CorruptModel, TruncatedWeightFileIsAnErrorNamingTheFieldAndTheFile) {
  std::vector<uint8_t> bytes = read_file_bytes(dir.file("fc.weight.npy"));
  bytes.resize(bytes.size() - 100);
  write_file_atomic(dir.file("fc.weight.npy"), bytes.data(), bytes.size());
  expect_error("ops[3].weight", "fc.weight.npy: truncated data");
}

TEST_F(CorruptModel, ArrayFileThatIsNotNpyIsAnError) {
  std::ofstream(dir.file("conv1.bias.npy")) << "not numpy";
  expect_error("ops[0].bias", "bad magic");
}

TEST_F(CorruptModel, UnknownOpListsTheKnownOnes) {
  manifest["ops"][1]["op"] = "gelu";
  expect_error("ops[1].op", "unknown op 'gelu' (expected one of: conv2d, linear, add, relu");
}

TEST_F(CorruptModel, UnknownTensorNameIsAnError) {
  manifest["ops"][2]["inputs"] = {"relu:out"};
  expect_error("ops[2].inputs[0]", "unknown tensor 'relu:out'");
}

TEST_F(CorruptModel, OpsOutOfTopologicalOrderAreAnError) {
  std::swap(manifest["ops"][1], manifest["ops"][2]);
  expect_error("ops[1].inputs[0]", "unknown tensor 'relu1:out'");
}

TEST_F(CorruptModel, TensorDefinedTwiceIsAnError) {
  manifest["ops"][1]["output"] = "conv1:out";
  expect_error("ops[1].output", "tensor 'conv1:out' is already defined");
}

TEST_F(CorruptModel, MisspeltFieldIsAnErrorInsteadOfBeingIgnored) {
  manifest["ops"][0]["strides"] = 2;
  expect_error("ops[0].strides", "unknown field");
}

TEST_F(CorruptModel, MissingRequiredFieldIsAnError) {
  manifest["ops"][0].erase("out_channels");
  expect_error("ops[0].out_channels", "missing");
}

TEST_F(CorruptModel, IntegerFieldGivenAsAFloatIsAnError) {
  manifest["ops"][0]["zero_point"] = 1.5;
  expect_error("ops[0].zero_point", "expected an integer, got 1.5");
}

TEST_F(CorruptModel, WeightOutsideItsDeclaredRangeIsAnError) {
  manifest["ops"][0]["weight_qmin"] = -2;
  manifest["ops"][0]["weight_qmax"] = 2;
  expect_error("ops[0].weight", "value 3 at index 0 is outside weight_qmin..weight_qmax [-2, 2]");
}

TEST_F(CorruptModel, BiasThatIsNotInt32IsAnError) {
  write_npy(dir.file("conv1.bias.npy"), NpyArray::from_ints(DType::kInt16, {16}, std::vector<int32_t>(16, 1), "b"));
  expect_error("ops[0].bias", "expected an int32 array of shape [16], got int16 [16]");
}

TEST_F(CorruptModel, ShiftOutsideItsRangeIsAnError) {
  manifest["ops"][3]["shift"] = {3, 40};
  expect_error("ops[3].shift[1]", "40 is outside the allowed range [-31, 31]");
}

TEST_F(CorruptModel, NegativeM0IsAnError) {
  manifest["ops"][0]["m0"] = -5;
  expect_error("ops[0].m0", "-5 is outside the allowed range [0, 2147483647]");
}

TEST_F(CorruptModel, PerChannelListsOfTheWrongLengthAreErrors) {
  manifest["ops"][3]["weight_zero_point"] = {0, 0, 0};
  expect_error("ops[3].weight_zero_point", "expected 1 or 2 values, got 3");
}

TEST_F(CorruptModel, M0AndShiftListsOfDifferentLengthsAreAnError) {
  manifest["ops"][3]["shift"] = 3;
  expect_error("ops[3].shift", "1 values, but m0 has 2");
}

TEST_F(CorruptModel, GroupsThatDoNotDivideTheChannelsAreAnError) {
  manifest["ops"][0]["groups"] = 3;
  expect_error("ops[0].groups", "3 must divide the 1 input channels and the 16 output channels");
}

TEST_F(CorruptModel, KernelLargerThanThePaddedInputIsAnError) {
  manifest["ops"][0]["kernel"] = 9;
  expect_error("ops[0].kernel", "larger than the padded input [1,6,6]");
}

TEST_F(CorruptModel, LinearOnAnUnflattenedInputIsAnError) {
  manifest["ops"][3]["inputs"] = {"relu1:out"};
  expect_error("ops[3].inputs[0]", "linear needs a [features] input, 'relu1:out' has shape [16,6,6]");
}

TEST_F(CorruptModel, AddLeftShiftThatWouldOverflowIsAnError) {
  manifest["ops"].insert(manifest["ops"].begin() + 2, json::parse(R"(
    {"op": "add", "name": "res", "inputs": ["conv1:out", "relu1:out"], "output": "res:out",
     "input_m0": [1073741824, 1073741824], "input_shift": [1, 1], "left_shift": 24,
     "m0": 1073741824, "shift": 20, "scale": 0.1, "zero_point": 0, "qmin": -128, "qmax": 127})"));
  expect_error("ops[2].left_shift", "24 overflows int32 for input 'conv1:out' (range [-128, 127], zero point -128)");
}

TEST_F(CorruptModel, AdaptivePoolNeedsItsOutputSizeAndOneMultiplierPerPositionOrOne) {
  manifest["ops"].push_back(json::parse(R"(
    {"op": "adaptive_avgpool2d", "name": "pool", "inputs": ["relu1:out"], "output": "pool:out",
     "output_size": [4, 3], "m0": [1073741824, 1073741824], "shift": [3, 4],
     "scale": 0.05, "zero_point": 0, "qmin": -128, "qmax": 127})"));
  expect_error("ops[4].m0", "expected 1 or 12 multipliers, got 2");
  manifest["ops"][4]["m0"] = 1073741824;
  manifest["ops"][4]["shift"] = 3;
  EXPECT_EQ(load_error(), "(no error)");
  manifest["ops"][4]["output_size"] = {4, 0};
  expect_error("ops[4].output_size", "0 is outside the allowed range");
  manifest["ops"][4].erase("output_size");
  expect_error("ops[4].output_size", "missing");
  manifest["ops"][4]["output_size"] = 2;
  manifest["ops"][4]["inputs"] = {"flat:out"};
  expect_error("ops[4].inputs[0]", "adaptive_avgpool2d needs a [C,H,W] input");
}

TEST_F(CorruptModel, NewerFormatVersionIsAnError) {
  manifest["version"] = 2;
  expect_error("version", "newer than this engine reads (1)");
}

TEST_F(CorruptModel, WrongFormatNameIsAnError) {
  manifest["format"] = "tflite";
  expect_error("format", "expected \"anybit-int\"");
}

TEST_F(CorruptModel, ArrayPathLeavingTheModelDirectoryIsAnError) {
  manifest["ops"][0]["weight"] = "../conv1.weight.npy";
  expect_error("ops[0].weight", "must not leave the model directory");
  manifest["ops"][0]["weight"] = "/etc/passwd";
  expect_error("ops[0].weight", "must be a relative path");
}

TEST_F(CorruptModel, DerivedFieldsThatContradictTheModelAreErrors) {
  manifest["ops"][1]["zero_point"] = 5;
  expect_error("ops[1].zero_point", "5 does not match the zero_point -128 of tensor 'relu1:out'");
  manifest["ops"][1].erase("zero_point");
  manifest["outputs"][0]["scale"] = 0.2;
  expect_error("outputs[0].scale", "does not match the scale");
}

TEST_F(CorruptModel, OutputNamingAnUnknownTensorIsAnError) {
  manifest["outputs"][0]["name"] = "logits";
  expect_error("outputs[0].name", "unknown tensor 'logits'");
}

TEST_F(CorruptModel, InputZeroPointTooFarFromItsRangeIsAnError) {
  manifest["inputs"][0]["zero_point"] = -2147483648LL;
  manifest["inputs"][0]["qmax"] = 2147483647LL;
  expect_error("inputs[0].zero_point", "q - zero_point must fit in int32");
}

TEST_F(CorruptModel, EveryTruncationOfTheManifestIsAnErrorNeverACrash) {
  const std::string text = manifest.dump();
  const auto loader = [this](const std::string& f) { return read_npy(dir.file(f)); };
  ASSERT_NO_THROW(parse_manifest(text, "m.json", loader));
  for (size_t n = 0; n < text.size(); n += 3) {
    try {
      parse_manifest(text.substr(0, n), "m.json", loader);
      FAIL() << "prefix of " << n << " bytes loaded";
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind("m.json: ", 0), 0u) << e.what();
    }
  }
}

TEST_F(CorruptModel, EveryFieldReplacedByAWrongTypeIsAnError) {
  // Each op field set to a string, a list of strings and an object: an Error, never a crash.
  const json original = manifest;
  for (size_t k = 0; k < original["ops"].size(); ++k) {
    for (auto it = original["ops"][k].begin(); it != original["ops"][k].end(); ++it) {
      for (const json& bad : {json("zzz"), json::array({"a", "b"}), json::object({{"a", 1}}), json(nullptr)}) {
        // a different string is still a valid name
        if (bad.is_string() && (it.key() == "name" || it.key() == "output")) continue;
        manifest = original;
        manifest["ops"][k][it.key()] = bad;
        const std::string e = load_error();
        EXPECT_EQ(e.rfind(dir.file("manifest.json") + ": ops[" + std::to_string(k) + "]", 0), 0u)
            << it.key() << " = " << bad.dump() << ": " << e;
      }
    }
  }
}

TEST(ModelFormat, SaveRefusesAnInvalidModel) {
  TempDir dir("model_invalid");
  Model m = model_with_every_op(3);
  m.ops[0].weight.data[0] = 1000;  // outside its int8 range
  EXPECT_THROW(save_model(m, dir.path()), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.file("manifest.json")));
}

TEST(ModelFormat, SaveRefusesArrayFileNamesOutsideTheDirectory) {
  TempDir dir("model_escape");
  Model m = model_with_every_op(5);
  m.ops[0].weight.file = "../escaped.npy";
  EXPECT_THROW(save_model(m, dir.path()), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/../escaped.npy"));
}

TEST(ModelFormat, ArrayFileNamesComeFromOpNamesAndStayUnique) {
  TempDir dir("model_names");
  Model m = model_with_every_op(4);
  m.ops[0].name = "features/0:conv";
  m.ops[1].name = "features_0_conv";  // sanitizes to the same stem
  save_model(m, dir.path());
  EXPECT_TRUE(std::filesystem::exists(dir.file("features_0_conv.weight.npy")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("features_0_conv.weight_2.npy")));
  EXPECT_NO_THROW(load_model(dir.path()));
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
