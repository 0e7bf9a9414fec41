#include "server/prompt_cache.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "server/request.h"

namespace lococo::server_detail {

int64_t reusable_tokens(const PromptState& state, const std::vector<int64_t>& prompt) {
  const int64_t n = state.saved.tokens;
  if (n <= 0 || n > static_cast<int64_t>(prompt.size())) return 0;
  if (!state.ids.empty())
    return std::equal(state.ids.begin(), state.ids.end(), prompt.begin(), prompt.begin() + n) ? n : 0;
  const std::vector<int64_t> head(prompt.begin(), prompt.begin() + n);
  return text_fingerprint(head) == state.saved.text ? n : 0;
}

void check_state_name(const std::string& name, const char* field) {
  const bool allowed = !name.empty() && name.size() <= 128 && name[0] != '.' &&
                       std::all_of(name.begin(), name.end(), [](unsigned char c) {
                         return std::isalnum(c) || c == '.' || c == '_' || c == '-';
                       });
  if (!allowed)
    throw RequestError(400, fmt::format("'{}' must be 1 to 128 of the characters A-Z a-z 0-9 . _ - and not start "
                                        "with '.' (a file name inside the server's --slot-save-path)", field));
}

PromptCache::PromptCache(int slots, std::filesystem::path dir)
    : slots_(static_cast<size_t>(std::max(slots, 0))), dir_(std::move(dir)) {}

int PromptCache::checked_slot(int slot) const {
  if (slot < 0 || slot >= static_cast<int>(slots_.size()))
    throw RequestError(400, fmt::format("slot {} does not exist (slots 0 to {})", slot, slots_.size() - 1));
  return slot;
}

std::vector<int> PromptCache::slots_by_text(const std::string& text) const {
  std::vector<std::pair<size_t, int>> shared;  // (bytes, slot)
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i]) continue;
    const std::string& kept = slots_[i]->text;
    const size_t n = std::mismatch(kept.begin(), kept.begin() + std::min(kept.size(), text.size()), text.begin()).first -
                     kept.begin();
    if (n > 0) shared.emplace_back(n, static_cast<int>(i));
  }
  std::stable_sort(shared.begin(), shared.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int> out;
  for (const auto& [n, slot] : shared) out.push_back(slot);
  return out;
}

std::shared_ptr<const PromptState> PromptCache::slot(int slot) const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_[checked_slot(slot)];
}

void PromptCache::set_slot(int slot, std::shared_ptr<const PromptState> state) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_[checked_slot(slot)] = std::move(state);
}

std::shared_ptr<const PromptState> PromptCache::read(const std::string& name) const {
  const auto path = dir_ / name;
  if (!std::filesystem::exists(path)) return nullptr;
  auto state = std::make_shared<PromptState>();
  state->saved = read_state(path);
  return state;
}

int64_t PromptCache::write(const std::string& name, const PromptState& state) const {
  const auto path = dir_ / name;
  write_state(path, state.saved);
  return static_cast<int64_t>(std::filesystem::file_size(path));
}

}  // namespace lococo::server_detail
