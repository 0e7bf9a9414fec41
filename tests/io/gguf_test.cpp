// GGUF: files assembled byte by byte (independent of our writer), block codecs
// against values computed by hand, writer round trips, and corrupt files.
#include <gtest/gtest.h>

#include <cstring>

#include "lococo/io/gguf.h"
#include "lococo/model/gguf_llama.h"
#include "lococo/core/io_util.h"
#include "tokenizer/tokenizer_json_fixtures.h"
#include "test_util.h"

namespace lococo {
namespace {

using testing::expect_error;
using testing::TempDir;
using testing::write_bytes;

const std::string kSample = "Call me Ishmael.  Some years ago -- 1851, precisely -- caf\xc3\xa9 \xe2\x80\x9cquotes\xe2\x80\x9d!";

// Little-endian bytes appended one field at a time.
struct Bytes {
  std::string s;
  template <typename T>
  Bytes& put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& v) {
    put<uint64_t>(v.size());
    s += v;
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    while (s.size() % alignment) s.push_back('\0');
    return *this;
  }
};

// Fields of the hand-made file that the corrupt-file tests change.
struct HandMade {
  uint32_t magic = 0x46554747, version = 3;
  uint64_t tensor_count = 1, key_length = 20;  // strlen("general.architecture")
  uint32_t tensor_type = 0;                    // F32
  uint64_t tensor_offset = 0;
  uint64_t data_floats = 8;                    // the tensor needs 8
  uint64_t rows = 2;                           // dims {4, rows}
};

// Three metadata values (a string, an int32 array, an alignment of 64) and one
// F32 tensor "w" of dims {4, 2} (rows of 4) holding 0..7.
std::string hand_made_gguf(const HandMade& h = {}) {
  Bytes b;
  b.put(h.magic).put(h.version).put<uint64_t>(h.tensor_count).put<uint64_t>(3);
  b.put<uint64_t>(h.key_length);
  b.s += "general.architecture";
  b.put<uint32_t>(8).str("llama");
  b.str("test.numbers").put<uint32_t>(9).put<uint32_t>(5).put<uint64_t>(3).put<int32_t>(1).put<int32_t>(-2).put<int32_t>(3);
  b.str("general.alignment").put<uint32_t>(4).put<uint32_t>(64);
  b.str("w").put<uint32_t>(2).put<uint64_t>(4).put<uint64_t>(h.rows).put<uint32_t>(h.tensor_type).put<uint64_t>(h.tensor_offset);
  b.pad_to(64);
  for (uint64_t i = 0; i < h.data_floats; ++i) b.put<float>(static_cast<float>(i));
  return b.s;
}

TEST(Gguf, HandMadeFileParses) {
  TempDir dir;
  write_bytes(dir / "m.gguf", hand_made_gguf());
  GgufFile f(dir / "m.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.at("general.architecture").value, "llama");
  const auto& numbers = f.at("test.numbers");
  EXPECT_EQ(numbers.type, GgufValueType::kArray);
  EXPECT_EQ(numbers.element_type, GgufValueType::kInt32);
  EXPECT_EQ(numbers.value, nlohmann::json({1, -2, 3}));
  ASSERT_EQ(f.tensors().size(), 1u);
  torch::Tensor w = f.tensor("w");
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 4}));  // ggml dims {4, 2} are 2 rows of 4
  EXPECT_TRUE(torch::equal(w, torch::arange(8, torch::kFloat32).view({2, 4})));
}

TEST(Gguf, Q8_0BlockDequantisesToHandComputedValues) {
  // d = 0.5 (f16 0x3800), q_j = j - 16: value j = 0.5 * (j - 16).
  Bytes b;
  b.put<uint16_t>(0x3800);
  for (int j = 0; j < 32; ++j) b.put<int8_t>(static_cast<int8_t>(j - 16));
  ASSERT_EQ(b.s.size(), 34u);
  float out[32];
  dequantize_q8_0(reinterpret_cast<const uint8_t*>(b.s.data()), 32, out);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.5f * static_cast<float>(j - 16)) << j;
}

TEST(Gguf, Q4_0BlockDequantisesToHandComputedValues) {
  // d = 2 (f16 0x4000); byte j holds value j in its low nibble, 15 - j in its high
  // one: value j = 2 * (j - 8), value j + 16 = 2 * (15 - j - 8).
  Bytes b;
  b.put<uint16_t>(0x4000);
  for (int j = 0; j < 16; ++j) b.put<uint8_t>(static_cast<uint8_t>(j | ((15 - j) << 4)));
  ASSERT_EQ(b.s.size(), 18u);
  float out[32];
  dequantize_q4_0(reinterpret_cast<const uint8_t*>(b.s.data()), 32, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * static_cast<float>(j - 8)) << j;
    EXPECT_EQ(out[j + 16], 2.0f * static_cast<float>(7 - j)) << j;
  }
}

