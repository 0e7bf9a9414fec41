#!/usr/bin/env python3
"""How far learned retention could go: passkey retrieval with a LoCoCo cache
whose slot scores are a training target computed over the whole prompt and
its answer (the future included), beside the same cache with the compressor's
learned scores and the full cache.

If the oracle fails, no scorer trained on that target can succeed; the gap
between oracle and learned is what training has left to close.

    PYTHONPATH=build/python python3 scripts/retention-oracle.py \\
        --compressor models/lococo-tiny/compressors/m128.safetensors \\
        --target loss-gradient --horizon 8 --far 16

Prints one JSON object: accuracy per length and cache (full, learned, oracle).
"""
import argparse
import json
import random
import sys

import torch

import lococo


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="model directory or GGUF (default: the bundled model)")
    p.add_argument("--compressor", required=True, help="a compressor with learned retention")
    p.add_argument("--filler", default="data/test/moby-dick-test.txt", help="text the filler is cut from")
    p.add_argument("--lengths", default="1024,2048", help="prompt lengths in tokens")
    p.add_argument("--trials", type=int, default=10, help="prompts per length (depths spread evenly)")
    p.add_argument("--budget", type=int, default=128, help="M (chunk = M)")
    p.add_argument("--local-window", type=int, default=64, help="w")
    p.add_argument("--target", default="loss-gradient", choices=["loss-gradient", "far-attention"])
    p.add_argument("--horizon", type=int, default=8, help="loss chunk (loss-gradient) at the prompt's end")
    p.add_argument("--far", type=int, default=16)
    p.add_argument("--share", type=float, default=1e-4, help="loss-gradient's attention share")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def main():
    a = parse_args()
    model = lococo.load(a.model)
    tok = model.tokenizer
    try:
        filler = tok.encode(open(a.filler, encoding="utf-8").read())
    except OSError as e:
        sys.exit(f"retention-oracle: {a.filler}: {e.strerror}")
    rng = random.Random(a.seed)

    def prompt(n, depth):
        key = "".join(str(rng.randrange(10)) for _ in range(5))
        needle = tok.encode(f" The pass key is {key}. Remember it. {key} is the pass key.")
        question = tok.encode(" What is the pass key? The pass key is")
        body = n - len(needle) - len(question) - 1
        if body < 1 or len(filler) <= body:
            sys.exit(f"retention-oracle: {a.filler} is too short for {n}-token prompts")
        start = rng.randrange(0, len(filler) - body)
        f = filler[start:start + body]
        d = int(depth * body)
        return [tok.bos_id] + f[:d] + needle + f[d:] + question, key

    def answer(cache, ids, scores):
        """Reads ids a chunk at a time (after each, the new slots get `scores`), then 8 greedy tokens."""
        B = a.budget
        for i in range(0, len(ids), B):
            logits = model.forward(ids[i:i + B], cache)
            if scores is None:
                continue
            for layer in range(cache.num_layers):
                pos, s = cache.positions_of(layer), cache.scores(layer)  # views: writing s sets the scores
                for h in range(pos.shape[0]):
                    candidate = pos[h] >= 4  # the sinks keep their score
                    s[h][candidate] = scores[layer][h][pos[h][candidate]]
        out = []
        for _ in range(8):
            t = int(logits[-1].argmax())
            out.append(t)
            logits = model.forward([t], cache)
        return tok.decode(out)

    def lococo_cache():
        return model.cache("lococo", budget=a.budget, keep_rate=1.0, local_window=a.local_window,
                           compressor=a.compressor)

    report = {"target": a.target, "horizon": a.horizon, "far": a.far, "share": a.share, "accuracy": {}}
    for n in (int(x) for x in a.lengths.split(",")):
        hits = {"full": 0, "learned": 0, "oracle": 0}
        for trial in range(a.trials):
            ids, key = prompt(n, (trial + 0.5) / a.trials)
            whole = ids + tok.encode(f" {key}.")
            targets = lococo.retention_targets(model, whole, target=a.target, far=a.far, horizon=a.horizon,
                                               share=a.share)
            scores = []
            for t in targets:  # tokens without a target (the prompt's end) sit in the window
                full_row = torch.zeros(t.shape[0], len(whole))
                full_row[:, :t.shape[1]] = t
                scores.append(full_row)
            hits["full"] += key in answer(model.cache("full", budget=a.budget), ids, None)
            hits["learned"] += key in answer(lococo_cache(), ids, None)
            hits["oracle"] += key in answer(lococo_cache(), ids, scores)
        report["accuracy"][n] = {k: v / a.trials for k, v in hits.items()}
        print(f"{n}: " + ", ".join(f"{k} {v}/{a.trials}" for k, v in hits.items()), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
