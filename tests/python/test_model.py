"""lococo.Model from Python: the CLI's numbers, tensors shared without copies,
generation streamed and whole, errors as Python exceptions, the GIL released."""
import json
import math
import subprocess
import threading

import pytest
import torch

import lococo


def cli_perplexity(binary, path, *flags):
    # The same thread count on both sides: a bounded policy's selections can
    # flip with the summation order (the full cache's numbers barely move).
    torch.set_num_threads(2)
    out = subprocess.run([binary, "perplexity", "-f", str(path), "--json", "-q", "-t", "2", *flags], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_logits_give_the_clis_perplexity(model, text, lococo_binary, tmp_path):
    path = tmp_path / "slice.txt"
    path.write_text(text)
    cli = cli_perplexity(lococo_binary, path, "--cache", "full", "--chunk", "512")
    ids = model.tokenizer.encode(text, add_bos=True)
    assert len(ids) == cli["tokens"]
    # From the logits of one causal pass, scored here.
    logits = model.forward(torch.tensor(ids))
    assert logits.shape == (len(ids), model.config["vocab_size"])
    logp = torch.log_softmax(logits[:-1].double(), -1)
    nll = -logp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).mean().item()
    assert math.exp(nll) == pytest.approx(cli["perplexity"], rel=1e-4)
    # And the engine's streaming perplexity through the bindings, full and bounded.
    assert lococo.perplexity(model, text, cache=model.cache("full", chunk=512))["perplexity"] == pytest.approx(
        cli["perplexity"], rel=1e-6)
    bounded = cli_perplexity(lococo_binary, path, "--cache", "lococo", "--budget", "128", "--chunk", "128")
    mine = lococo.perplexity(model, text, cache=model.cache("lococo", budget=128))
    assert mine["perplexity"] == pytest.approx(bounded["perplexity"], rel=1e-6)
    assert mine["cache"] == bounded["cache"]


def test_tensors_cross_without_copies(model):
    ids = torch.tensor(model.tokenizer.encode("Call me Ishmael. Some years ago", add_bos=True))
    assert lococo._lococo._data_ptr(ids) == ids.data_ptr()  # the engine reads the caller's tensor in place
    # The logits are a view of the engine's own [1, T, V] output, not a copy of it.
    logits = model.forward(ids)
    assert logits._is_view() and logits._base.shape == (1, len(ids), model.config["vocab_size"])
    assert logits.data_ptr() == logits._base.data_ptr()
    # A cache's keys are a view of its memory: zeroing them from Python changes what the model reads next.
    a, b = model.cache("full", chunk=16), model.cache("full", chunk=16)
    first, second = ids[:6], ids[6:]
    model.forward(first, a)
    model.forward(first, b)
    keys = a.keys(0)
    assert keys.shape == (model.config["num_key_value_heads"], 6, model.config["head_dim"])
    assert keys.data_ptr() == a.keys(0).data_ptr()
    assert torch.equal(keys, b.keys(0))
    keys.zero_()
    assert a.keys(0).abs().sum().item() == 0
    assert not torch.allclose(model.forward(second, a), model.forward(second, b))


def test_generation_streamed_equals_whole(model):
    whole = model.generate("Call me Ishmael.", cache=model.cache("streaming", budget=64), max_tokens=40)
    assert whole["finish_reason"] in ("length", "eos")
    assert len(whole["tokens"]) <= 40
    stream = model.generate("Call me Ishmael.", cache=model.cache("streaming", budget=64), max_tokens=40, stream=True)
    assert stream.result is None
    pieces = list(stream)
    assert "".join(pieces) == whole["text"]
    assert stream.result["tokens"] == whole["tokens"]
    # Dropping a stream early cancels its generation cleanly.
    early = model.generate("The sea", max_tokens=200, stream=True)
    next(early)
    del early


def test_tokenizer_config_and_chat(model, text):
    tok = model.tokenizer
    ids = tok.encode("Call me Ishmael.")
    assert tok.decode(ids) == "Call me Ishmael."
    assert tok.vocab_size == model.config["vocab_size"] == 4096
    assert tok.encode("x", add_bos=True)[0] == tok.bos_id
    assert model.format == "safetensors" and model.dtype == "f32"
    prompt = model.render_chat([{"role": "user", "content": "Hello"}])
    assert "Hello" in prompt
    assert isinstance(model.chat_template, str)


def test_errors_are_python_exceptions(model, tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        lococo.load(tmp_path / "no-such-model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(OSError, match="config.json"):
        lococo.load(broken)
    with pytest.raises(ValueError, match="dtype"):
        lococo.load(dtype="int8")
    with pytest.raises(ValueError, match="nope"):
        model.cache("nope")
    with pytest.raises(ValueError, match="frobnicate"):
        model.cache("h2o", frobnicate=1)
    with pytest.raises(ValueError, match="vocabulary"):
        model.forward([1, 99999])
    with pytest.raises(ValueError, match="int64"):
        model.forward(torch.zeros(3, dtype=torch.float32))
    with pytest.raises(IndexError):
        model.cache("full").keys(99)
    with pytest.raises(OSError, match="missing.safetensors"):
        model.cache("lococo", compressor=tmp_path / "missing.safetensors")


def test_the_gil_is_released_while_the_engine_computes(model, text):
    done = []
    worker = threading.Thread(target=lambda: done.append(lococo.perplexity(model, text * 2)))
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
        threading.Event().wait(0.001)
    worker.join()
    assert done and done[0]["tokens"] > 2000
    assert ticks > 20  # the main thread ran while the engine worked


def test_passkey_report_as_a_dict(model):
    report = lococo.eval_passkey(model, policies=["full", "streaming"], budget=64, lengths=[300], depths=[0.5],
                                 trials=2)
    assert report["kind"] == "passkey" and report["filler"] == "sentences"
    assert [run["policy"] for run in report["runs"]] == ["full", "streaming"]
    assert report["runs"][0]["cells"][0]["trials"] == 2
    from conftest import SLICE
    other = lococo.eval_passkey(model, policies=["full"], lengths=[300], depths=[0.5], trials=1, filler=SLICE)
    assert other["filler"] == str(SLICE)
    with pytest.raises(OSError, match="no-such-filler"):
        lococo.eval_passkey(model, policies=["full"], lengths=[300], trials=1, filler="no-such-filler")


def test_a_saved_state_continues_like_the_cache_it_was_saved_from(model, text, tmp_path):
    ids = model.tokenizer.encode(text, add_bos=True)
    first, rest = ids[:640], ids[640:700]  # 640: whole 128-token chunks, so both runs chunk alike
    whole = model.cache("lococo", budget=128)
    expected = model.forward(first + rest, whole)[640:]
    cache = model.cache("lococo", budget=128)
    model.forward(first, cache)
    path = tmp_path / "moby.state"
    cache.save(path)
    assert path.stat().st_size < 2 * 1024 * 1024
    loaded = lococo.Cache.load(path, model)
    assert loaded.tokens_seen == 640 and repr(loaded) == repr(cache)
    # Generation right after the text read, from the loaded state and from the original cache.
    again = model.load_state(path)
    assert model.generate("", cache=again, max_tokens=12)["tokens"] == \
        model.generate("", cache=cache, max_tokens=12)["tokens"]
    assert torch.equal(model.forward(rest, loaded), expected)
    with pytest.raises(ValueError, match="generate"):
        cache.save(tmp_path / "after-generate.state")  # what generate() read is not followed
    with pytest.raises(OSError, match="missing.state"):
        model.load_state(tmp_path / "missing.state")