TEST(Gguf, QuantisersStayWithinTheirStep) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({4 * 32});
  float back[128];
  auto q8 = quantize_q8_0(x.data_ptr<float>(), 128);
  dequantize_q8_0(q8.data(), 128, back);
  auto q4 = quantize_q4_0(x.data_ptr<float>(), 128);
  float back4[128];
  dequantize_q4_0(q4.data(), 128, back4);
  for (int b = 0; b < 4; ++b) {
    const float amax = x.narrow(0, b * 32, 32).abs().max().item<float>();
    for (int j = b * 32; j < (b + 1) * 32; ++j) {
      const float v = x[j].item<float>();
      EXPECT_LE(std::fabs(back[j] - v), amax / 127 * 0.5f * 1.01f) << j;  // step amax/127 (+ f16 scale rounding)
      // Q4_0 maps the largest magnitude to -8, so the opposite end clamps at 7: one full step amax/8 there.
      EXPECT_LE(std::fabs(back4[j] - v), amax / 8 * 1.01f) << j;
    }
  }
}

TEST(Gguf, WriterRoundTripsMetadataAndTensors) {
  TempDir dir;
  torch::manual_seed(1);
  torch::Tensor a = torch::randn({3, 64}), b = torch::randn({64}), c = torch::randn({2, 32});
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("llama.block_count", GgufValue::u32(2));
  w.set("llama.rope.freq_base", GgufValue::f32(10000.0));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.ggml.tokens", GgufValue::array(GgufValueType::kString, {"<unk>", "a", "\xe2\x96\x81" "b"}));
  w.add_tensor("a", a, GgmlType::kF32);
  w.add_tensor("b", b, GgmlType::kF16);
  w.add_tensor("c", c, GgmlType::kQ8_0);
  w.add_tensor("d", a, GgmlType::kBF16);
  w.add_tensor("e", c, GgmlType::kQ4_0);
  w.write(dir / "x.gguf");

  GgufFile f(dir / "x.gguf");
  EXPECT_EQ(f.metadata().size(), 5u);
  EXPECT_EQ(f.at("llama.block_count").value, 2);
  EXPECT_EQ(f.at("llama.block_count").type, GgufValueType::kUint32);
  EXPECT_EQ(f.at("llama.rope.freq_base").value, 10000.0);
  EXPECT_EQ(f.at("tokenizer.ggml.add_bos_token").value, true);
  EXPECT_EQ(f.at("tokenizer.ggml.tokens").value[2], "\xe2\x96\x81" "b");
  EXPECT_TRUE(torch::equal(f.tensor("a"), a));
  EXPECT_TRUE(torch::equal(f.tensor("b"), b.to(torch::kFloat16)));
  EXPECT_TRUE(torch::equal(f.tensor("d"), a.to(torch::kBFloat16)));
  std::vector<float> q8(64), q4(64);
  dequantize_q8_0(quantize_q8_0(c.data_ptr<float>(), 64).data(), 64, q8.data());
  dequantize_q4_0(quantize_q4_0(c.data_ptr<float>(), 64).data(), 64, q4.data());
  EXPECT_TRUE(torch::equal(f.tensor("c"), torch::tensor(q8).view({2, 32})));
  EXPECT_TRUE(torch::equal(f.tensor("e"), torch::tensor(q4).view({2, 32})));
  for (const auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  EXPECT_EQ(std::filesystem::file_size(dir / "x.gguf") % 32, 0u);  // the last tensor is padded too, as ggml writes it
}

TEST(Gguf, Q4_0RoundsAsGgmlDoes) {
  // The largest magnitude -8 makes d = 1; ggml rounds x + 8.5 down, so -2.5
  // lands on -2 (level 6), where rounding half away from zero would give -3.
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f, x[1] = -2.5f, x[2] = 2.5f, x[3] = 0.49f, x[4] = 7.9f;
  std::vector<float> back(32);
  dequantize_q4_0(quantize_q4_0(x.data(), 32).data(), 32, back.data());
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[1], -2.0f);
  EXPECT_EQ(back[2], 3.0f);
  EXPECT_EQ(back[3], 0.0f);
  EXPECT_EQ(back[4], 7.0f);  // level 15 at most
}

