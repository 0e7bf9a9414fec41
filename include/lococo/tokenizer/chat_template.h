// Chat templates: turning a list of chat messages into one prompt string.
//
// Built in (`lococo serve --chat-template NAME`):
//   llama-2  [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
//   llama-3  <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ... then the assistant header
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n ... then "<|im_start|>assistant\n"
//   plain    "System: ...\nUser: ...\nAssistant: ..." ending with "Assistant:"
// The BOS token is never written as text: generation adds it as a token.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lococo {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant" | "tool"
  std::string content;
};

struct ChatTemplate {
  std::string name;               // one of chat_template_names()
  std::vector<std::string> stop;  // text that ends the assistant's turn
};

const std::vector<std::string>& chat_template_names();

// Throws std::invalid_argument for a name not in chat_template_names().
ChatTemplate chat_template(const std::string& name);

// The template a model directory asks for: tokenizer_config.json's
// "chat_template" (Hugging Face) recognised by its markers, else "plain".
std::string detect_chat_template(const std::filesystem::path& model_dir);

// Renders `messages` ending with the opening of the assistant's turn. Throws
// std::invalid_argument for an unknown role or an empty list.
std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages);

}  // namespace lococo
