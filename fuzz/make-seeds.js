#!/usr/bin/env node
// Writes small valid seed files for the fuzzers: GGUF files (every metadata
// value kind, F32/F16/Q8_0/Q4_0 tensors) and safetensors files.
//   node fuzz/make-seeds.js OUT_DIR    -> OUT_DIR/gguf/*.gguf, OUT_DIR/safetensors/*.safetensors, OUT_DIR/state/*.state
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
if (!out) {
  console.error('usage: node fuzz/make-seeds.js OUT_DIR');
  process.exit(2);
}

// ---- GGUF ------------------------------------------------------------------------
function u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; }
function u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; }
function str(s) { const b = Buffer.from(s, 'utf8'); return Buffer.concat([u64(b.length), b]); }
function f32s(values) { const b = Buffer.alloc(4 * values.length); values.forEach((v, i) => b.writeFloatLE(v, 4 * i)); return b; }

// Metadata: [key, type, encoded value].
const metadata = [
  ['general.architecture', 8, str('llama')],
  ['llama.block_count', 4, u32(1)],
  ['llama.rope.freq_base', 6, f32s([10000])],
  ['test.flag', 7, Buffer.from([1])],
  ['test.i64', 11, u64(7)],
  ['test.f64', 12, (() => { const b = Buffer.alloc(8); b.writeDoubleLE(0.5); return b; })()],
  ['tokenizer.ggml.tokens', 9, Buffer.concat([u32(8), u64(2), str('<unk>'), str('a')])],
  ['test.nested', 9, Buffer.concat([u32(9), u64(1), u32(5), u64(2), u32(1), u32(2)])],
];
// Tensors: [name, dims, ggml type, data].
const q8 = Buffer.concat([Buffer.from([0x00, 0x38]), Buffer.from(Array.from({ length: 32 }, (_, j) => (j - 16) & 0xff))]);
const q4 = Buffer.concat([Buffer.from([0x00, 0x40]), Buffer.from(Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4)))]);
const f16 = Buffer.alloc(8); [0x3c00, 0x4000, 0xc000, 0x0000].forEach((h, i) => f16.writeUInt16LE(h, 2 * i));
const tensors = [
  ['w.f32', [4, 2], 0, f32s([0, 1, 2, 3, 4, 5, 6, 7])],
  ['w.f16', [4], 1, f16],
  ['w.q8', [32], 8, q8],
  ['w.q4', [32], 2, q4],
];

function gguf(meta, list) {
  const parts = [u32(0x46554747), u32(3), u64(list.length), u64(meta.length)];
  for (const [key, type, value] of meta) parts.push(str(key), u32(type), value);
  let offset = 0;
  const data = [];
  for (const [name, dims, type, bytes] of list) {
    parts.push(str(name), u32(dims.length), ...dims.map(u64), u32(type), u64(offset));
    const padded = Buffer.alloc(Math.ceil(bytes.length / 32) * 32);
    bytes.copy(padded);
    data.push(padded);
    offset += padded.length;
  }
  const head = Buffer.concat(parts);
  return Buffer.concat([head, Buffer.alloc((32 - (head.length % 32)) % 32), ...data]);
}