TEST(Gguf, CorruptFilesGiveClearErrors) {
  TempDir dir;
  const auto path = dir / "bad.gguf";
  auto expect_bad = [&](const std::string& bytes, std::initializer_list<std::string> parts) {
    write_bytes(path, bytes);
    expect_error([&] { GgufFile f(path); }, parts);
  };
  HandMade h;
  h.magic = 0x4c4c4747;
  expect_bad(hand_made_gguf(h), {"bad.gguf", "bad magic"});
  h = {};
  h.version = 1;
  expect_bad(hand_made_gguf(h), {"unsupported GGUF version 1"});
  h = {};
  h.tensor_count = uint64_t{1} << 40;
  expect_bad(hand_made_gguf(h), {"tensor count", "cannot fit"});
  h = {};
  h.key_length = ~uint64_t{0} - 4;  // length + position overflows 64 bits
  expect_bad(hand_made_gguf(h), {"truncated", "metadata key 0"});
  h = {};
  h.data_floats = 5;
  expect_bad(hand_made_gguf(h), {"tensor 'w'", "beyond the end of the file"});
  h = {};
  h.tensor_offset = 8;
  expect_bad(hand_made_gguf(h), {"tensor 'w'", "not a multiple of the alignment 64"});
  h = {};
  h.tensor_type = 99;
  expect_bad(hand_made_gguf(h), {"tensor 'w'", "unsupported ggml type 99"});
  h = {};
  h.rows = uint64_t{1} << 40;  // 2^42 floats: more than the file holds (and their byte count would overflow)
  expect_bad(hand_made_gguf(h), {"tensor 'w'", "need more bytes than the file has"});
  h = {};
  h.tensor_type = 2;  // Q4_0 needs dims[0] % 32 == 0: 4 is not
  expect_bad(hand_made_gguf(h), {"tensor 'w'", "not a multiple of Q4_0's block of 32"});
  const std::string whole = hand_made_gguf();
  for (size_t cut : {size_t{3}, size_t{30}, size_t{100}, whole.size() - 1})
    expect_bad(whole.substr(0, cut), {"bad.gguf"});
  expect_bad("", {"empty"});
}

// A model directory with a trained tokenizer and weights spread wider than the
// 0.02 default (so logits differ between tokens), for the model-level tests.
LoadedModel spread_model_dir(const std::filesystem::path& dir, ModelConfig c) {
  c.vocab_size = 512;
  init_model_dir(dir, c, 3);
  save_model_dir(dir, testing::random_model(c, 5));
  return load_model_dir(dir);
}

SentencePieceModel tokenizer_of(const std::filesystem::path& dir) {
  return SentencePieceModel::parse(read_text_file(dir / "tokenizer.model"), "tokenizer.model");
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.to_json(), b.to_json());
}

TEST(GgufModel, ExportReadsBackToIdenticalTensorsConfigAndLogits) {
  TempDir dir;
  for (bool qwen : {false, true}) {
    SCOPED_TRACE(qwen ? "qwen2" : "llama");
    ModelConfig c = testing::tiny_config();
    if (qwen) {
      c.architecture = "Qwen2ForCausalLM";
      c.attention_bias = true;
      c.tie_word_embeddings = true;
    }
    const auto model_dir = dir / (qwen ? "qwen" : "llama");
    LoadedModel src = spread_model_dir(model_dir, c);
    export_gguf(*src.model, tokenizer_of(model_dir), dir / "m.gguf", GgmlType::kF32, "test");
    LoadedModel back = load_model_dir(dir / "m.gguf");
    EXPECT_EQ(back.format, "GGUF v3");
    expect_same_config(src.model->config(), back.model->config());
    LlamaWeights a = src.model->weights(), b = back.model->weights();
    auto na = a.named(src.model->config()), nb = b.named(back.model->config());
    ASSERT_EQ(na.size(), nb.size());
    for (size_t i = 0; i < na.size(); ++i) EXPECT_TRUE(torch::equal(*na[i].second, *nb[i].second)) << na[i].first;
    const auto tokens = src.tokenizer->encode(kSample, true);
    EXPECT_EQ(back.tokenizer->encode(kSample, true), tokens);
    EXPECT_EQ(back.tokenizer->decode(tokens), src.tokenizer->decode(tokens));
    torch::Tensor t = torch::tensor(tokens).unsqueeze(0);
    EXPECT_TRUE(torch::equal(src.model->forward(t, nullptr), back.model->forward(t, nullptr)));
  }
}

