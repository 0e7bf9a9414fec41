#include "lococo/tokenizer/tokenizer.h"

#include <dlfcn.h>  // dlmopen (_GNU_SOURCE is on with g++)
#include <unistd.h>

#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/tokenizer/tokenizer_json.h"
#include "lococo/core/io_util.h"
#include "spm/spm_api.h"

namespace lococo {
namespace {

// Where liblococo_spm.so may be: $LOCOCO_SPM_SHIM, beside the running
// executable, or where the build put it.
std::vector<std::string> shim_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("LOCOCO_SPM_SHIM")) out.emplace_back(env);
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) out.push_back((std::filesystem::path(std::string(exe, n)).parent_path() / "liblococo_spm.so").string());
#ifdef LOCOCO_SPM_SHIM_PATH
  out.emplace_back(LOCOCO_SPM_SHIM_PATH);
#endif
  return out;
}

const lococo_spm_api& spm_api() {
  static const lococo_spm_api* api = nullptr;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    for (const auto& path : shim_candidates()) {
      if (!std::filesystem::exists(path)) continue;
      // A private link namespace: see src/tokenizer/spm/spm_api.h for why.
      void* h = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        failure += fmt::format(" {} ({})", path, ::dlerror());
        continue;
      }
      auto fn = reinterpret_cast<const lococo_spm_api* (*)()>(::dlsym(h, "lococo_spm_get_api"));
      if (fn && fn()->version == LOCOCO_SPM_API_VERSION) {
        api = fn();
        return;
      }
      failure += " " + path + " (wrong version)";
    }
  });
  if (!api) throw std::runtime_error("cannot load the SentencePiece library liblococo_spm.so:" + (failure.empty() ? std::string(" not found") : failure));
  return *api;
}

// Takes ownership of a buffer from the library and frees it with the library's free.
struct SpmBuffer {
  void* p = nullptr;
  ~SpmBuffer() {
    if (p) spm_api().free_buffer(p);
  }
};

std::string take_error(char* e) {
  SpmBuffer b{e};
  return e ? std::string(e) : std::string("unknown error");
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::filesystem::path& model_file)
    : SentencePieceTokenizer(read_text_file(model_file), model_file.string()) {}

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_proto, const std::string& source)
    : source_(source) {
  char* error = nullptr;
  sp_ = spm_api().load(model_proto.data(), model_proto.size(), &error);
  if (!sp_) throw std::runtime_error(fmt::format("{}: not a SentencePiece model ({})", source, take_error(error)));
  size_ = spm_api().piece_size(sp_);
  bos_ = spm_api().bos_id(sp_);
  eos_ = spm_api().eos_id(sp_);
  for (int id = 0; id < size_; ++id) {
    if (spm_api().is_control(sp_, id) == 0) continue;
    char* raw = nullptr;
    size_t len = 0;
    spm_api().id_to_piece(sp_, id, &raw, &len);
    SpmBuffer owned{raw};
    controls_.emplace(std::string(raw, len), id);
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (sp_) spm_api().release(sp_);
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool add_bos) const {
  int* ids = nullptr;
  size_t n = 0;
  char* error = nullptr;
  if (spm_api().encode(sp_, text.data(), text.size(), &ids, &n, &error) != 0)
    throw std::runtime_error(source_ + ": encode failed: " + take_error(error));
  SpmBuffer owned{ids};
  std::vector<int64_t> out;
  out.reserve(n + 1);
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  out.insert(out.end(), ids, ids + n);
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> in;
  in.reserve(ids.size());
  for (auto id : ids)
    if (id >= 0 && id < size_) in.push_back(static_cast<int>(id));
  char* text = nullptr;
  size_t len = 0;
  char* error = nullptr;
  if (spm_api().decode(sp_, in.data(), in.size(), &text, &len, &error) != 0)
    throw std::runtime_error(source_ + ": decode failed: " + take_error(error));
  SpmBuffer owned{text};
  return std::string(text, len);
}

std::vector<int64_t> Tokenizer::encode_after_line_end(const std::string& text) const {
  // The text behind a line end, less the line end's own ids: exact wherever a
  // line end is a token of its own (SentencePiece's byte pieces, BPE vocabularies
  // without pieces that run on past "\n").
  const auto line_end = encode("\n");
  auto ids = encode("\n" + text);
  if (ids.size() >= line_end.size() && std::equal(line_end.begin(), line_end.end(), ids.begin()))
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(line_end.size()));
  else
    ids = encode(text);
  return ids;
}

