// The SentencePiece model file (`tokenizer.model`, a serialized protobuf
// `sentencepiece.ModelProto`), reduced to what a GGUF file carries: the pieces
// with their scores and types, the algorithm, the special ids and the normalizer.
//
// Field numbers used (sentencepiece_model.proto):
//   ModelProto:      1 pieces (repeated message), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece:   1 piece (string), 2 score (float), 3 type (enum, default 1 NORMAL)
//   TrainerSpec:     3 model_type (1 UNIGRAM, 2 BPE), 35 byte_fallback, 40 unk_id, 41 bos_id,
//                    42 eos_id, 43 pad_id
//   NormalizerSpec:  1 name, 2 precompiled_charsmap (bytes), 3 add_dummy_prefix,
//                    4 remove_extra_whitespaces, 5 escape_whitespaces (each default true)
// Other fields are skipped on read and not written.
//
// Hand-written: Debian's libsentencepiece-dev ships no sentencepiece_model.pb.h,
// and a second protobuf runtime beside libtorch's is what src/tokenizer/spm/spm_api.h
// keeps out of the process; the wire format of these few fields is small.
#pragma once

#include <string>
#include <vector>

namespace lococo {

struct SentencePieceModel {
  // Piece types, numbered as in the proto (and as GGUF's tokenizer.ggml.token_type).
  enum Type { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  struct Piece {
    std::string text;
    float score = 0.0f;
    int type = kNormal;
  };
  std::vector<Piece> pieces;
  int model_type = 2;            // 1 unigram, 2 BPE
  bool byte_fallback = false;    // unknown bytes become <0xAB> pieces
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // -1: none
  std::string normalizer_name = "identity";
  std::string precompiled_charsmap;  // empty: no normalisation table
  bool add_dummy_prefix = true;      // a space is put before the text
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;    // spaces become U+2581

  // Throws std::runtime_error naming `source` when the bytes are not a model.
  static SentencePieceModel parse(const std::string& bytes, const std::string& source);
  std::string serialize() const;
};

}  // namespace lococo