TEST(GgufModel, Llama3ScalingTravelsAsRopeFreqsAndBiasesAsTensors) {
  // As llama.cpp's converter writes Llama 3.1: no scaling metadata, the
  // per-frequency divisors in rope_freqs.weight. head_dim 8: wavelengths 6.3,
  // 63, 628, 6283 against 1000 / 4 and 1000 / 1 hit all three regimes.
  TempDir dir;
  ModelConfig c = testing::tiny_config();
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position = 1000;
  c.attention_bias = true;  // a Llama with q/k/v biases: found again from the tensors
  LoadedModel src = spread_model_dir(dir / "m", c);
  export_gguf(*src.model, tokenizer_of(dir / "m"), dir / "m.gguf", GgmlType::kF32, "test");
  GgufFile f(dir / "m.gguf");
  EXPECT_FALSE(f.has("llama.rope.scaling.type"));
  ASSERT_NE(f.find("rope_freqs.weight"), nullptr);
  const torch::Tensor divisors = f.tensor("rope_freqs.weight");
  ASSERT_EQ(divisors.numel(), 4);
  EXPECT_FLOAT_EQ(divisors[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(divisors[1].item<float>(), 1.0f);
  const double smooth = (1000 / (2 * M_PI / 0.01) - 1.0) / 3.0;  // the blend at wavelength 628
  EXPECT_NEAR(divisors[2].item<float>(), 1.0 / ((1 - smooth) / 8 + smooth), 1e-5);
  EXPECT_FLOAT_EQ(divisors[3].item<float>(), 8.0f);

  LoadedModel back = load_model_dir(dir / "m.gguf");
  const ModelConfig& bc = back.model->config();
  EXPECT_TRUE(bc.attention_bias);
  EXPECT_EQ(bc.rope_scaling.frequency_divisors.size(), 4u);
  EXPECT_TRUE(torch::equal(back.model->weights().layers[1].k.bias, src.model->weights().layers[1].k.bias));
  const torch::Tensor t = torch::tensor(src.tokenizer->encode(kSample, true)).unsqueeze(0);
  EXPECT_TRUE(torch::allclose(src.model->forward(t, nullptr), back.model->forward(t, nullptr), 1e-4, 1e-5));
  // Saved as a directory, the divisors survive config.json.
  EXPECT_EQ(ModelConfig::from_json(bc.to_json(), "config.json").rope_scaling.frequency_divisors,
            bc.rope_scaling.frequency_divisors);
  nlohmann::json j = bc.to_json();
  j["rope_frequency_divisors"] = {1.0, 2.0};
  expect_error([&] { ModelConfig::from_json(j, "config.json"); }, {"config.json", "rope_frequency_divisors has 2 values"});
}

TEST(GgufModel, ByteLevelTokenizerJsonExportsAsGpt2) {
  // A model directory whose tokenizer is a Llama 3 style tokenizer.json (17 tokens, 512 embedding rows).
  TempDir dir;
  spread_model_dir(dir / "m", testing::tiny_config());
  std::filesystem::remove(dir / "m" / "tokenizer.model");
  testing::write_bytes(dir / "m" / "tokenizer.json", testing::llama3_style().dump());
  testing::write_bytes(dir / "m" / "tokenizer_config.json", R"({"add_bos_token": true})");
  LoadedModel src = load_model_dir(dir / "m");
  export_gguf(*src.model, gguf_tokenizer_of_dir(dir / "m", src.model->config()), dir / "m.gguf", GgmlType::kF32, "t");

  GgufFile f(dir / "m.gguf");
  EXPECT_EQ(f.at("tokenizer.ggml.model").value, "gpt2");
  EXPECT_EQ(f.at("tokenizer.ggml.pre").value, "llama-bpe");
  EXPECT_EQ(f.at("tokenizer.ggml.add_bos_token").value, true);
  const auto& tokens = f.at("tokenizer.ggml.tokens").value;
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[14], "'S");
  EXPECT_EQ(tokens[15], "<|begin_of_text|>");
  EXPECT_EQ(tokens[17], "[PAD17]");
  EXPECT_EQ(f.at("tokenizer.ggml.token_type").value[15], SentencePieceModel::kControl);
  EXPECT_EQ(f.at("tokenizer.ggml.token_type").value[17], SentencePieceModel::kUnused);
  EXPECT_EQ(f.at("tokenizer.ggml.merges").value, nlohmann::json::array({"' S"}));  // from the pair form

  LoadedModel back = load_model_dir(dir / "m.gguf");
  const std::string text = "HI'S 12345\n\n";
  EXPECT_EQ(back.tokenizer->encode(text, true), src.tokenizer->encode(text, true));
  EXPECT_EQ(back.tokenizer->encode("<|begin_of_text|>HI"), (std::vector<int64_t>{15, 13}));
  EXPECT_EQ(back.tokenizer->decode(src.tokenizer->encode(text)), text);

  // SentencePiece-style tokenizer.json has no gpt2 form: refused by name.
  expect_error([&] { gguf_tokenizer_from_json(testing::llama2_style(), "tok.json", 512, 1, 2, true); },
               {"tok.json", "pre-tokenizer"});
}

TEST(GgufModel, LlamaQAndKRowsAreStoredInLlamaCppsRopeOrder) {
  // Within each head of d rows, GGUF row 2i + j holds Hugging Face row j * d/2 + i.
  TempDir dir;
  ModelConfig c = testing::tiny_config(4, 2);
  LoadedModel src = spread_model_dir(dir / "m", c);
  export_gguf(*src.model, tokenizer_of(dir / "m"), dir / "m.gguf", GgmlType::kF32, "test");
  GgufFile f(dir / "m.gguf");
  const auto& layer = src.model->weights().layers[1];
  const int64_t d = c.head_dim;
  for (auto [name, hf, heads] : {std::tuple{"blk.1.attn_q.weight", layer.q.weight, c.num_heads},
                                 std::tuple{"blk.1.attn_k.weight", layer.k.weight, c.num_kv_heads}}) {
    torch::Tensor g = f.tensor(name);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < d / 2; ++i)
        for (int64_t j = 0; j < 2; ++j)
          EXPECT_TRUE(torch::equal(g[h * d + 2 * i + j], hf[h * d + j * d / 2 + i])) << name << " head " << h << " i " << i;
  }
  EXPECT_TRUE(torch::equal(f.tensor("blk.1.attn_v.weight"), layer.v.weight));  // V is not permuted
}

