// Saved states: a cache's sequence state after reading a text, written to a
// file so that later questions continue from it instead of re-reading the
// text. For a bounded policy the file's size does not depend on the text's
// length.
//
// File: safetensors, written atomically.
//   tensors   the cache's snapshot: "layers.<i>.keys|values|scores|positions"
//             [Hkv, slots, d] / [Hkv, slots] (plus what the policy keeps, e.g.
//             "layers.<i>.window" for snapkv), and "last_logits" [V] fp32: the
//             next-token logits after the text
//   metadata  format "lococo-state", version "1";
//             model: fingerprint of the model (config, vocabulary, weight names,
//               shapes and leading values), hex;
//             options: JSON of the cache options that shape the state (policy,
//               budget, chunk, buffer, positions, dtype and the policy's knobs);
//             compressor: fingerprint of the compressor file (lococo), else "";
//             text: XXH64 of the token ids read, hex; tokens: their count;
//             counters: JSON of the cache's counters;
//             extra (optional): JSON object a front end keeps with the state.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

extern const char* const kStateLogits;  // "last_logits": the tensor of the next-token logits

struct SavedState {
  CacheSnapshot snapshot;
  torch::Tensor last_logits;  // [V] fp32
  std::string model;          // model_fingerprint()
  nlohmann::json options;     // state_options()
  std::string compressor;     // compressor_fingerprint(), "" for other policies
  std::string text;           // text_fingerprint() of the ids read
  int64_t tokens = 0;         // ids read
  nlohmann::json extra;       // what a front end keeps with the state (lococo chat: the conversation), or null
  int64_t bytes() const;      // of the tensors held
};

// Hex fingerprints (XXH64).
std::string model_fingerprint(const LlamaModel& model, const Tokenizer& tokenizer);
// Of token ids read after a text whose fingerprint is `before` ("" = nothing
// before): a chain, so a state continued and saved again names all it read.
std::string text_fingerprint(const std::vector<int64_t>& ids, const std::string& before = "");
// text_fingerprint() of ids that come piece by piece: after every piece is
// added, digest() equals text_fingerprint(all of them, before).
class TextFingerprint {
 public:
  explicit TextFingerprint(const std::string& before = "");
  ~TextFingerprint();
  TextFingerprint(const TextFingerprint&) = delete;
  TextFingerprint& operator=(const TextFingerprint&) = delete;
  void add(const std::vector<int64_t>& ids);
  std::string digest() const;

 private:
  void* state_;  // XXH64_state_t
};
// Of the compressor file `options` names (lococo), "" when it names none.
std::string compressor_fingerprint(const CacheOptions& options);

// The options that shape a state, as JSON (what a loading cache must match).
nlohmann::json state_options(const CacheOptions& options);
// `base` (device and defaults) with the fields of state_options() set from `json`;
// std::invalid_argument naming a field that is missing or of the wrong type.
CacheOptions options_from_state(const nlohmann::json& json, CacheOptions base);

// `cache`'s state now, in memory (copies): `text` is text_fingerprint() of all
// it read, `tokens` their count; `model_fp` model_fingerprint().
SavedState capture_state(const KvCache& cache, const CacheOptions& options, const std::string& model_fp,
                         const std::string& text, int64_t tokens, const torch::Tensor& last_logits);
// Writes a state file (atomic, durable).
void write_state(const std::filesystem::path& path, const SavedState& state);

// Writes `cache`'s state (atomic): `text` is text_fingerprint() of all it read,
// `tokens` their count; `model_fp` model_fingerprint().
void save_state(const std::filesystem::path& path, const KvCache& cache, const CacheOptions& options,
                const std::string& model_fp, const std::string& text, int64_t tokens, const torch::Tensor& last_logits);

// Reads a state file; std::runtime_error naming the file and the field or
// tensor on a truncated, corrupt or foreign file.
SavedState read_state(const std::filesystem::path& path);

// "" when `state` was made by this model with these options (it can continue
// in a cache made with `options`), else the first field that differs, as
// restore_state() names it.
std::string state_mismatch(const SavedState& state, const CacheOptions& options, const std::string& model_fp,
                           int64_t vocab_size);

// Restores `state` into `cache` (made with `options`) after checking that it
// was made by this model with these options: std::invalid_argument naming the
// field that differs ("budget: state 128, cache 256"), or a tensor that does
// not fit (the logits must have `vocab_size` entries). Returns the last logits [V].
torch::Tensor restore_state(const SavedState& state, KvCache& cache, const CacheOptions& options,
                            const std::string& model_fp, int64_t vocab_size);

}  // namespace lococo
