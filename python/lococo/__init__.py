"""lococo: long-context language models in fixed memory.

The engine's C++ runs underneath (the native module ``lococo._lococo``); this
layer gives it Python's shape: keyword options, defaults as the CLI's, and
docstrings. Tensors are torch.Tensor objects shared with the engine, never
copied; the GIL is released while the engine computes.

    import lococo
    model = lococo.load()                       # the bundled model
    cache = model.cache("lococo", budget=128)   # a fixed-size cache
    logits = model.forward(model.tokenizer.encode("Call me Ishmael.", add_bos=True), cache)
    for piece in model.generate("Call me", cache=model.cache("streaming"), stream=True):
        print(piece, end="")
"""

import os as _os
import torch as _torch

from . import _lococo
from ._lococo import Cache, Model, TextStream, Tokenizer, default_model_path, policies

__all__ = ["load", "Model", "Cache", "Tokenizer", "TextStream", "policies", "default_model_path",
           "perplexity", "eval_passkey", "train_compressor", "retention_targets", "far_attention_cache"]


def load(path=None, dtype=None):
    """Load a model: a Hugging Face style directory or a GGUF file.

    path: the model (default: the bundled tiny model, or $LOCOCO_MODEL).
    dtype: "f32" (default), "bf16" or "f16": the dtype the weights compute in.
    Raises OSError naming the file when it is missing or cannot be read.
    """
    return _lococo._load("" if path is None else _os.fspath(path), dtype or "f32")


def _cache(self, policy="lococo", budget=128, chunk=None, **options):
    """A fresh per-sequence KV cache of this model.

    policy: one of lococo.policies() (full, streaming, h2o, tova, snapkv, lococo-hh, lococo).
    budget: M, the slots a bounded policy keeps after a compression.
    chunk: B, tokens per forward (default: the budget; the statistics a policy
        ranks by are gathered per chunk).
    options: as the CLI's flags with '_' for '-': buffer, positions ("cache" or
        "absolute"), sinks, recent, observation_window, pool_kernel, keep_rate,
        local_window, score_decay, retention_decay, retention_protect,
        retention_long_term, window_last, compressor (a file; default the
        model's own compressors/m<budget>.safetensors), allow_untrained, seed.
    """
    return _lococo._make_cache(self, policy, budget, budget if chunk is None else chunk, options)


def _forward(self, ids, cache=None):
    """Logits [len(ids), vocab] (fp32) of token ids continuing `cache`.

    ids: a list of ints or a 1-D int64 tensor (read in place). With a cache the
    ids go through in chunks of the cache's chunk size; without one, they form
    a fresh causal sequence. A single chunk's logits are the engine's own
    tensor (no copy).
    """
    return _lococo._forward(self, ids, cache)


def _generate(self, prompt, cache=None, max_tokens=128, temperature=0.0, top_k=0, top_p=1.0, seed=0, stop=None,
              add_bos=None, stop_at_eos=True, stream=False):
    """Generate a continuation of `prompt` (text or token ids).

    cache: the cache to read through (default: a fresh full cache with
        512-token chunks). A cache that has read text already (forward(), or
        Model.load_state()) continues it: the prompt is the continuation, and
        an empty prompt generates right after what it read.
    add_bos: BOS before the prompt (default: only when the cache is fresh).
    Returns a dict (text, tokens, finish_reason, prompt_tokens, prefill_seconds,
    decode_seconds); with stream=True a TextStream yielding text pieces as they
    are produced (its .result holds the dict once exhausted). Greedy by default.
    """
    if cache is None:
        cache = self.cache("full", chunk=512)
    if add_bos is None:
        add_bos = cache.tokens_seen == 0
    return _lococo._generate(self, prompt, cache, max_tokens, temperature, top_k, top_p, seed, list(stop or []),
                             add_bos, stop_at_eos, stream)


def _load_state(self, path, compressor=None):
    """A cache continuing the state saved by Cache.save() at `path`.

    Its options are the state's; lococo uses the model's own compressor for
    the state's budget unless `compressor` names the file it was saved with.
    Raises ValueError when the state was made by another model or compressor
    (naming what differs), OSError when the file cannot be read.
    """
    return _lococo._load_state(self, _os.fspath(path), "" if compressor is None else _os.fspath(compressor))


