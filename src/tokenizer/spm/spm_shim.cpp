// liblococo_spm.so: libsentencepiece behind the C function table of spm_api.h.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

SentencePieceProcessor* as_sp(void* p) { return static_cast<SentencePieceProcessor*>(p); }

// Copies bytes into a malloc'd buffer the caller frees through free_buffer.
char* copy_out(const std::string& s, size_t* len = nullptr) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  if (len) *len = s.size();
  return out;
}

int fail(const sentencepiece::util::Status& status, char** error) {
  *error = copy_out(status.ToString());
  return 1;
}

void* load(const char* proto, size_t len, char** error) {
  auto* sp = new SentencePieceProcessor();
  const auto status = sp->LoadFromSerializedProto(std::string(proto, len));
  if (!status.ok()) {
    fail(status, error);
    delete sp;
    return nullptr;
  }
  return sp;
}

void release(void* p) { delete as_sp(p); }

int encode(void* p, const char* text, size_t len, int** ids, size_t* n, char** error) {
  std::vector<int> out;
  const auto status = as_sp(p)->Encode(std::string(text, len), &out);
  if (!status.ok()) return fail(status, error);
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  *n = out.size();
  return 0;
}

int decode(void* p, const int* ids, size_t n, char** text, size_t* len, char** error) {
  std::string out;
  const auto status = as_sp(p)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) return fail(status, error);
  *text = copy_out(out, len);
  return 0;
}

int piece_size(void* p) { return as_sp(p)->GetPieceSize(); }
int id_to_piece(void* p, int id, char** piece, size_t* len) {
  *piece = copy_out(as_sp(p)->IdToPiece(id), len);
  return 0;
}
int is_control(void* p, int id) { return as_sp(p)->IsControl(id) ? 1 : 0; }
int is_byte(void* p, int id) { return as_sp(p)->IsByte(id) ? 1 : 0; }
int bos_id(void* p) { return as_sp(p)->bos_id(); }
int eos_id(void* p) { return as_sp(p)->eos_id(); }

// Feeds the trainer from memory instead of a file.
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::vector<std::string> lines) : lines_(std::move(lines)) { skip_empty(); }
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override {
    ++i_;
    skip_empty();
  }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void skip_empty() {
    while (i_ < lines_.size() && lines_[i_].empty()) ++i_;
  }
  std::vector<std::string> lines_;
  size_t i_ = 0;
};

int train(const char* args, const char* const* lines, const size_t* lens, size_t n, char** proto, size_t* proto_len,
          char** error) {
  std::vector<std::string> copy;
  copy.reserve(n);
  for (size_t i = 0; i < n; ++i) copy.emplace_back(lines[i], lens[i]);
  LineIterator it(std::move(copy));
  std::string out;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &out);
  if (!status.ok()) return fail(status, error);
  *proto = copy_out(out, proto_len);
  return 0;
}

void free_buffer(void* b) { std::free(b); }

const lococo_spm_api kApi = {LOCOCO_SPM_API_VERSION, load, release, encode, decode, piece_size, id_to_piece,
                             is_control, is_byte, bos_id, eos_id, train, free_buffer};

}  // namespace

extern "C" const lococo_spm_api* lococo_spm_get_api(void) { return &kApi; }
