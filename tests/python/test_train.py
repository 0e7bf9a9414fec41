"""lococo.train_compressor from Python: progress through the callback, Ctrl-C
(KeyboardInterrupt) leaving a checkpoint that resume continues, the output usable."""
import pytest
import torch

import lococo

from conftest import SLICE

SMALL = dict(budget=32, segments=4, kernel=5, seed=1)


def test_twenty_steps_call_back_twenty_times_and_the_output_loads(model, tmp_path, text):
    records = []
    out = tmp_path / "c.safetensors"
    result = lococo.train_compressor(model, SLICE, out, steps=20, callback=records.append, **SMALL)
    assert result["steps_done"] == 20 and not result["interrupted"]
    assert [r["step"] for r in records] == list(range(1, 21))
    assert all("loss" in r and r["loss"] > 0 for r in records)
    assert out.exists()
    cache = model.cache("lococo", budget=32, compressor=out)
    assert lococo.perplexity(model, text[:2000], cache=cache)["perplexity"] > 1


def test_keyboard_interrupt_leaves_a_checkpoint_that_resume_continues(model, tmp_path):
    out = tmp_path / "c.safetensors"
    seen = []

    def interrupt_at_5(record):
        seen.append(record["step"])
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lococo.train_compressor(model, SLICE, out, steps=20, callback=interrupt_at_5, **SMALL)
    assert seen == [1, 2, 3, 4, 5]
    assert (tmp_path / "c.safetensors.ckpt").is_dir()
    resumed = []
    result = lococo.train_compressor(model, SLICE, out, steps=20, callback=lambda r: resumed.append(r["step"]),
                                     resume=True, **SMALL)
    assert result["steps_done"] == 20
    assert resumed == list(range(6, 21))


def test_bad_options_and_files(model, tmp_path):
    with pytest.raises(ValueError, match="frobnicate"):
        lococo.train_compressor(model, SLICE, tmp_path / "c.safetensors", steps=2, frobnicate=1)
    with pytest.raises(OSError, match="no-such-dir"):
        lococo.train_compressor(model, tmp_path / "no-such-dir", tmp_path / "c.safetensors", steps=2)


def test_retention_targets_match_the_far_attention_cache(model, text):
    ids = model.tokenizer.encode(text, add_bos=True)[:300]
    far = lococo.retention_targets(model, ids, target="far-attention", far=32, horizon=64)
    cache = lococo.far_attention_cache(model, far=32)
    model.forward(ids, cache)
    assert len(far) == cache.num_layers
    for layer, t in enumerate(far):
        assert t.shape[1] == 300 - 64
        assert torch.allclose(t, cache.scores(layer)[:, :300 - 64], atol=1e-6)
    grad = lococo.retention_targets(model, ids, far=32, horizon=64)
    assert [tuple(t.shape) for t in grad] == [(t.shape[0], 300 - 64 - 32) for t in far]
    assert all(float(t.min()) >= 0 for t in grad) and any(float(t.max()) > 0 for t in grad)
    with pytest.raises(ValueError, match="share"):
        lococo.retention_targets(model, ids, share=0)
