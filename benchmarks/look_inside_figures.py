"""Notebook 9's two figures for a trained classifier: the top-k vs random deletion check, attention on padding.

    python train_classifier.py --test-mode --data ../shared/data/sms_spam_collection.zip \
        --num-epochs 5 --lr 1e-3 --output-dir outputs/tiny
    python benchmarks/look_inside_figures.py --checkpoint outputs/tiny [--max-spam 30]

Uses the chapter's balanced split of the real SMS data ($SMS_SPAM_ZIP, data/'s download, or --data). The figures describe the
classifier in the checkpoint: a tiny or random-weight model tells about itself, not about pretrained GPT-2.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beyond import data_splits, gpt2_tokenizer, look_inside  # after the sys.path line: runs from anywhere
from beyond.checkpoints import load_classifier


def deletion_figures(model, rows, k, keep_length, token_pos):
    """Mean fall of P(spam) when each message's top-k tokens (per method) or k random tokens are deleted."""
    options = {"trainable_token_pos": token_pos}
    figures = {}
    for method in ("occlusion", "integrated_gradients"):
        start = time.perf_counter()
        scores = [look_inside.attributions(model, ids, method, keep_length=keep_length, **options) for ids in rows]
        check = look_inside.deletion_check(model, rows, scores, k=k, keep_length=keep_length, **options)
        figures[method] = {"messages": len(check), "mean P(spam)": check["P(spam)"].mean(),
                           f"drop, top-{k}": (check["P(spam)"] - check["without top-k"]).mean(),
                           f"drop, {k} random": (check["P(spam)"] - check["without random k"]).mean(),
                           "seconds": time.perf_counter() - start}
    return pd.DataFrame(figures).T


def padding_figures(model, tokenizer, texts, max_length):
    """Share of the read position's attention on padding per layer, read at the last position and flexibly."""
    batch = torch.tensor([look_inside.encode_message(t, tokenizer, max_length) for t in texts])
    table = {}
    for pos in ("last", "flexible"):
        parts = [look_inside.pad_attention_share(model, chunk, pos) for chunk in batch.split(16)]
        weights = [len(chunk) for chunk in batch.split(16)]
        table[f"read: {pos}"] = np.average([p["attention_on_padding"] for p in parts], axis=0, weights=weights)
    frame = pd.DataFrame(table, index=[f"layer {i + 1}" for i in range(len(table["read: last"]))])
    frame["padding share"] = (batch == look_inside.PAD_TOKEN_ID).float().mean().item()
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a training run's output folder or its classifier.pt")
    parser.add_argument("--data", default=None, help="the SMS data (default: $SMS_SPAM_ZIP, else data/'s download)")
    parser.add_argument("--k", type=int, default=3, help="tokens deleted per message")
    parser.add_argument("--max-spam", type=int, default=None, help="check only the first N test spam messages")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = args.data or data_splits.find_local_sms_zip()
    if data is None:
        print("error: the SMS data was not found; pass --data PATH (the UCI zip or its TSV) or set SMS_SPAM_ZIP.",
              file=sys.stderr)
        return 1
    model, info = load_classifier(args.checkpoint)
    max_length = info["max_length"] or 120  # a flexible run pads per batch: measure it at the chapter's 120
    token_pos = (info.get("extra") or {}).get("trainable_token_pos", "last")
    tokenizer = gpt2_tokenizer.get_gpt2_tokenizer()
    with tempfile.TemporaryDirectory() as work:
        test = pd.read_csv(data_splits.prepare_spam_splits(data, work, verbose=False)["test"])
    spam = test.loc[test["Label"] == 1, "Text"].tolist()[:args.max_spam]
    rows = [look_inside.encode_message(t, tokenizer, max_length) for t in spam]
    cfg = info["config"]
    print(f"classifier {args.checkpoint}: {cfg['n_layers']} blocks, {cfg['emb_dim']} dims, trained reading "
          f"'{token_pos}'; inputs padded to {max_length} tokens\n")
    print(f"Top-{args.k} vs random deletion over {len(rows)} test spam messages (P(spam) falls by):")
    print(deletion_figures(model, rows, args.k, True, token_pos).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nShare of the read position's attention on pad tokens, {len(test)} test messages:")
    print(padding_figures(model, tokenizer, test["Text"].tolist(), max_length)
          .to_string(float_format=lambda v: f"{v:.1%}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
