// lococo train-compressor: learn the LoCoCo convolutions on a frozen model.
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/kv/registry.h"
#include "lococo/train/train_compressor.h"
#include "training_flags.h"

namespace lococo::cli {

void add_train_compressor_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    ChunkTrainingFlags train;
    std::string out;
  };
  auto f = std::make_shared<Flags>();
  f->cache.options.policy = trained_policy();
  f->cache.options.budget = 128;
  f->cache.options.chunk = 128;
  auto* sub = root.add_subcommand("train-compressor", "Train LoCoCo compressors (all layers) on a frozen model");
  add_model_flags(sub, f->model);
  add_cache_flags(sub, f->cache, /*with_policy=*/false);
  sub->add_option("--out", f->out, "Output compressor .safetensors (checkpoint in OUT.ckpt)")->required();
  add_chunk_training_flags(sub, f->train);
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    CompressorTrainOptions o = f->train.options;
    o.cache = cache_options(f->cache, m);
    o.cache.policy = trained_policy();
    o.out = f->out;
    const auto cache_dir = std::filesystem::path(f->out).parent_path() / "token-cache";
    TrainingData data = load_training_data(f->train, *m.tokenizer, cache_dir);
    auto model = std::const_pointer_cast<LlamaModel>(m.model);
    auto r = train_compressor(*model, *data.train, data.val.get(), o);
    fmt::print("{} after {} steps: loss {:.4f}, {:.0f} tokens/s\n", r.interrupted ? "interrupted (checkpoint saved)" : "done",
               r.steps_done, r.last_loss, r.tokens_per_second);
    for (const auto& v : r.validations)
      fmt::print("validation PPL: lococo {:.3f}  lococo-hh {:.3f}  streaming {:.3f}\n", v.lococo, v.lococo_hh, v.streaming);
    return r.interrupted ? 130 : 0;
  });
}

}  // namespace lococo::cli
