// lococo chat: an interactive terminal chat under a fixed-budget cache, so a
// conversation never runs out of context. Line editing and history through
// libedit; /save and /load keep a conversation (the cache's state and the
// messages) in one state file.
//
// How a turn reaches the cache: the conversation is rendered by the chat
// template up to the assistant's opening, and only the segments the cache has
// not read yet are encoded and read. The cache's state before the reply is
// kept and restored after it, so the reply is read again next turn as the
// template writes it (with its end-of-turn marker), never as sampled: what
// the cache holds is always exactly the rendered conversation.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include <unistd.h>

#include <editline/readline.h>
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/core/io_util.h"
#include "lococo/generate/generate.h"
#include "lococo/generate/saved_state.h"
#include "lococo/kv/registry.h"
#include "lococo/tokenizer/chat_template.h"

namespace lococo::cli {
namespace {

const char* kHelp =
    "commands: /save FILE (the conversation and the cache), /load FILE, /reset (a new conversation), /help, "
    "/quit (or Ctrl-D)";

// The segments of `target` after those `read` already holds, or nullopt when
// `read` is not a prefix of it (a text segment may have grown at its end).
std::optional<std::vector<ChatSegment>> unread(const std::vector<ChatSegment>& read,
                                               const std::vector<ChatSegment>& target) {
  size_t i = 0;
  const auto same = [](const ChatSegment& a, const ChatSegment& b) { return a.marker == b.marker && a.text == b.text; };
  while (i < read.size() && i < target.size() && same(read[i], target[i])) ++i;
  if (i == read.size()) return std::vector<ChatSegment>(target.begin() + static_cast<std::ptrdiff_t>(i), target.end());
  const bool grown = i + 1 == read.size() && i < target.size() && !read[i].marker && !target[i].marker &&
                     target[i].text.compare(0, read[i].text.size(), read[i].text) == 0;
  if (!grown) return std::nullopt;
  std::vector<ChatSegment> out = {{target[i].text.substr(read[i].text.size()), false}};
  out.insert(out.end(), target.begin() + static_cast<std::ptrdiff_t>(i) + 1, target.end());
  return out;
}

class Chat {
 public:
  Chat(const LoadedModel& m, ChatTemplate tmpl, CacheOptions co, GenerateOptions gen, std::string system)
      : m_(m), tmpl_(std::move(tmpl)), co_(std::move(co)), gen_(std::move(gen)), system_(std::move(system)),
        model_fp_(model_fingerprint(*m.model, *m.tokenizer)) {
    gen_.stop.insert(gen_.stop.end(), tmpl_.stop.begin(), tmpl_.stop.end());
    gen_.chunk = co_.chunk;
    reset();
  }

  void reset() {
    cache_ = make_cache(m_.model->config(), co_);
    messages_.clear();
    if (!system_.empty()) messages_.push_back({"system", system_});
    read_.clear();
    read_messages_ = 0;
    text_fp_.clear();
    tokens_ = 0;
  }

