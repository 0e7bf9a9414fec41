"""Every cache policy from Python, with its own options: bounded ones stay within their budget."""
import pytest
import torch

import lococo

# Each policy's own knobs, as keyword options.
OPTIONS = {
    "streaming": {"sinks": 2},
    "h2o": {"recent": 16},
    "snapkv": {"observation_window": 8, "pool_kernel": 3},
    "lococo-hh": {"keep_rate": 0.5, "local_window": 8, "score_decay": 1.0, "window_last": True},
    "lococo": {"allow_untrained": True, "seed": 3, "local_window": 8},
}


def test_every_policy_with_its_options(model, text):
    ids = model.tokenizer.encode(text, add_bos=True)[:300]
    names = [p["name"] for p in lococo.policies()]
    assert {"full", "streaming", "h2o", "tova", "snapkv", "lococo-hh", "lococo"} <= set(names)
    for policy in lococo.policies():
        name = policy["name"]
        cache = model.cache(name, budget=64, chunk=32, **OPTIONS.get(name, {}))
        assert cache.policy == name and cache.bounded == policy["bounded"]
        assert name.split("-")[0] in repr(cache)
        logits = model.forward(ids, cache)
        assert logits.shape == (300, model.config["vocab_size"])
        assert torch.isfinite(logits).all(), name
        assert cache.tokens_seen == 300
        for layer in range(cache.num_layers):
            slots = cache.slots(layer)
            if policy["bounded"]:
                assert slots <= 64 + 16 + 32, name  # M + buffer + one chunk
            else:
                assert slots == 300
            assert cache.scores(layer).shape[-1] == slots
            assert cache.positions_of(layer).shape[-1] == slots
        assert cache.bytes > 0
        cache.reset()
        assert cache.tokens_seen == 0


def test_lococo_finds_the_models_own_compressor(model, text):
    cache = model.cache("lococo", budget=128)
    assert "lococo(M=128" in repr(cache)
    result = lococo.perplexity(model, text, cache=cache)
    assert 1 < result["perplexity"] < 1000
    # The shipped files are learned retention with their own split (keep rate 1,
    # a window of 3M/4): nothing is fused, and every head keeps the newest tokens.
    assert "r=1,w=96" in repr(cache) and "learned-retention" in repr(cache)
    positions = cache.positions_of(0)  # [Hkv, S]
    assert (positions >= 0).all()
    newest = set(range(cache.tokens_seen - 96, cache.tokens_seen))
    for head in positions.tolist():
        assert newest <= set(head)
