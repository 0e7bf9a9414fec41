#include "lococo/tokenizer/chat_template.h"

#include <fstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lococo/io/gguf.h"

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

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n\r\f\v") - b + 1);
}

// Segments under construction: text runs and markers.
class Segments {
 public:
  Segments& text(const std::string& t) {
    if (t.empty()) return *this;
    if (!out_.empty() && !out_.back().marker)
      out_.back().text += t;
    else
      out_.push_back({t, false});
    return *this;
  }
  Segments& marker(const std::string& m) {
    out_.push_back({m, true});
    return *this;
  }
  std::vector<ChatSegment> take() { return std::move(out_); }

 private:
  std::vector<ChatSegment> out_;
};

// Roles a template without a tool turn reads as the user's.
bool user_like(const std::string& role) { return role == "user" || role == "tool"; }

// Llama 2 and its variants; mistral-v1/v3/v3-tekken share the [INST] shape.
void render_llama2(Segments& s, const std::string& name, const std::vector<ChatMessage>& messages) {
  const bool system_block = name != "llama2", bos_inside = name == "llama2-sys-bos", strip = name == "llama2-sys-strip";
  bool inside = true;  // the first [INST] follows the prompt's own BOS
  s.marker("[INST]").text(" ");
  for (const auto& m : messages) {
    const std::string c = strip ? trim(m.content) : m.content;
    if (!inside) {
      if (bos_inside) s.marker("<s>");
      s.marker("[INST]").text(" ");
      inside = true;
    }
    if (m.role == "system")
      s.text(system_block ? "<<SYS>>\n" + c + "\n<</SYS>>\n\n" : c + "\n");
    else if (user_like(m.role))
      s.text(c + " ").marker("[/INST]");
    else {
      s.text(c).marker("</s>");
      inside = false;
    }
  }
}

void render_mistral(Segments& s, const std::string& name, const std::vector<ChatMessage>& messages) {
  const std::string lead = name == "mistral-v1" ? " " : "", trail = name == "mistral-v3-tekken" ? "" : " ";
  bool inside = false;
  for (const auto& m : messages) {
    if (!inside) {
      s.text(lead).marker("[INST]").text(trail);
      inside = true;
    }
    if (m.role == "system") {
      s.text(m.content + "\n\n");
    } else if (user_like(m.role)) {
      s.text(m.content + lead).marker("[/INST]");
    } else {
      s.text(trail + (name == "mistral-v3" ? trim(m.content) : m.content)).marker("</s>");
      inside = false;
    }
  }
}

void render_mistral_v7(Segments& s, const std::vector<ChatMessage>& messages) {
  for (const auto& m : messages) {
    if (m.role == "system")
      s.marker("[SYSTEM_PROMPT]").text(" " + m.content).marker("[/SYSTEM_PROMPT]");
    else if (user_like(m.role))
      s.marker("[INST]").text(" " + m.content).marker("[/INST]");
    else
      s.text(" " + m.content).marker("</s>");
  }
}

void render_gemma(Segments& s, const std::vector<ChatMessage>& messages, bool gen) {
  std::string system;
  for (const auto& m : messages) {
    if (m.role == "system") {
      system = trim(m.content);
      continue;
    }
    const bool model = m.role == "assistant";
    s.marker("<start_of_turn>").text(model ? "model\n" : "user\n");
    if (!system.empty() && !model) s.text(system + "\n\n");
    if (!model) system.clear();
    s.text(trim(m.content)).marker("<end_of_turn>").text("\n");
  }
  if (gen) s.marker("<start_of_turn>").text("model\n");
}

// Templates of the shape OPEN{role}MID{content}CLOSE, then the assistant's opening.
void render_headed(Segments& s, const std::string& name, const std::vector<ChatMessage>& messages, bool gen) {
  for (const auto& m : messages) {
    if (name == "chatml") {
      s.marker("<|im_start|>").text(m.role + "\n" + m.content).marker("<|im_end|>").text("\n");
    } else if (name == "llama3") {
      s.marker("<|start_header_id|>").text(m.role).marker("<|end_header_id|>").text("\n\n" + trim(m.content));
      s.marker("<|eot_id|>");
    } else {  // phi3, zephyr
      s.marker("<|" + m.role + "|>").text("\n" + m.content).marker(name == "phi3" ? "<|end|>" : "<|endoftext|>");
      s.text("\n");
    }
  }
  if (!gen) return;
  if (name == "chatml") s.marker("<|im_start|>").text("assistant\n");
  if (name == "llama3") s.marker("<|start_header_id|>").text("assistant").marker("<|end_header_id|>").text("\n\n");
  if (name == "phi3" || name == "zephyr") s.marker("<|assistant|>").text("\n");
}