TEST(GgufModel, QuantisedExportStaysCloseAndKeepsNormsExact) {
  TempDir dir;
  ModelConfig c = testing::tiny_config();
  LoadedModel src = spread_model_dir(dir / "m", c);
  // Largest error as a share of the largest weight: half a step for Q8_0, a full
  // one for Q4_0 (its clamped end), f16's relative rounding.
  for (auto [type, error] : {std::pair{GgmlType::kQ8_0, 0.51 / 127}, std::pair{GgmlType::kQ4_0, 1.01 / 8},
                             std::pair{GgmlType::kF16, 1e-3}}) {
    SCOPED_TRACE(ggml_type_name(type));
    export_gguf(*src.model, tokenizer_of(dir / "m"), dir / "q.gguf", type, "test");
    GgufFile f(dir / "q.gguf");
    EXPECT_EQ(f.find("blk.0.attn_norm.weight")->type, GgmlType::kF32);
    EXPECT_EQ(f.find("blk.0.ffn_up.weight")->type, type);
    LoadedModel back = load_model_dir(dir / "q.gguf");
    const auto& a = src.model->weights().layers[0];
    const auto& b = back.model->weights().layers[0];
    EXPECT_TRUE(torch::equal(a.attn_norm, b.attn_norm));
    const double amax = a.up.weight.abs().max().item<double>();
    EXPECT_LE((a.up.weight - b.up.weight).abs().max().item<double>(), amax * error);
    EXPECT_GT((a.up.weight - b.up.weight).abs().max().item<double>(), 0.0);
  }
}

TEST(GgufModel, SentencePieceModelSurvivesParseAndSerialize) {
  TempDir dir;
  LoadedModel src = spread_model_dir(dir / "m", testing::tiny_config());
  SentencePieceModel m = tokenizer_of(dir / "m");
  EXPECT_EQ(m.model_type, 2);  // BPE, as train-tokenizer makes it
  EXPECT_TRUE(m.byte_fallback);
  EXPECT_EQ(m.pieces[0].type, SentencePieceModel::kUnknown);
  EXPECT_EQ(m.pieces[1].text, "<s>");
  EXPECT_FALSE(m.precompiled_charsmap.empty());
  SentencePieceTokenizer again(m.serialize(), "re-serialized");
  EXPECT_EQ(again.encode(kSample, true), src.tokenizer->encode(kSample, true));
  expect_error([] { SentencePieceModel::parse("\x0a\xff\xff\xff\x0f", "bad.model"); }, {"bad.model", "runs past the end"});
}

