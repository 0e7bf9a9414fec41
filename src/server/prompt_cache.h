// Internal to the server: prefix reuse (llama.cpp's `cache_prompt`).
//
// Each slot keeps the state its cache had right after its last prompt. A new
// prompt that begins with the tokens that state read continues from it and
// reads only the rest: a chat's next turn reads the new messages, not the
// whole conversation. Named states are the same thing kept as files in one
// directory (--slot-save-path): `"cache": {"state": NAME}` reads a document
// once and lets every later request that begins with it, in any slot, skip it.
// /slots/{id}?action=save|restore moves a slot's state to and from that
// directory under a client's file name.
//
// With a bounded policy a continued prompt is read in other chunks than a
// fresh one would be, so its compressions (and the logits) can differ a little
// from reading it whole; with the full cache they are the same.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lococo/generate/saved_state.h"

namespace lococo::server_detail {

// A cache's state right after a prompt.
struct PromptState {
  SavedState saved;           // the slots, the logits after the prompt, and what made them
  std::vector<int64_t> ids;   // the prompt's token ids; empty for a state read from a file
  std::string text;           // the request's prompt text (before tokenising); empty for a state read from a file
};

// Tokens at the start of `prompt` that `state` has already read: its token
// count when the prompt begins with exactly those tokens, else 0. (A state
// read from a file is matched by the fingerprint of the ids it read.)
int64_t reusable_tokens(const PromptState& state, const std::vector<int64_t>& prompt);

// The name of a state file a client may give (a slot file or a named state):
// 1 to 128 of [A-Za-z0-9._-], not starting with '.', so it can only name a
// file directly inside the directory. RequestError 400 naming `field` otherwise.
void check_state_name(const std::string& name, const char* field);

class PromptCache {
 public:
  // `dir` empty: no named states and no slot files.
  PromptCache(int slots, std::filesystem::path dir);

  // Slots whose state's prompt text shares a beginning with `text`, the
  // longest shared first: where a request will likely reuse most (known
  // before its prompt is tokenised, which happens inside its slot).
  std::vector<int> slots_by_text(const std::string& text) const;

  std::shared_ptr<const PromptState> slot(int slot) const;  // null when it keeps none
  void set_slot(int slot, std::shared_ptr<const PromptState> state);

  bool has_dir() const { return !dir_.empty(); }
  const std::filesystem::path& dir() const { return dir_; }
  // A state file in the directory by `name` (checked): null when there is none;
  // std::runtime_error naming the file when it cannot be read.
  std::shared_ptr<const PromptState> read(const std::string& name) const;
  // Writes `state` as `name` (atomic); returns the bytes written.
  int64_t write(const std::string& name, const PromptState& state) const;

 private:
  int checked_slot(int slot) const;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const PromptState>> slots_;  // [slots]
  std::filesystem::path dir_;
};

}  // namespace lococo::server_detail