void render_plain(Segments& s, const std::vector<ChatMessage>& messages, bool gen) {
  for (const auto& m : messages) {
    std::string who = m.role;
    who[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(who[0])));
    s.text(who + ": " + m.content + "\n");
  }
  if (gen) s.text("Assistant:");
}

std::string canonical_name(const std::string& name) {
  if (name == "llama-2") return "llama2-sys";  // this project's older names
  if (name == "llama-3") return "llama3";
  return name;
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {
      "chatml",     "llama2",     "llama2-sys",        "llama2-sys-bos", "llama2-sys-strip", "mistral-v1",
      "mistral-v3", "mistral-v3-tekken", "mistral-v7", "llama3",         "phi3",             "zephyr",
      "gemma",      "plain",      "llama-2",           "llama-3"};
  return names;
}

ChatTemplate chat_template(const std::string& requested) {
  const std::string name = canonical_name(requested);
  if (name == "chatml") return {name, {"<|im_end|>", "<|im_start|>"}};
  if (name.rfind("llama2", 0) == 0 || name.rfind("mistral-", 0) == 0) return {name, {"</s>", "[INST]"}};
  if (name == "llama3") return {name, {"<|eot_id|>", "<|start_header_id|>"}};
  if (name == "phi3") return {name, {"<|end|>", "<|user|>"}};
  if (name == "zephyr") return {name, {"<|endoftext|>", "<|user|>"}};
  if (name == "gemma") return {name, {"<end_of_turn>", "<start_of_turn>"}};
  if (name == "plain") return {name, {"\nUser:", "\nSystem:"}};
  throw std::invalid_argument(fmt::format("unknown chat template '{}' (choose from: {})", requested,
                                          fmt::join(chat_template_names(), ", ")));
}

std::string chat_template_for_text(const std::string& t) {
  const auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|im_start|>")) return "chatml";
  if (t.rfind("mistral", 0) == 0 || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return "mistral-v7";
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      if (has(" [INST]")) return "mistral-v1";
      if (has("\"[INST]\"")) return "mistral-v3-tekken";
      return "mistral-v3";
    }
    if (has("content.strip()")) return "llama2-sys-strip";
    if (has("bos_token + '[INST]")) return "llama2-sys-bos";
    return has("<<SYS>>") ? "llama2-sys" : "llama2";
  }
  if (has("<|assistant|>") && has("<|end|>")) return "phi3";
  if (has("<|user|>") && has("<|endoftext|>")) return "zephyr";
  if (has("<start_of_turn>")) return "gemma";
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return "llama3";
  return "";
}

std::string detect_chat_template(const std::filesystem::path& model_path) {
  std::string jinja;
  std::error_code ec;
  if (std::filesystem::is_regular_file(model_path, ec)) {  // a GGUF file
    try {
      jinja = GgufFile(model_path).text("tokenizer.chat_template", "");
    } catch (const std::exception&) {
      return "plain";  // the model loader names a broken file; no template here
    }
  } else {
    std::ifstream in(model_path / "tokenizer_config.json");
    if (!in) return "plain";
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string()) jinja = j["chat_template"];
  }
  const std::string name = chat_template_for_text(jinja);
  return name.empty() ? "plain" : name;
}

std::vector<ChatSegment> render_chat_segments(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                                              bool gen) {
  check_roles(messages);
  Segments s;
  const std::string& n = tmpl.name;
  if (n.rfind("llama2", 0) == 0)
    render_llama2(s, n, messages);
  else if (n == "mistral-v7")
    render_mistral_v7(s, messages);
  else if (n.rfind("mistral-", 0) == 0)
    render_mistral(s, n, messages);
  else if (n == "gemma")
    render_gemma(s, messages, gen);
  else if (n == "plain")
    render_plain(s, messages, gen);
  else
    render_headed(s, n, messages, gen);
  return s.take();
}

std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages, bool gen) {
  std::string out;
  for (const auto& seg : render_chat_segments(tmpl, messages, gen)) out += seg.text;
  return out;
}

std::vector<int64_t> encode_chat(const Tokenizer& tok, const std::vector<ChatSegment>& segments, bool add_bos) {
  std::vector<int64_t> out;
  if (add_bos && tok.bos_id() >= 0) out.push_back(tok.bos_id());
  std::string pending;  // text (and markers the vocabulary lacks) not yet encoded
  const auto flush = [&] {
    const auto ids = tok.encode_text(pending);
    out.insert(out.end(), ids.begin(), ids.end());
    pending.clear();
  };
  for (const auto& seg : segments) {
    int64_t id = -1;
    if (seg.marker) id = seg.text == "<s>" ? tok.bos_id() : seg.text == "</s>" ? tok.eos_id() : tok.special_token_id(seg.text);
    if (id < 0) {
      pending += seg.text;
      continue;
    }
    if (!pending.empty()) flush();
    out.push_back(id);
  }
  if (!pending.empty()) flush();
  return out;
}

}  // namespace lococo
