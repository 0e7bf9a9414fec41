// Chat templates: a list of chat messages as the prompt a chat model was
// trained on. Names and detection follow llama.cpp's (`--chat-template NAME`,
// or recognised from the template text of tokenizer_config.json's
// "chat_template" or a GGUF file's tokenizer.chat_template):
//   chatml             <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n  (ChatML, Qwen)
//   llama2             [INST] {system}\n{user} [/INST]{assistant}</s>[INST] {user} [/INST]
//   llama2-sys         [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]{assistant}</s>[INST] ...
//   llama2-sys-bos     llama2-sys with <s> before every later [INST]
//   llama2-sys-strip   llama2-sys with the content stripped of surrounding whitespace
//   mistral-v1         " [INST] {system}\n\n{user} [/INST] {assistant}</s>"
//   mistral-v3         "[INST] {system}\n\n{user}[/INST] {assistant, stripped}</s>"
//   mistral-v3-tekken  "[INST]{system}\n\n{user}[/INST]{assistant}</s>"
//   mistral-v7         [SYSTEM_PROMPT] {system}[/SYSTEM_PROMPT][INST] {user}[/INST] {assistant}</s>
//   llama3             <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ... assistant header
//   phi3               <|{role}|>\n{content}<|end|>\n ... <|assistant|>\n
//   zephyr             <|{role}|>\n{content}<|endoftext|>\n ... <|assistant|>\n
//   gemma              <start_of_turn>{user|model}\n{content}<end_of_turn>\n ... <start_of_turn>model\n
//                      (the system prompt opens the first user turn)
//   plain              System: ...\nUser: ...\nAssistant:
// A rendering is a list of segments: text, and markers (<|im_start|>, [INST],
// <s>, ...). encode_chat() turns a marker into the vocabulary's special token
// when it has one (<s> and </s> are BOS and EOS), else into its text; message
// content is always encoded as text, so a user cannot forge a turn by writing
// a marker. The BOS that starts a prompt is a token, never text.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant" | "tool"
  std::string content;
};

struct ChatTemplate {
  std::string name;               // one of chat_template_names()
  std::vector<std::string> stop;  // text that ends the assistant's turn
};

struct ChatSegment {
  std::string text;
  bool marker = false;  // a template marker (a special token where the vocabulary has it)
};

const std::vector<std::string>& chat_template_names();

// Throws std::invalid_argument for a name not in chat_template_names() (the
// older spellings llama-2 and llama-3 are accepted).
ChatTemplate chat_template(const std::string& name);

// The template name llama.cpp's rules give a Jinja template text, or "" when
// none applies (or the text is itself a template name).
std::string chat_template_for_text(const std::string& jinja);
// The template a model asks for: a GGUF file's tokenizer.chat_template, or a
// directory's tokenizer_config.json "chat_template"; "plain" when there is
// none or it is not recognised.
std::string detect_chat_template(const std::filesystem::path& model_path);

// The conversation as segments, ending with the opening of the assistant's
// turn when `add_generation_prompt`. Throws std::invalid_argument for an
// unknown role or an empty list.
std::vector<ChatSegment> render_chat_segments(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                                              bool add_generation_prompt = true);
// The segments' text joined (what the template renders as text).
std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt = true);
// Token ids of segments (see above); BOS first when `add_bos`.
std::vector<int64_t> encode_chat(const Tokenizer& tokenizer, const std::vector<ChatSegment>& segments, bool add_bos);

}  // namespace lococo
