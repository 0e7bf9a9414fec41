#!/usr/bin/env python3
"""Which layers copy: the layers whose kept slots let the model recall a
repeated passage, found by an oracle. A document holds a passage of shuffled
tokens, a gap of text, then the passage again; a LoCoCo cache reads it, and
in one layer at a time the passage's slots are given a score far above the
rest as soon as they arrive (every other layer ranks as the compressor does).
The gain in NLL on the repeat over a decoy-first document, as a share of the
full cache's gain, says how much of the copy that layer's memory carries.
Layers whose share stands out are what `train-retention --copy-layers` should
label (labels in the others only spend slots).

    PYTHONPATH=build/python python3 scripts/copy-layers.py \\
        --compressor models/lococo-tiny/compressors/m128.safetensors

Prints one JSON object: the full cache's gain, and per layer (and with every
layer at once) the oracle's gain and its share of the full cache's.
"""
import argparse
import json
import random

import torch

import lococo

BIG = 10.0  # a score above any the compressor gives text (scores are logs of relative importance)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="model directory or GGUF (default: the bundled model)")
    p.add_argument("--compressor", required=True, help="a compressor with learned retention")
    p.add_argument("--text", default="data/test/moby-dick-test.txt", help="text the documents are cut from")
    p.add_argument("--budget", type=int, default=128, help="M (chunk = M)")
    p.add_argument("--passage", type=int, default=64, help="tokens of the passage")
    p.add_argument("--lead", type=int, default=512, help="text before the passage")
    p.add_argument("--gap", type=int, default=1024, help="text between the passage and its repeat")
    p.add_argument("--trials", type=int, default=4, help="documents (each with its decoy twin)")
    p.add_argument("--seed", type=int, default=100)
    return p.parse_args()


def repeat_nll(model, cache, ids, repeat_at, passage, budget, oracle=None):
    """Mean NLL of the repeat's tokens; oracle = (layers, first, end): those
    layers' slots of positions [first, end) get score BIG after every chunk."""
    nll = []
    for i in range(0, len(ids), budget):
        logits = model.forward(ids[i:i + budget], cache)  # [n, V]
        logp = torch.log_softmax(logits.float(), -1)
        for j in range(logits.shape[0]):
            t = i + j
            if repeat_at <= t < repeat_at + passage - 1:
                nll.append(-logp[j, ids[t + 1]].item())
        if oracle:
            layers, first, end = oracle
            for layer in layers:
                pos, scores = cache.positions_of(layer), cache.scores(layer)  # [Hkv, S] each, scores a view
                scores[(pos >= first) & (pos < end)] = BIG
    return sum(nll) / len(nll)


def main():
    a = parse_args()
    model = lococo.load(a.model) if a.model else lococo.load()
    tok = model.tokenizer
    text = tok.encode(open(a.text, encoding="utf-8").read())
    if len(text) < a.lead + a.gap + 2 * a.passage:
        raise SystemExit(f"copy-layers: {a.text} has {len(text)} tokens, fewer than a document needs")
    layers = list(range(model.config["num_hidden_layers"]))
    variants = {f"layer {l}": [l] for l in layers}
    variants["every layer"] = layers
    gains = {"full": []} | {k: [] for k in variants}
    rng = random.Random(a.seed)
    for _ in range(a.trials):
        start = rng.randrange(0, len(text) - a.lead - a.gap)
        passage = [text[rng.randrange(len(text))] for _ in range(a.passage)]
        decoy = [text[rng.randrange(len(text))] for _ in range(a.passage)]
        body = text[start:start + a.lead + a.gap]
        doc = [tok.bos_id] + body[:a.lead] + passage + body[a.lead:] + passage
        twin = [tok.bos_id] + body[:a.lead] + decoy + body[a.lead:] + passage
        repeat_at, first = 1 + a.lead + a.passage + a.gap, 1 + a.lead

        def gain(policy, oracle=None):
            make = lambda: (model.cache("full") if policy == "full"
                            else model.cache("lococo", budget=a.budget, chunk=a.budget, compressor=a.compressor))
            return (repeat_nll(model, make(), twin, repeat_at, a.passage, a.budget) -
                    repeat_nll(model, make(), doc, repeat_at, a.passage, a.budget, oracle))

        gains["full"].append(gain("full"))
        for name, ls in variants.items():
            gains[name].append(gain("lococo", (ls, first, first + a.passage)))
    mean = {k: sum(v) / len(v) for k, v in gains.items()}
    out = {"full_gain": round(mean["full"], 4), "gap": a.gap, "passage": a.passage, "budget": a.budget,
           "oracle": {k: {"gain": round(mean[k], 4), "share": round(mean[k] / mean["full"], 3)} for k in variants}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
