// The state file's format alone (read_state, write_state of
// lococo/generate/saved_state.h), apart from the model and the cache, so that
// the fuzzer builds it on its own.
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/core/io_util.h"
#include "lococo/generate/saved_state.h"
#include "lococo/io/safetensors.h"

namespace lococo {
namespace {

const char* kFormat = "lococo-state";
const char* kVersion = "1";

}  // namespace

const char* const kStateLogits = "last_logits";

int64_t SavedState::bytes() const {
  int64_t n = last_logits.defined() ? last_logits.nbytes() : 0;
  for (const auto& [name, t] : snapshot.tensors) n += static_cast<int64_t>(t.nbytes());
  return n;
}

SavedState read_state(const std::filesystem::path& path) {
  const std::string file = path.string();
  SafetensorsFile f(path);  // std::runtime_error naming the file on a bad container
  const auto& meta = f.metadata();
  auto field = [&](const std::string& key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end()) throw std::runtime_error(fmt::format("{}: state metadata lacks '{}'", file, key));
    return it->second;
  };
  auto json_field = [&](const std::string& key, bool object) {
    auto j = nlohmann::json::parse(field(key), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || (object && !j.is_object()))
      throw std::runtime_error(fmt::format("{}: state metadata '{}' is not a JSON object", file, key));
    return j;
  };
  if (meta.find("format") == meta.end() || meta.at("format") != kFormat)
    throw std::runtime_error(fmt::format("{}: not a lococo state (metadata 'format' must be '{}')", file, kFormat));
  if (field("version") != kVersion)
    throw std::runtime_error(fmt::format("{}: state version '{}' (this build reads '{}')", file, field("version"), kVersion));
  SavedState s;
  s.model = field("model");
  s.options = json_field("options", true);
  s.compressor = field("compressor");
  s.text = field("text");
  if (s.text.size() != 16 || s.text.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw std::runtime_error(fmt::format("{}: state metadata 'text' is not a fingerprint ('{}')", file, s.text));
  s.snapshot.counters = json_field("counters", true);
  if (meta.find("extra") != meta.end()) s.extra = json_field("extra", true);
  const std::string& tokens = field("tokens");
  size_t used = 0;
  try {
    s.tokens = std::stoll(tokens, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != tokens.size() || s.tokens < 0)
    throw std::runtime_error(fmt::format("{}: state metadata 'tokens' is not a count ('{}')", file, tokens));
  if (!f.contains(kStateLogits)) throw std::runtime_error(fmt::format("{}: state tensor '{}' is missing", file, kStateLogits));
  for (const auto& name : f.names()) {
    auto t = f.tensor(name).clone();  // own memory: the mapping closes with `f`
    if (name == kStateLogits) {
      if (t.dim() != 1 || !t.is_floating_point())
        throw std::runtime_error(fmt::format("{}: state tensor '{}' must be a float vector", file, kStateLogits));
      s.last_logits = t.to(torch::kFloat32);
    } else {
      s.snapshot.tensors.emplace_back(name, t);
    }
  }
  return s;
}

void write_state(const std::filesystem::path& path, const SavedState& s) {
  NamedTensors tensors = s.snapshot.tensors;
  tensors.emplace_back(kStateLogits, s.last_logits);
  std::map<std::string, std::string> meta = {{"format", kFormat},
                                             {"version", kVersion},
                                             {"model", s.model},
                                             {"options", s.options.dump()},
                                             {"compressor", s.compressor},
                                             {"text", s.text},
                                             {"tokens", std::to_string(s.tokens)},
                                             {"counters", s.snapshot.counters.dump()}};
  if (!s.extra.is_null()) meta["extra"] = to_json_line(s.extra);
  save_safetensors(path, tensors, meta);
}

}  // namespace lococo
