#include "lococo/generate/saved_state.h"

#include <fstream>
#include <map>
#include <stdexcept>

#include <fmt/format.h>
#include <xxhash.h>

#include "lococo/core/io_util.h"
#include "lococo/io/safetensors.h"
#include "lococo/kv/registry.h"

namespace lococo {
namespace {


std::string hex(uint64_t h) { return fmt::format("{:016x}", h); }

// XXH64 state fed piece by piece.
class Hasher {
 public:
  Hasher() : state_(XXH64_createState()) { XXH64_reset(state_, 0); }
  ~Hasher() { XXH64_freeState(state_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void add(const void* data, size_t bytes) { XXH64_update(state_, data, bytes); }
  void add(const std::string& s) {
    const uint64_t n = s.size();  // length first: "ab" + "c" differs from "a" + "bc"
    add(&n, sizeof n);
    add(s.data(), s.size());
  }
  std::string digest() const { return hex(XXH64_digest(state_)); }

 private:
  XXH64_state_t* state_;
};

// The first field where a state's options and a cache's differ, or "".
std::string describe_mismatch(const nlohmann::json& state, const nlohmann::json& mine) {
  // The policy first: another policy has other knobs, and those are not the point.
  if (state.value("policy", "") != mine.value("policy", ""))
    return fmt::format("policy: state {}, cache {}", state.value("policy", "-"), mine.value("policy", "-"));
  for (const auto& [key, value] : state.items())
    if (!mine.contains(key) || mine[key] != value)
      return fmt::format("{}: state {}, cache {}", key, value.dump(), mine.contains(key) ? mine[key].dump() : "-");
  for (const auto& [key, value] : mine.items())
    if (!state.contains(key)) return fmt::format("{}: state -, cache {}", key, value.dump());
  return "";
}

}  // namespace

std::string model_fingerprint(const LlamaModel& model, const Tokenizer& tokenizer) {
  Hasher h;
  h.add(model.config().to_json().dump());
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) h.add(tokenizer.piece_text(id));
  // Names, shapes and dtypes of the weights, and their first values: another
  // model of the same shape (a fine-tune) differs there.
  for (const auto& [name, t] : model.weights().named(model.config())) {
    if (!t->defined()) continue;
    h.add(name);
    h.add(fmt::format("{}:{}", fmt::join(t->sizes(), "x"), c10::toString(t->scalar_type())));
    const auto head = t->flatten().narrow(0, 0, std::min<int64_t>(64, t->numel())).to(torch::kCPU, torch::kFloat32).contiguous();
    h.add(head.data_ptr(), static_cast<size_t>(head.numel()) * sizeof(float));
  }
  return h.digest();
}

std::string text_fingerprint(const std::vector<int64_t>& ids, const std::string& before) {
  const uint64_t seed = before.empty() ? 0 : std::stoull(before, nullptr, 16);
  return hex(XXH64(ids.data(), ids.size() * sizeof(int64_t), seed));
}

TextFingerprint::TextFingerprint(const std::string& before) : state_(XXH64_createState()) {
  XXH64_reset(static_cast<XXH64_state_t*>(state_), before.empty() ? 0 : std::stoull(before, nullptr, 16));
}
TextFingerprint::~TextFingerprint() { XXH64_freeState(static_cast<XXH64_state_t*>(state_)); }
void TextFingerprint::add(const std::vector<int64_t>& ids) {
  XXH64_update(static_cast<XXH64_state_t*>(state_), ids.data(), ids.size() * sizeof(int64_t));
}
std::string TextFingerprint::digest() const { return hex(XXH64_digest(static_cast<XXH64_state_t*>(state_))); }

std::string compressor_fingerprint(const CacheOptions& o) {
  if (!cache_policy(o.policy).needs_compressor) return "";
  if (o.lococo.compressor.empty()) return o.lococo.allow_untrained ? fmt::format("untrained:{}", o.lococo.seed) : "";
  std::ifstream in(o.lococo.compressor, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot read the compressor file", o.lococo.compressor));
  Hasher h;
  std::vector<char> buf(1 << 16);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
    h.add(buf.data(), static_cast<size_t>(in.gcount()));
  return h.digest();
}

nlohmann::json state_options(const CacheOptions& options) { return cache_options_json(options); }

CacheOptions options_from_state(const nlohmann::json& json, CacheOptions base) {
  return apply_cache_options_json(std::move(base), json);
}

SavedState capture_state(const KvCache& cache, const CacheOptions& options, const std::string& model_fp,
                         const std::string& text, int64_t tokens, const torch::Tensor& last_logits) {
  SavedState s;
  s.snapshot = cache.snapshot();
  s.last_logits = last_logits.detach().to(torch::kCPU, torch::kFloat32).contiguous().flatten().clone();
  s.model = model_fp;
  s.options = state_options(options);
  s.compressor = compressor_fingerprint(options);
  s.text = text;
  s.tokens = tokens;
  return s;
}

void save_state(const std::filesystem::path& path, const KvCache& cache, const CacheOptions& options,
                const std::string& model_fp, const std::string& text, int64_t tokens, const torch::Tensor& last_logits) {
  write_state(path, capture_state(cache, options, model_fp, text, tokens, last_logits));
}

std::string state_mismatch(const SavedState& s, const CacheOptions& options, const std::string& model_fp,
                           int64_t vocab_size) {
  if (s.model != model_fp)
    return fmt::format("model: the state was made with another model (fingerprint {}, this model {})", s.model, model_fp);
  std::string why = describe_mismatch(s.options, state_options(options));
  if (!why.empty()) return why;
  const std::string compressor = compressor_fingerprint(options);
  if (s.compressor != compressor)
    return fmt::format("compressor: the state was made with another compressor (fingerprint {}, this cache {})",
                       s.compressor.empty() ? "-" : s.compressor, compressor.empty() ? "-" : compressor);
  if (!s.last_logits.defined() || s.last_logits.size(0) != vocab_size)
    return fmt::format("tensor '{}' must have {} entries (the vocabulary)", kStateLogits, vocab_size);
  return "";
}

torch::Tensor restore_state(const SavedState& s, KvCache& cache, const CacheOptions& options,
                            const std::string& model_fp, int64_t vocab_size) {
  const std::string why = state_mismatch(s, options, model_fp, vocab_size);
  if (!why.empty()) throw std::invalid_argument(why);
  cache.restore(s.snapshot);
  return s.last_logits;
}

}  // namespace lococo
