// Flags and data loading shared by the chunked training commands
// (train-compressor, tune).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "lococo/train/distributed.h"
#include "lococo/tokenizer/token_data.h"
#include "lococo/train/train_compressor.h"

namespace lococo::cli {

struct ChunkTrainingFlags {
  CompressorTrainOptions options;
  std::vector<std::string> data, val;  // --data, --val
};

void add_chunk_training_flags(CLI::App* sub, ChunkTrainingFlags& f);

// --world-size, --rank, --master, --dist-timeout (data-parallel training; `lococo launch` sets them).
void add_dist_flags(CLI::App* sub, DistOptions& d);

struct TrainingData {
  std::unique_ptr<TokenData> train, val;  // val may be null
};
TrainingData load_training_data(const ChunkTrainingFlags& f, const Tokenizer& tokenizer,
                                const std::filesystem::path& cache_dir);

}  // namespace lococo::cli
