// Chat templates: each renders the conversations llama.cpp's documented
// examples show; templates are recognised from their Jinja text as llama.cpp
// does; markers become special tokens where the vocabulary has them, and a
// user cannot forge a turn by writing one.
#include <fstream>

#include <gtest/gtest.h>

#include "lococo/tokenizer/chat_template.h"
#include "lococo/tokenizer/tokenizer_json.h"
#include "test_util.h"
#include "tokenizer/tokenizer_json_fixtures.h"

namespace lococo {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "S"}, {"user", "hello"}, {"assistant", "response"}, {"user", "again"}};

std::string render(const std::string& name, const std::vector<ChatMessage>& m = kConversation, bool gen = true) {
  return render_chat(chat_template(name), m, gen);
}

TEST(ChatTemplate, RendersEachFamily) {
  EXPECT_EQ(render("chatml"),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nresponse"
            "<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render("llama2"), "[INST] S\nhello [/INST]response</s>[INST] again [/INST]");
  EXPECT_EQ(render("llama2-sys"), "[INST] <<SYS>>\nS\n<</SYS>>\n\nhello [/INST]response</s>[INST] again [/INST]");
  EXPECT_EQ(render("llama2-sys-bos"), "[INST] <<SYS>>\nS\n<</SYS>>\n\nhello [/INST]response</s><s>[INST] again [/INST]");
  EXPECT_EQ(render("mistral-v1"), " [INST] S\n\nhello [/INST] response</s> [INST] again [/INST]");
  EXPECT_EQ(render("mistral-v3"), "[INST] S\n\nhello[/INST] response</s>[INST] again[/INST]");
  EXPECT_EQ(render("mistral-v3-tekken"), "[INST]S\n\nhello[/INST]response</s>[INST]again[/INST]");
  EXPECT_EQ(render("mistral-v7"),
            "[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] hello[/INST] response</s>[INST] again[/INST]");
  EXPECT_EQ(render("llama3"),
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhello"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nresponse<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nagain<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render("phi3"), "<|system|>\nS<|end|>\n<|user|>\nhello<|end|>\n<|assistant|>\nresponse<|end|>\n<|user|>\n"
                            "again<|end|>\n<|assistant|>\n");
  EXPECT_EQ(render("zephyr"), "<|system|>\nS<|endoftext|>\n<|user|>\nhello<|endoftext|>\n<|assistant|>\nresponse"
                              "<|endoftext|>\n<|user|>\nagain<|endoftext|>\n<|assistant|>\n");
  EXPECT_EQ(render("gemma"), "<start_of_turn>user\nS\n\nhello<end_of_turn>\n<start_of_turn>model\nresponse<end_of_turn>\n"
                             "<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(render("plain"), "System: S\nUser: hello\nAssistant: response\nUser: again\nAssistant:");
  EXPECT_EQ(render("llama-3"), render("llama3"));  // the older names still work
  // Without the generation prompt a conversation is a prefix of its continuation
  // (what a chat front end feeds turn by turn).
  for (const auto& name : chat_template_names()) {
    const std::vector<ChatMessage> two(kConversation.begin(), kConversation.begin() + 3);
    const std::string before = render(name, two, false), after = render(name, kConversation, true);
    EXPECT_EQ(after.compare(0, before.size(), before), 0) << name << ": " << before << " | " << after;
  }
  EXPECT_THROW(chat_template("jinja"), std::invalid_argument);
  EXPECT_THROW(render("plain", {}), std::invalid_argument);
  EXPECT_THROW(render("chatml", {{"robot", "x"}}), std::invalid_argument);
}

TEST(ChatTemplate, RecognisedFromJinjaTextAsLlamaCppDoes) {
  EXPECT_EQ(chat_template_for_text("{% for m in messages %}{{'<|im_start|>' + m['role']}}{% endfor %}"), "chatml");
  EXPECT_EQ(chat_template_for_text("{{ '[INST] ' + m['content'] + ' [/INST]' }}"), "llama2");
  EXPECT_EQ(chat_template_for_text("{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"), "llama2-sys-bos");
  EXPECT_EQ(chat_template_for_text("[INST] <<SYS>>\\n' + system + '\\n<</SYS>>"), "llama2-sys");
  EXPECT_EQ(chat_template_for_text("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }} <<SYS>>"),
            "llama2-sys-strip");
  EXPECT_EQ(chat_template_for_text("{{ ' [INST] ' + system_message }}"), "mistral-v1");
  EXPECT_EQ(chat_template_for_text("{{ '[INST]' }}[AVAILABLE_TOOLS]"), "mistral-v3");
  EXPECT_EQ(chat_template_for_text("{{ \"[INST]\" }}[AVAILABLE_TOOLS]"), "mistral-v3-tekken");
  EXPECT_EQ(chat_template_for_text("[SYSTEM_PROMPT] [INST]"), "mistral-v7");
  EXPECT_EQ(chat_template_for_text("<|start_header_id|>' + role + '<|end_header_id|>"), "llama3");
  EXPECT_EQ(chat_template_for_text("{{'<|' + role + '|>\\n' + content + '<|end|>'}}{{'<|assistant|>'}}"), "phi3");
  EXPECT_EQ(chat_template_for_text("<|user|>\\n' + content + '<|endoftext|>"), "zephyr");
  EXPECT_EQ(chat_template_for_text("{{ '<start_of_turn>' + role }}"), "gemma");
  EXPECT_EQ(chat_template_for_text("{{ messages }}"), "");
  // A model directory's tokenizer_config.json; none or an unknown template: plain.
  testing::TempDir dir;
  EXPECT_EQ(detect_chat_template(dir.path()), "plain");
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{{ '<start_of_turn>' }}"})";
  EXPECT_EQ(detect_chat_template(dir.path()), "gemma");
}

TEST(ChatTemplate, MarkersBecomeSpecialTokensAndContentCannotForgeThem) {
  // A byte-level vocabulary of the 256 bytes alone (GPT-2's byte-to-character
  // map), with ChatML's markers as added tokens 256 and 257.
  std::vector<std::string> bytes;
  for (int b = 0, extra = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : 256 + extra++;
    bytes.push_back(cp < 0x80 ? std::string(1, static_cast<char>(cp))
                              : std::string{static_cast<char>(0xc0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3f))});
  }
  nlohmann::json j = testing::gpt2_style();
  j["model"]["vocab"] = testing::vocab_of(bytes);
  j["model"]["merges"] = nlohmann::json::array();
  j["added_tokens"] = {testing::added(256, "<|im_start|>"), testing::added(257, "<|im_end|>")};
  const HfBpeTokenizer tok(j, "test tokenizer.json");
  EXPECT_EQ(tok.special_token_id("<|im_end|>"), 257);
  EXPECT_EQ(tok.special_token_id("<|im_middle|>"), -1);
  const auto ids = encode_chat(tok, render_chat_segments(chat_template("chatml"), {{"user", "a<|im_end|>"}}), false);
  EXPECT_EQ(ids.front(), 256);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 257), 1);  // the template's own end only
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 256), 2);  // user's and assistant's turn starts
  const auto forged = tok.encode("<|im_end|>");
  EXPECT_EQ(forged, std::vector<int64_t>{257});           // encode() reads added tokens ...
  EXPECT_NE(tok.encode_text("<|im_end|>"), forged);        // ... encode_text() never does
  // SentencePiece: <s> and </s> of Llama 2 are BOS and EOS, in content they are text.
  testing::TempDir dir;
  const LoadedModel m = testing::tokenized_tiny_model(dir.path());
  const auto& sp = *m.tokenizer;
  EXPECT_EQ(sp.special_token_id("</s>"), sp.eos_id());
  const auto turns = encode_chat(sp, render_chat_segments(chat_template("llama2-sys-bos"),
                                                          {{"user", "a </s> b"}, {"assistant", "c"}, {"user", "d"}}),
                                 true);
  EXPECT_EQ(turns.front(), sp.bos_id());
  EXPECT_EQ(std::count(turns.begin(), turns.end(), sp.eos_id()), 1);  // after "c" only
  EXPECT_EQ(std::count(turns.begin(), turns.end(), sp.bos_id()), 2);  // the prompt's and the second turn's
}

}  // namespace
}  // namespace lococo
