"""Benchmark: the fast trainer's step on the trainable top alone (forward, backward, fused AdamW), in ms per step.

    python benchmarks/top_step.py                 # bf16 cache, 120 positions, 3 rounds
    python benchmarks/top_step.py --precision fp32 --positions 40

The top is what every one of the chapter's 650 steps pays after the frozen pass: GPT-2 small's last block read
at one position, the final LayerNorm, the 2-class head and AdamW over their 7.1 M parameters, on a batch of 8
cached rows. GPT-2-small shape with random weights and random cached rows (the cost does not depend on the
values). Each round is a fresh process, timed twice: first as it starts ("fresh process"), then after a frozen
pass over 400 messages of 120 tokens, as in the training command ("after a frozen pass"). The two differ by
glibc's allocator: it hands freed blocks of a few MB back to the system until a process has freed larger ones,
and the step then faults its gradients' pages in again each time. Also printed: page faults per step and the
machine's own matmul speed.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(precision, positions, steps):
    """[fresh process, after a frozen pass]: each {phase: ms per step, "faults": page faults per step}."""
    import resource
    import time

    import torch
    import torch.nn.functional as F

    import gpt_model
    from beyond import activation_cache, fast_trainer
    from beyond.experiments import replace_head_and_freeze

    torch.manual_seed(123)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block")
    optimizer = fast_trainer.make_optimizer(model)
    cache = activation_cache.ActivationCache().bind(model, "cpu", precision)
    rows = [torch.randn(8, positions, 768).to(cache.dtype) for _ in range(20)]
    pos, targets = torch.full((8,), positions - 1), torch.randint(0, 2, (8,))
    model.train()
    seconds = {"forward": 0.0, "backward": 0.0, "AdamW": 0.0}

    def step(x, timed):
        marks = [time.perf_counter()]
        optimizer.zero_grad()
        loss = F.cross_entropy(fast_trainer._top_logits(model, cache, x, pos).float(), targets)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if timed:
            for phase, a, b in zip(seconds, marks, marks[1:]):
                seconds[phase] += b - a

    def timed_steps():
        for phase in seconds:
            seconds[phase] = 0.0
        for i in range(5):
            step(rows[i], timed=False)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(steps):
            step(rows[i % len(rows)], timed=True)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        result = {phase: s / steps * 1e3 for phase, s in seconds.items()}
        return {**result, "step": sum(result.values()), "faults": faults / steps}

    fresh = timed_steps()
    messages = [torch.randint(0, 50257, (120,)) for _ in range(400)]
    with activation_cache.ActivationCache() as frozen:  # what the command runs before its first step
        frozen.bind(model, "cpu", precision).add(model, messages, "cpu", progress=False)
    return [fresh, timed_steps()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--positions", type=int, default=120, help="cached positions per row (default 120)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each setting (default 3)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.precision, args.positions, args.steps)))
        return
    from benchmark_fast_training import matmul_gflops

    print(f"Machine: [960,768] x [768,3072] at {matmul_gflops('fp32'):.0f} GFLOP/s fp32, "
          f"{matmul_gflops('bf16'):.0f} GFLOP/s bf16.")
    print(f"The top's step: {args.precision} cache, batch 8 x {args.positions} positions, {args.steps} steps per run, "
          "GPT-2 small shape, random weights.\n")
    print("| process | round | forward | backward | AdamW | step | page faults per step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for round_ in range(1, args.rounds + 1):
        out = subprocess.run([sys.executable, __file__, "--child", "--precision", args.precision,
                              "--positions", str(args.positions), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True, cwd=REPO)
        for name, r in zip(("fresh process", "after a frozen pass"), json.loads(out.stdout.splitlines()[-1])):
            print(f"| {name} | {round_} | {r['forward']:.1f} ms | {r['backward']:.1f} ms | {r['AdamW']:.1f} ms | "
                  f"{r['step']:.1f} ms | {r['faults']:.0f} |")


if __name__ == "__main__":
    main()