  // One user turn: the reply streams to stdout.
  void turn(const std::string& user) {
    torch::NoGradGuard no_grad;
    messages_.push_back({"user", user});
    read_up_to_reply();
    const CacheSnapshot before_reply = cache_->snapshot();
    const auto t0 = std::chrono::steady_clock::now();
    GenerateResult r = continue_generation(*m_.model, *m_.tokenizer, *cache_, logits_, gen_, [](const std::string& s) {
      std::cout << s << std::flush;
      return true;
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cache_->restore(before_reply);  // the reply is read next turn, as the template writes it
    messages_.push_back({"assistant", r.text});
    std::cout << std::endl;  // before the status line on stderr
    fmt::print(stderr, "[{} tokens, {:.1f} tok/s; {} tokens read; cache {}, {:.0f} KiB]\n", r.tokens.size(),
               seconds > 0 ? r.tokens.size() / seconds : 0.0, tokens_, cache_->describe(), cache_->bytes() / 1024.0);
  }

  void save(const std::string& path) const {
    if (!logits_.defined()) throw std::invalid_argument("/save: nothing said yet");
    SavedState s = capture_state(*cache_, co_, model_fp_, text_fp_, tokens_, logits_);
    nlohmann::json messages = nlohmann::json::array();
    for (const auto& msg : messages_) messages.push_back({{"role", msg.role}, {"content", msg.content}});
    s.extra = {{"chat_template", tmpl_.name}, {"messages", messages}, {"read_messages", read_messages_}};
    write_state(path, s);
    fmt::print(stderr, "[saved {} messages, {} tokens read, to {}]\n", messages_.size(), tokens_, path);
  }

  void load(const std::string& path) {
    SavedState s = read_state(path);
    const auto& e = s.extra;
    if (!e.is_object() || !e.contains("messages") || !e["messages"].is_array() || !e.contains("read_messages") ||
        !e["read_messages"].is_number_unsigned() || !e.contains("chat_template") || !e["chat_template"].is_string())
      throw std::invalid_argument(path + ": not a chat state (saved by /save): its metadata 'extra' lacks the conversation");
    std::vector<ChatMessage> messages;
    for (const auto& msg : e["messages"]) {
      if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string() || !msg.contains("content") ||
          !msg["content"].is_string())
        throw std::invalid_argument(path + ": extra.messages: each must be {role, content} strings");
      messages.push_back({msg["role"], msg["content"]});
    }
    const size_t read_messages = e["read_messages"];
    if (read_messages == 0 || read_messages > messages.size())
      throw std::invalid_argument(path + ": extra.read_messages is not a count of the messages");
    if (e["chat_template"] != tmpl_.name)
      throw std::invalid_argument(fmt::format("{}: saved with chat template {}, this chat uses {} (--chat-template)",
                                              path, e["chat_template"].get<std::string>(), tmpl_.name));
    CacheOptions co = options_from_state(s.options, co_);
    auto cache = make_cache(m_.model->config(), co);
    logits_ = restore_state(s, *cache, co, model_fp_, m_.model->config().vocab_size);
    co_ = co;
    cache_ = std::move(cache);
    messages_ = std::move(messages);
    read_messages_ = read_messages;
    read_ = render_chat_segments(tmpl_, {messages_.begin(), messages_.begin() + static_cast<std::ptrdiff_t>(read_messages)});
    text_fp_ = s.text;
    tokens_ = s.tokens;
    fmt::print(stderr, "[loaded {} messages, {} tokens read, from {}]\n", messages_.size(), tokens_, path);
  }

 private:
  // Reads what the rendered conversation has that the cache has not.
  void read_up_to_reply() {
    const auto target = render_chat_segments(tmpl_, messages_);
    auto delta = unread(read_, target);
    if (!delta) {  // the template rewrote earlier text: read the conversation again
      cache_ = make_cache(m_.model->config(), co_);
      read_.clear();
      text_fp_.clear();
      tokens_ = 0;
      delta = target;
    }
    const auto ids = encode_chat(*m_.tokenizer, *delta, /*add_bos=*/read_.empty());
    if (!ids.empty()) logits_ = prefill(*m_.model, *cache_, ids, co_.chunk);
    text_fp_ = text_fingerprint(ids, text_fp_);
    tokens_ += static_cast<int64_t>(ids.size());
    read_ = target;
    read_messages_ = messages_.size();
  }

  const LoadedModel& m_;
  ChatTemplate tmpl_;
  CacheOptions co_;
  GenerateOptions gen_;
  std::string system_;
  const std::string model_fp_;
  std::unique_ptr<KvCache> cache_;
  std::vector<ChatMessage> messages_;
  std::vector<ChatSegment> read_;  // the rendering the cache holds (up to an assistant's opening)
  size_t read_messages_ = 0;       // messages in that rendering
  torch::Tensor logits_;           // [V] after what the cache holds
  std::string text_fp_;            // text_fingerprint() chain of the ids read
  int64_t tokens_ = 0;
};

// A line from the terminal (libedit, with history) or from a pipe; false at the end.
bool read_line(bool tty, std::string& line) {
  if (!tty) return static_cast<bool>(std::getline(std::cin, line));
  char* raw = readline("> ");
  if (!raw) return false;
  line = raw;
  std::free(raw);
  if (!line.empty()) add_history(line.c_str());
  return true;
}

std::string default_history_file() {
  const char* home = std::getenv("HOME");
  return home ? std::string(home) + "/.lococo_history" : "";
}

}  // namespace

void add_chat_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    GenerateOptions gen;
    std::string system, chat_template, load, history = default_history_file();
  };
  auto f = std::make_shared<Flags>();
  f->cache.options.policy = "streaming";  // bounded: a conversation never outgrows memory
  f->cache.options.budget = 512;
  f->cache.options.chunk = 128;
  f->gen.max_tokens = 256;
  auto* sub = root.add_subcommand("chat", "Interactive chat in the terminal under a fixed-budget KV cache "
                                          "(/save, /load, /reset, /help, /quit)");
  add_model_flags(sub, f->model);
  sub->add_option("--system,--system-prompt", f->system, "System prompt");
  sub->add_option("--chat-template", f->chat_template, "Chat template (default: detected from the model, else plain)")
      ->check(CLI::IsMember(chat_template_names()));
  sub->add_option("--max-tokens,-n,--n-predict", f->gen.max_tokens, "Tokens per reply at most")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--load", f->load, "Continue a conversation saved with /save");
  sub->add_option("--history-file", f->history, "Line history file ('' = none)")->capture_default_str();
  add_cache_flags(sub, f->cache);
  add_sampling_flags(sub, f->gen.sampling);
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    const std::string name = f->chat_template.empty() ? detect_chat_template(m.dir) : f->chat_template;
    Chat chat(m, chat_template(name), inference_cache_options(f->cache, m), f->gen, f->system);
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    if (tty && !f->history.empty()) read_history(f->history.c_str());
    if (!f->load.empty()) chat.load(f->load);
    fmt::print(stderr, "lococo chat: template {}, {}. {}\n", name, f->cache.options.policy, kHelp);
    std::string line;
    while (read_line(tty, line)) {
      if (line.empty()) continue;
      try {
        if (line == "/quit" || line == "/exit") break;
        if (line == "/help") {
          fmt::print(stderr, "{}\n", kHelp);
        } else if (line == "/reset") {
          chat.reset();
          fmt::print(stderr, "[a new conversation]\n");
        } else if (line.rfind("/save ", 0) == 0) {
          chat.save(line.substr(6));
        } else if (line.rfind("/load ", 0) == 0) {
          chat.load(line.substr(6));
        } else if (line[0] == '/') {
          fmt::print(stderr, "unknown command {}; {}\n", line, kHelp);
        } else {
          chat.turn(line);
        }
      } catch (const std::exception& e) {  // a bad file or command: say so and go on
        fmt::print(stderr, "error: {}\n", e.what());
      }
    }
    if (tty && !f->history.empty()) write_history(f->history.c_str());
    return 0;
  });
}

}  // namespace lococo::cli