// ---- safetensors -------------------------------------------------------------------
function safetensors(entries, metadata = { format: 'pt' }) {  // [name, dtype, shape, data]
  const header = { __metadata__: metadata };
  let offset = 0;
  for (const [name, dtype, shape, bytes] of entries) {
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  return Buffer.concat([u64(json.length), json, ...entries.map((e) => e[3])]);
}

fs.mkdirSync(path.join(out, 'gguf'), { recursive: true });
fs.mkdirSync(path.join(out, 'safetensors'), { recursive: true });
fs.writeFileSync(path.join(out, 'gguf', 'all.gguf'), gguf(metadata, tensors));
fs.writeFileSync(path.join(out, 'gguf', 'empty.gguf'), gguf([], []));
fs.writeFileSync(path.join(out, 'gguf', 'q8.gguf'), gguf(metadata.slice(0, 2), tensors.slice(2, 3)));
fs.writeFileSync(path.join(out, 'safetensors', 'two.safetensors'), safetensors([
  ['a', 'F32', [2, 2], f32s([1, 2, 3, 4])],
  ['b', 'F16', [4], f16],
  ['c', 'I64', [1], u64(3)],
]));
fs.writeFileSync(path.join(out, 'safetensors', 'empty.safetensors'), safetensors([]));
// A saved cache state (lococo/generate/saved_state.h): one layer's slots and the logits.
fs.mkdirSync(path.join(out, 'state'), { recursive: true });
fs.writeFileSync(path.join(out, 'state', 'one-layer.state'), safetensors([
  ['layers.0.keys', 'F32', [1, 2, 2], f32s([1, 2, 3, 4])],
  ['layers.0.values', 'F32', [1, 2, 2], f32s([5, 6, 7, 8])],
  ['layers.0.positions', 'I64', [1, 2], Buffer.concat([u64(0), u64(1)])],
  ['last_logits', 'F32', [4], f32s([0, 1, 2, 3])],
], {
  format: 'lococo-state', version: '1', model: '0123456789abcdef', options: '{"policy":"streaming","budget":2}',
  compressor: '', text: '0123456789abcdef', tokens: '2', counters: '{"tokens_seen":2}',
  extra: '{"messages":[{"role":"user","content":"hi"}],"read_messages":1,"chat_template":"plain"}',
}));
// A config.json as Hugging Face writes it, with rope scaling.
fs.mkdirSync(path.join(out, 'config'), { recursive: true });
fs.writeFileSync(path.join(out, 'config', 'llama.json'), JSON.stringify({
  architectures: ['LlamaForCausalLM'], vocab_size: 512, hidden_size: 64, intermediate_size: 128,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 10000,
  max_position_embeddings: 2048, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: [2, 3],
  rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4,
    original_max_position_embeddings: 1024 },
}));
// tokenizer.json files: byte-level BPE with a split regex, and SentencePiece style with byte fallback.
fs.mkdirSync(path.join(out, 'tokenizer_json'), { recursive: true });
const letters = 'abcdefghijklmnopqrstuvwxyz'.split('');
const vocab = {};
[...letters, '\u0120', 'ab', 'abc', '\u0120a', '<0x0A>', '\u2581', '\u2581a'].forEach((t, i) => { vocab[t] = i; });
fs.writeFileSync(path.join(out, 'tokenizer_json', 'byte-level.json'), JSON.stringify({
  model: { type: 'BPE', vocab, merges: ['a b', 'ab c', '\u0120 a'], ignore_merges: false },
  added_tokens: [{ id: 40, content: '<|endoftext|>', special: true }],
  normalizer: { type: 'NFC' },
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: "(?i:'s|'t)|\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+|\\s+" },
      behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, use_regex: false }] },
}));
fs.writeFileSync(path.join(out, 'tokenizer_json', 'sentencepiece.json'), JSON.stringify({
  model: { type: 'BPE', vocab, merges: [['a', 'b'], ['\u2581', 'a']], byte_fallback: true, unk_token: null },
  added_tokens: [{ id: 41, content: '<s>', special: true }, { id: 42, content: '</s>', special: true }],
  normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' },
    { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
  pre_tokenizer: null,
}));
// A token cache file whose key is the one the fuzz target asks for.
fs.mkdirSync(path.join(out, 'token_cache'), { recursive: true });
const key = Buffer.from(JSON.stringify({ sources: [], tokenizer: 'fuzz' }));
const ids = Buffer.alloc(16); [1, 5, 9, 511].forEach((v, i) => ids.writeInt32LE(v, 4 * i));
fs.writeFileSync(path.join(out, 'token_cache', 'four.tokens'),
  Buffer.concat([Buffer.from('LCTOKS01'), u64(4), u64(key.length), key, ids]));
// GGUF tokenizer metadata as llama.cpp writes it: a byte-level BPE ("gpt2") and a SentencePiece ("llama") vocabulary.
function strs(list) { return Buffer.concat([u32(8), u64(list.length), ...list.map(str)]); }
function i32s(list) { const b = Buffer.alloc(4 * list.length); list.forEach((v, i) => b.writeInt32LE(v, 4 * i)); return Buffer.concat([u32(5), u64(list.length), b]); }
function f32a(list) { return Buffer.concat([u32(6), u64(list.length), f32s(list)]); }
fs.mkdirSync(path.join(out, 'gguf_tokenizer'), { recursive: true });
const bpeTokens = [...letters, '\u0120', 'ab', 'abc', '\u0120a', '<|endoftext|>'];
fs.writeFileSync(path.join(out, 'gguf_tokenizer', 'gpt2.gguf'), gguf([
  ['tokenizer.ggml.model', 8, str('gpt2')],
  ['tokenizer.ggml.pre', 8, str('llama-bpe')],
  ['tokenizer.ggml.tokens', 9, strs(bpeTokens)],
  ['tokenizer.ggml.token_type', 9, i32s(bpeTokens.map((t) => (t.startsWith('<|') ? 3 : 1)))],
  ['tokenizer.ggml.merges', 9, strs(['a b', 'ab c', '\u0120 a'])],
  ['tokenizer.ggml.bos_token_id', 4, u32(30)],
  ['tokenizer.ggml.eos_token_id', 4, u32(30)],
], []));
const spmTokens = ['<unk>', '<s>', '</s>', '<0x0A>', '\u2581', '\u2581a', ...letters];
fs.writeFileSync(path.join(out, 'gguf_tokenizer', 'llama.gguf'), gguf([
  ['tokenizer.ggml.model', 8, str('llama')],
  ['tokenizer.ggml.tokens', 9, strs(spmTokens)],
  ['tokenizer.ggml.scores', 9, f32a(spmTokens.map((_, i) => -i))],
  ['tokenizer.ggml.token_type', 9, i32s(spmTokens.map((t, i) => (i === 0 ? 2 : i < 3 ? 3 : t.startsWith('<0x') ? 6 : 1)))],
  ['tokenizer.ggml.bos_token_id', 4, u32(1)],
  ['tokenizer.ggml.eos_token_id', 4, u32(2)],
], []));
console.log(`seeds written to ${out}`);
