"""Size of a saved GPT-2-small-shaped classifier: the default small checkpoint against --full-checkpoint.

    python benchmarks/checkpoint_sizes.py

GPT-2 small's shape with random weights (seed 123, no download) stands in for the pretrained model: the file
sizes depend on the shapes only. Each file is loaded back and must give the trained model's logits exactly.
"""

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beyond.checkpoints import load_classifier, save_classifier  # after the sys.path line
from beyond.experiments import setup_classifier
from beyond.model_setup import build_model_with_base


def measure(trainable_layers, folder):
    """(small MB, full MB, save/load seconds) for one classifier whose trainable weights were changed."""
    model, cfg, base = build_model_with_base("gpt2-small (124M)", "random", seed=123)
    setup_classifier(model, 2, trainable_layers)
    with torch.no_grad():  # stand-in for training: every trainable weight changes
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    ids = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        expected = model.eval()(ids)
    sizes = {}
    for name, full in (("small", False), ("full", True)):
        path = Path(folder) / f"{trainable_layers}-{name}.pt"
        start = time.time()
        save_classifier(path, model, cfg, base=base, full=full)
        loaded, _ = load_classifier(path)
        with torch.no_grad():
            assert torch.equal(loaded(ids), expected), f"{name} checkpoint gave other logits"
        sizes[name] = (path.stat().st_size / 1e6, time.time() - start)
    return sizes


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| trainable | small checkpoint | full checkpoint | save + load (small / full) |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for layers in ("last_block", "lora"):
            s = measure(layers, folder)
            print(f"| {layers} | {s['small'][0]:.1f} MB | {s['full'][0]:.1f} MB | "
                  f"{s['small'][1]:.1f} s / {s['full'][1]:.1f} s |", flush=True)
    print("Both files of each row load back to identical logits.")


if __name__ == "__main__":
    main()
