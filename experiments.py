"""The chapter's bonus experiments that change the model: LoRA, the causal-mask switch, what trains.

Each is a switch of the command line (`--trainable-layers lora`, `--disable-causal-mask`, ...); the defaults give
the chapter's classifier. A saved classifier records its switches, and rebuild_classifier_switches gives a fresh
model the same structure before its weights are loaded.
"""

import math

import torch

from train_classifier import replace_head_and_freeze


def setup_classifier(model, num_classes=2, trainable_layers="last_block", *, lora_rank=16, lora_alpha=16,
                     disable_causal_mask=False):
    """The new head and what trains (the chapter's choices, LoRA, or other layers), then the causal-mask switch."""
    if trainable_layers == "lora":
        # LoRA: the new head too is frozen; only the low-rank updates beside every Linear (head included) train
        model.out_head = torch.nn.Linear(in_features=model.tok_emb.weight.shape[1], out_features=num_classes)
        apply_lora(model, lora_rank, lora_alpha)
    else:
        replace_head_and_freeze(model, num_classes, trainable_layers)
    if disable_causal_mask:
        set_causal_mask(model, False)
    return model


# --- LoRA: a small trainable low-rank update next to every frozen Linear (appendix E's idea) ---

class LoRALayer(torch.nn.Module):
    """The low-rank update x @ A @ B, scaled by alpha / rank; B starts at zero so training starts from the model."""

    def __init__(self, in_dim, out_dim, rank, alpha):
        super().__init__()
        self.A = torch.nn.Parameter(torch.empty(in_dim, rank))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the same init as an nn.Linear weight
        self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))
        self.rank = rank
        self.alpha = alpha

    def forward(self, x):
        return (self.alpha / self.rank) * (x @ self.A @ self.B)


class LinearWithLoRA(torch.nn.Module):
    """A frozen nn.Linear plus its LoRA update; .linear keeps the original weights (state_dict "X.linear.weight")."""

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

    # read like the nn.Linear it wraps, so code asking for out_features or bias keeps working
    in_features = property(lambda self: self.linear.in_features)
    out_features = property(lambda self: self.linear.out_features)
    weight = property(lambda self: self.linear.weight)
    bias = property(lambda self: self.linear.bias)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def replace_linear_with_lora(model, rank, alpha):
    """Swap every nn.Linear below `model` (out_head included) for a LinearWithLoRA, in place; returns the model."""
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        elif not isinstance(module, LinearWithLoRA):  # never wrap twice
            replace_linear_with_lora(module, rank, alpha)
    return model


def apply_lora(model, rank=16, alpha=16):
    """Freeze every weight, then add LoRA to every Linear: afterwards only the A and B matrices train."""
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}; pass e.g. --lora-rank 16.")
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, int(rank), float(alpha))
    for module in model.modules():
        if isinstance(module, LoRALayer):  # new ones train anyway; earlier ones were just frozen above
            module.requires_grad_(True)
    return model


def lora_settings(model):
    """{"lora_rank": r, "lora_alpha": a} when the model carries LoRA layers, else {} (for the checkpoint extras)."""
    for module in model.modules():
        if isinstance(module, LoRALayer):
            return {"lora_rank": module.rank, "lora_alpha": module.alpha}
    return {}


def count_trainable_parameters(model):
    """(trainable, total) parameter counts: what freezing or LoRA leaves to train."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# --- Switches kept in a saved classifier and rebuilt when it is loaded ---

def set_causal_mask(model, causal=True):
    """Switch every attention layer's causal mask on or off (off: each token sees the whole message)."""
    for module in getattr(model, "module", model).modules():  # a DDP wrapper or the model
        if hasattr(module, "causal") and hasattr(module, "W_query"):
            module.causal = bool(causal)
    return model


def rebuild_classifier_switches(model, checkpoint):
    """Give a freshly built model the structure a checkpoint was trained with: LoRA layers, no causal mask."""
    extra = checkpoint.get("extra") or {}
    if checkpoint.get("trainable_layers") == "lora" and not lora_settings(model):
        apply_lora(model, extra.get("lora_rank", 16), extra.get("lora_alpha", 16))
    if extra.get("disable_causal_mask"):
        set_causal_mask(model, False)
    return model
