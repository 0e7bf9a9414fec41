#!/usr/bin/python3
"""Compare every KV-cache policy at one budget on the bundled model, from Python.

Streaming perplexity of a text and passkey retrieval per policy, plotted side
by side into a PNG (matplotlib), the numbers printed as JSON.

    PYTHONPATH=build/python /usr/bin/python3 examples/compare_policies.py [--budget 128] [--out policies.png]
"""
import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

import lococo  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or GGUF file (default: the bundled model)")
    parser.add_argument("--text", default=str(ROOT / "tests" / "data" / "moby-dick-test-slice.txt"),
                        help="text scored for perplexity")
    parser.add_argument("--budget", type=int, default=128, help="M, slots of every bounded policy")
    parser.add_argument("--lengths", default="1024,2048", help="passkey prompt lengths, comma separated")
    parser.add_argument("--trials", type=int, default=2, help="passkey examples per length and depth")
    parser.add_argument("--out", default="policies.png", help="the plot (PNG)")
    args = parser.parse_args()

    model = lococo.load(args.model)
    text = pathlib.Path(args.text).read_text()
    policies = [p["name"] for p in lococo.policies()]
    ppl = {}
    for name in policies:
        cache = model.cache(name, budget=args.budget)
        ppl[name] = lococo.perplexity(model, text, cache=cache)["perplexity"]
    lengths = [int(n) for n in args.lengths.split(",")]
    report = lococo.eval_passkey(model, policies=policies, budget=args.budget, lengths=lengths, trials=args.trials)
    passkey = {run["policy"]: 100 * (run["accuracy"] or 0) for run in report["runs"]}

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(policies, [ppl[p] for p in policies], color="tab:blue")
    left.set_ylabel("perplexity (lower is better)")
    left.set_ylim(min(ppl.values()) * 0.95, max(ppl.values()) * 1.02)
    right.bar(policies, [passkey.get(p, 0) for p in policies], color="tab:orange")
    right.set_ylabel(f"passkey accuracy % (lengths {args.lengths})")
    right.set_ylim(0, 105)
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{pathlib.Path(model.path).name}: every policy at M = {args.budget}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(json.dumps({"budget": args.budget, "perplexity": ppl, "passkey_percent": passkey, "plot": args.out}))


if __name__ == "__main__":
    main()