TEST(GgufModel, ByteLevelTokenizerFollowsThePreTokenizerName) {
  TempDir dir;
  auto tokenizer_file = [&](const std::string& pre) {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    w.set("tokenizer.ggml.pre", GgufValue::string(pre));
    w.set("tokenizer.ggml.tokens", GgufValue::array(GgufValueType::kString,
                                                    {"1", "2", "3", "4", "5", "123", "45", "\xc4\xa0", "<|begin_of_text|>"}));
    w.set("tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kInt32, {1, 1, 1, 1, 1, 1, 1, 1, 3}));
    w.set("tokenizer.ggml.merges", GgufValue::array(GgufValueType::kString, {"4 5"}));
    w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(8));
    w.write(dir / (pre + ".gguf"));
    return GgufFile(dir / (pre + ".gguf"));
  };
  // Llama 3: digits in threes, whole pieces taken from the vocabulary (ignore_merges).
  auto llama3 = load_gguf_tokenizer(tokenizer_file("llama-bpe"));
  EXPECT_EQ(llama3->encode("12345 123", true), (std::vector<int64_t>{8, 5, 6, 7, 5}));
  EXPECT_EQ(llama3->decode({8, 5, 6, 7, 5}), "12345 123");
  EXPECT_EQ(llama3->encode("<|begin_of_text|>1"), (std::vector<int64_t>{8, 0}));  // control tokens match verbatim
  // Qwen2: one digit per piece, so "4 5" never meets its pair.
  auto qwen2 = load_gguf_tokenizer(tokenizer_file("qwen2"));
  EXPECT_EQ(qwen2->encode("12345 123"), (std::vector<int64_t>{0, 1, 2, 3, 4, 7, 0, 1, 2}));
  expect_error([&] { load_gguf_tokenizer(tokenizer_file("falcon")); }, {"falcon.gguf", "tokenizer.ggml.pre 'falcon'"});
}

TEST(GgufModel, UnsupportedContentIsRefusedByName) {
  TempDir dir;
  LoadedModel src = spread_model_dir(dir / "m", testing::tiny_config());
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("falcon"));
  w.add_tensor("token_embd.weight", torch::zeros({8, 32}), GgmlType::kF32);
  w.write(dir / "falcon.gguf");
  expect_error([&] { load_model_dir(dir / "falcon.gguf"); }, {"falcon.gguf", "general.architecture 'falcon'"});
  GgufWriter v;
  v.set("general.architecture", GgufValue::string("llama"));
  v.write(dir / "empty.gguf");
  expect_error([&] { load_model_dir(dir / "empty.gguf"); }, {"empty.gguf", "llama.embedding_length"});
  // llama.cpp's qwen2 has square q/o projections and biases: anything else cannot load there.
  ModelConfig q = testing::tiny_config();
  q.architecture = "Qwen2ForCausalLM";
  q.attention_bias = true;
  q.head_dim = 16;  // 4 heads x 16 = 64 != hidden 32
  LoadedModel wide = spread_model_dir(dir / "q", q);
  expect_error([&] { export_gguf(*wide.model, tokenizer_of(dir / "q"), dir / "q.gguf", GgmlType::kF32, "t"); },
               {"export-gguf", "qwen2", "4 x 16 vs 32"});
}

TEST(GgufModel, CliExportsAndInfoReportsTheFormat) {
  TempDir dir;
  spread_model_dir(dir / "m", testing::tiny_config());
  std::string out;
  ASSERT_EQ(testing::run_cli(fmt::format("export-gguf {} {} --type q8_0", (dir / "m").string(), (dir / "m.gguf").string()), &out), 0) << out;
  EXPECT_NE(out.find("Q8_0"), std::string::npos) << out;
  ASSERT_EQ(testing::run_cli("info --json " + (dir / "m.gguf").string(), &out), 0) << out;
  EXPECT_NE(out.find("\"format\": \"GGUF v3\""), std::string::npos) << out;
  EXPECT_NE(testing::run_cli(fmt::format("export-gguf {} {} --type q3_k", (dir / "m").string(), (dir / "x.gguf").string()), &out), 0);
  EXPECT_NE(out.find("--type"), std::string::npos) << out;
}

}  // namespace
}  // namespace lococo