def _load_cache(path, model=None, compressor=None):
    """Cache.load(path, model=None): Model.load_state of `model` (default: lococo.load())."""
    return (model if model is not None else load()).load_state(path, compressor)


Cache.load = staticmethod(_load_cache)
Model.cache = _cache
Model.forward = _forward
Model.generate = _generate
Model.load_state = _load_state


def _paths(p):
    """None, one path, or several -> a list of str."""
    if p is None:
        return []
    if isinstance(p, (str, bytes, _os.PathLike)):
        return [_os.fsdecode(p)]
    return [_os.fsdecode(x) for x in p]


def _ids(model, text):
    if isinstance(text, str):
        return model.tokenizer.encode(text, add_bos=True)
    return [int(t) for t in text]


def perplexity(model, text, cache=None, return_nll=False):
    """Streaming perplexity of `text` (a string, read with BOS first, or token ids).

    cache: a fresh cache (default: full, 512-token chunks). Returns a dict:
    perplexity, mean_nll, scored, tokens, seconds, tokens_per_second, cache,
    cache_bytes (and nll, one value per scored token, with return_nll=True).
    """
    if cache is None:
        cache = model.cache("full", chunk=512)
    return _lococo._perplexity(model, _ids(model, text), cache, return_nll)


def eval_passkey(model, policies=("full", "streaming", "lococo"), budget=128, chunk=None, lengths=(1024, 2048),
                 depths=(0, 0.25, 0.5, 0.75, 1), trials=5, seed=0, filler=None, full_beyond_context=False,
                 progress=False, **cache_options):
    """Passkey retrieval per policy, length and depth: the dict of `lococo eval passkey`'s report.json.

    filler: text files or directories the filler is cut from (default: the
    classic repeated sentences). cache_options: as for Model.cache.
    """
    return _lococo._eval_passkey(model, list(policies), budget, budget if chunk is None else chunk,
                                 [int(n) for n in lengths], [float(d) for d in depths], trials, seed,
                                 _paths(filler), full_beyond_context, progress, cache_options)


def retention_targets(model, text, target="loss-gradient", chunk=128, far=64, horizon=256, share=1e-4):
    """What `lococo train-retention --target T` teaches for `text` (a string, read with BOS first, or token ids).

    Returns one tensor per layer, [kv_heads, n]: how much each of the first n
    tokens matters to the last `horizon` (loss-gradient, n = T - horizon - far)
    or to queries at least `far` tokens later (far-attention, n = T - horizon).
    """
    ids = _torch.tensor(_ids(model, text), dtype=_torch.int64)
    return _lococo._retention_targets(model, ids, target, chunk, far, horizon, share)


def far_attention_cache(model, far=64, chunk=128):
    """A full cache whose scores(layer) are the most attention each token got from one query >= far tokens
    later (keys() before RoPE): the far-attention targets, token by token as a stream is read."""
    return _lococo._far_attention_cache(model, chunk, far)


def train_compressor(model, data, out, budget=128, chunk=None, steps=100, val=None, callback=None, progress=False,
                     **options):
    """Train the LoCoCo compressor of every layer on the frozen `model`.

    data, val: text files or directories (a path or a list of them).
    out: the compressor .safetensors (its checkpoint beside it, OUT.ckpt).
    callback: called with a dict after every optimiser step (step, loss, lr,
        grad_norm, tokens_per_second) and every validation (step, val_ppl_*).
    options: as the CLI's flags with '_' for '-' (segments, grad_accum, lr,
        bptt_chunks, objective, recall_rate, kernel, keep_rate, local_window,
        resume, stop_after, ...).
    Ctrl-C (or an exception in the callback) stops the run with a checkpoint
    and is raised; resume=True continues from it. Returns a dict: steps_done,
    last_loss, tokens_per_second, interrupted, validations, out.
    """
    return _lococo._train_compressor(model, _paths(data), _paths(val), _os.fspath(out), budget,
                                     budget if chunk is None else chunk, steps, progress, callback, options)
