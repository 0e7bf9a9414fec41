#include "lococo/tokenizer/sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace lococo {
namespace {

// ---- Protobuf wire format: varints, fixed32 and length-delimited fields ----------

enum Wire { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

struct Field {
  uint32_t number = 0;
  Wire wire = kVarint;
  uint64_t varint = 0;  // kVarint, kFixed32 and kFixed64 values
  std::string bytes;    // kBytes
};

class WireReader {
 public:
  WireReader(const std::string& data, const std::string& source) : data_(data), source_(source) {}
  bool done() const { return pos_ >= data_.size(); }

  Field next() {
    Field f;
    const uint64_t key = varint();
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<Wire>(key & 7);
    switch (f.wire) {
      case kVarint: f.varint = varint(); break;
      case kFixed32: f.varint = fixed(4); break;
      case kFixed64: f.varint = fixed(8); break;
      case kBytes: {
        const uint64_t n = varint();
        if (n > data_.size() - pos_) fail(fmt::format("field {} of {} bytes runs past the end", f.number, n));
        f.bytes = data_.substr(pos_, n);
        pos_ += n;
        break;
      }
      default: fail(fmt::format("field {} has unsupported wire type {}", f.number, static_cast<int>(f.wire)));
    }
    return f;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(fmt::format("{}: not a SentencePiece model: {} (at byte {})", source_, what, pos_));
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) fail("truncated varint");
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  uint64_t fixed(size_t n) {
    if (n > data_.size() - pos_) fail("truncated fixed-size field");
    uint64_t v = 0;
    std::memcpy(&v, data_.data() + pos_, n);  // little endian on every supported host
    pos_ += n;
    return v;
  }

  const std::string& data_;
  const std::string& source_;
  size_t pos_ = 0;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, uint32_t number, Wire wire) { put_varint(out, (uint64_t{number} << 3) | wire); }
void put_int(std::string& out, uint32_t number, int64_t v) {  // int32/enum/bool: negatives as 10-byte varints
  put_key(out, number, kVarint);
  put_varint(out, static_cast<uint64_t>(v));
}
void put_bytes(std::string& out, uint32_t number, const std::string& v) {
  put_key(out, number, kBytes);
  put_varint(out, v.size());
  out += v;
}
void put_float(std::string& out, uint32_t number, float v) {
  put_key(out, number, kFixed32);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

float as_float(const Field& f) {
  const auto bits = static_cast<uint32_t>(f.varint);
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}
int as_int(const Field& f) { return static_cast<int>(static_cast<int32_t>(f.varint)); }

}  // namespace

SentencePieceModel SentencePieceModel::parse(const std::string& bytes, const std::string& source) {
  SentencePieceModel m;
  m.model_type = 1;  // the proto's default (unigram) when the field is absent
  m.normalizer_name.clear();
  for (WireReader top(bytes, source); !top.done();) {
    const Field f = top.next();
    if (f.number == 1 && f.wire == kBytes) {
      Piece p;
      for (WireReader r(f.bytes, source); !r.done();) {
        const Field g = r.next();
        if (g.number == 1 && g.wire == kBytes) p.text = g.bytes;
        if (g.number == 2 && g.wire == kFixed32) p.score = as_float(g);
        if (g.number == 3 && g.wire == kVarint) p.type = as_int(g);
      }
      m.pieces.push_back(std::move(p));
    } else if (f.number == 2 && f.wire == kBytes) {
      for (WireReader r(f.bytes, source); !r.done();) {
        const Field g = r.next();
        if (g.wire != kVarint) continue;
        if (g.number == 3) m.model_type = as_int(g);
        if (g.number == 35) m.byte_fallback = g.varint != 0;
        if (g.number == 40) m.unk_id = as_int(g);
        if (g.number == 41) m.bos_id = as_int(g);
        if (g.number == 42) m.eos_id = as_int(g);
        if (g.number == 43) m.pad_id = as_int(g);
      }
    } else if (f.number == 3 && f.wire == kBytes) {
      for (WireReader r(f.bytes, source); !r.done();) {
        const Field g = r.next();
        if (g.number == 1 && g.wire == kBytes) m.normalizer_name = g.bytes;
        if (g.number == 2 && g.wire == kBytes) m.precompiled_charsmap = g.bytes;
        if (g.number == 3 && g.wire == kVarint) m.add_dummy_prefix = g.varint != 0;
        if (g.number == 4 && g.wire == kVarint) m.remove_extra_whitespaces = g.varint != 0;
        if (g.number == 5 && g.wire == kVarint) m.escape_whitespaces = g.varint != 0;
      }
    }
  }
  if (m.pieces.empty()) throw std::runtime_error(source + ": not a SentencePiece model: no pieces");
  return m;
}

std::string SentencePieceModel::serialize() const {
  std::string out;
  for (const auto& p : pieces) {
    std::string msg;
    put_bytes(msg, 1, p.text);
    put_float(msg, 2, p.score);
    put_int(msg, 3, p.type);
    put_bytes(out, 1, msg);
  }
  std::string trainer;
  put_int(trainer, 3, model_type);
  put_int(trainer, 35, byte_fallback);
  put_int(trainer, 40, unk_id);
  put_int(trainer, 41, bos_id);
  put_int(trainer, 42, eos_id);
  put_int(trainer, 43, pad_id);
  put_bytes(out, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, normalizer_name);
  if (!precompiled_charsmap.empty()) put_bytes(normalizer, 2, precompiled_charsmap);
  put_int(normalizer, 3, add_dummy_prefix);
  put_int(normalizer, 4, remove_extra_whitespaces);
  put_int(normalizer, 5, escape_whitespaces);
  put_bytes(out, 3, normalizer);
  return out;
}

}  // namespace lococo