int64_t SentencePieceTokenizer::special_token_id(const std::string& text) const {
  const auto it = controls_.find(text);
  return it == controls_.end() ? -1 : it->second;
}

std::string SentencePieceTokenizer::piece_text(int64_t id) const {
  if (id < 0 || id >= size_ || spm_api().is_control(sp_, static_cast<int>(id)) != 0) return "";
  char* raw = nullptr;
  size_t len = 0;
  spm_api().id_to_piece(sp_, static_cast<int>(id), &raw, &len);
  SpmBuffer owned{raw};
  std::string p(raw, len);
  if (spm_api().is_byte(sp_, static_cast<int>(id)) != 0)  // byte-fallback piece "<0xAB>": the raw byte
    return std::string(1, static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16)));
  // U+2581 (LOWER ONE EIGHTH BLOCK) marks a word boundary in SentencePiece.
  const std::string marker = "\xe2\x96\x81";
  for (size_t pos = p.find(marker); pos != std::string::npos; pos = p.find(marker, pos + 1)) p.replace(pos, 3, " ");
  return p;
}

int64_t SentencePieceTokenizer::vocab_size() const { return size_; }
int64_t SentencePieceTokenizer::bos_id() const { return bos_; }
int64_t SentencePieceTokenizer::eos_id() const { return eos_; }

void train_sentencepiece(const std::vector<std::string>& lines, const std::filesystem::path& out,
                         const TokenizerTrainOptions& o) {
  if (lines.empty()) throw std::invalid_argument("train-tokenizer: no training text");
  const std::string args = fmt::format(
      "--model_type={} --vocab_size={} --character_coverage={} --byte_fallback=true "
      "--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --input_sentence_size={} --shuffle_input_sentence=true "
      "--hard_vocab_limit={} --split_digits=true --max_sentence_length=16384 --minloglevel=2 "
      "--num_threads=2{}",
      o.model_type, o.vocab_size, o.character_coverage, o.max_sentences, o.hard_vocab_limit ? "true" : "false",
      o.keep_whitespace ? " --normalization_rule_name=identity --remove_extra_whitespaces=false "
                          "--add_dummy_prefix=true --allow_whitespace_only_pieces=true"
                        : "");
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const auto& l : lines) {
    ptrs.push_back(l.data());
    lens.push_back(l.size());
  }
  char* proto = nullptr;
  size_t proto_len = 0;
  char* error = nullptr;
  if (spm_api().train(args.c_str(), ptrs.data(), lens.data(), lines.size(), &proto, &proto_len, &error) != 0)
    throw std::runtime_error("train-tokenizer: SentencePiece training failed: " + take_error(error));
  SpmBuffer owned{proto};
  write_text_atomic(out, std::string(proto, proto_len));
}

std::filesystem::path tokenizer_file(const std::filesystem::path& model_dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.json"})
    if (std::filesystem::exists(model_dir / name)) return model_dir / name;
  throw std::runtime_error(model_dir.string() + ": no tokenizer.model or tokenizer.json in the model directory");
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir, int64_t bos_id, int64_t eos_id) {
  const auto file = tokenizer_file(model_dir);
  if (file.filename() == "tokenizer.model") return std::make_unique<SentencePieceTokenizer>(file);
  return HfBpeTokenizer::load(file, bos_id, eos_id);
}

}  // namespace lococo
