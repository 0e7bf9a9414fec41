#include "lococo/tokenizer/chat_template.h"

#include <fstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace lococo {
namespace {

void check_roles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw std::invalid_argument("messages: must hold at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      throw std::invalid_argument(
          fmt::format("messages[{}].role: '{}' is not system, user, assistant or tool", i, r));
  }
}

// Llama 2: the system prompt folds into the first user turn; every finished
// user/assistant exchange is closed by </s><s>.
std::string render_llama2(const std::vector<ChatMessage>& messages) {
  std::string out, system;
  bool open = false;  // an [INST] waits for the assistant
  for (const auto& m : messages) {
    if (m.role == "system") {
      system = m.content;
    } else if (m.role == "user" || m.role == "tool") {  // Llama 2 has no tool turn: a tool's answer is input
      if (!out.empty()) out += "<s>";
      out += "[INST] ";
      if (!system.empty()) out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
      system.clear();
      out += m.content + " [/INST]";
      open = true;
    } else {
      out += " " + m.content + " </s>";
      open = false;
    }
  }
  if (!open) out += (out.empty() ? "" : "<s>") + std::string("[INST]  [/INST]");
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const auto& m : messages)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
  return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

std::string render_chatml(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return out + "<|im_start|>assistant\n";
}

std::string render_plain(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const auto& m : messages) {
    std::string who = m.role;
    who[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(who[0])));
    out += who + ": " + m.content + "\n";
  }
  return out + "Assistant:";
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"llama-2", "llama-3", "chatml", "plain"};
  return names;
}

ChatTemplate chat_template(const std::string& name) {
  if (name == "llama-2") return {name, {"</s>", "[INST]"}};
  if (name == "llama-3") return {name, {"<|eot_id|>", "<|start_header_id|>"}};
  if (name == "chatml") return {name, {"<|im_end|>", "<|im_start|>"}};
  if (name == "plain") return {name, {"\nUser:", "\nSystem:"}};
  throw std::invalid_argument(fmt::format("unknown chat template '{}' (llama-2, llama-3, chatml, plain)", name));
}

std::string detect_chat_template(const std::filesystem::path& dir) {
  std::ifstream in(dir / "tokenizer_config.json");
  if (!in) return "plain";
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string()) return "plain";
  const std::string t = j["chat_template"].get<std::string>();
  if (t.find("<|start_header_id|>") != std::string::npos) return "llama-3";
  if (t.find("<|im_start|>") != std::string::npos) return "chatml";
  if (t.find("[INST]") != std::string::npos) return "llama-2";
  return "plain";
}

std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages) {
  check_roles(messages);
  if (tmpl.name == "llama-2") return render_llama2(messages);
  if (tmpl.name == "llama-3") return render_llama3(messages);
  if (tmpl.name == "chatml") return render_chatml(messages);
  return render_plain(messages);
}

}  // namespace lococo
