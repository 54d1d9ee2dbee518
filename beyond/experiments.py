"""The chapter's bonus experiments that change the model: what trains (LoRA included), the causal-mask switch.

Each is a switch of the command line (`--trainable-layers lora`, `--disable-causal-mask`, ...); the defaults give
the chapter's classifier. The switches that change the loss (the token that classifies, averaging, ignore_index,
gradient accumulation) live in bonus_training.py. A saved classifier records its switches, and rebuild_classifier_switches gives a fresh
model the same structure before its weights are loaded.
"""

import math

import torch

# What trains besides the new head: the chapter's last block (with final_norm), or the bonus script's choices
FROZEN_BASE_CHOICES = ("last_layer", "last_block", "last_two_blocks", "all")
TRAINABLE_LAYERS = (*FROZEN_BASE_CHOICES, "lora", "lora_alternative")
# How a LoRA update is scaled: "alpha" as the chapter's bonus experiments (and appendix E) do, or "alpha_over_rank"
# as the LoRA paper and most libraries do (alpha / rank: changing the rank then keeps the update's size).
LORA_SCALINGS = ("alpha", "alpha_over_rank")


def replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block"):
    """Freeze the model, swap its 50257-word output layer for a num_classes head, unfreeze the top; returns model.

    trainable_layers: what trains besides the new head; the chapter trains the last block and final_norm.
    """
    if trainable_layers not in FROZEN_BASE_CHOICES:
        raise ValueError(f"Unknown trainable_layers {trainable_layers!r}; choose one of "
                         f"{', '.join(FROZEN_BASE_CHOICES)} (LoRA: setup_classifier).")
    for param in model.parameters():
        param.requires_grad = False
    # A new Linear layer's parameters have requires_grad=True: the head always trains.
    model.out_head = torch.nn.Linear(in_features=model.tok_emb.weight.shape[1], out_features=num_classes)
    unfrozen = {"last_layer": [], "last_block": [model.trf_blocks[-1], model.final_norm],
                "last_two_blocks": [model.trf_blocks[-2:], model.final_norm], "all": [model]}[trainable_layers]
    for module in unfrozen:
        for param in module.parameters():
            param.requires_grad = True
    return model


def setup_classifier(model, num_classes=2, trainable_layers="last_block", *, lora_rank=16, lora_alpha=16,
                     lora_scaling="alpha", disable_causal_mask=False):
    """The new head and what trains (the chapter's choices, LoRA, or other layers), then the causal-mask switch."""
    if trainable_layers in ("lora", "lora_alternative"):
        # As the bonus experiments: the new head trains, and it is wrapped with LoRA like every other Linear
        model.out_head = torch.nn.Linear(in_features=model.tok_emb.weight.shape[1], out_features=num_classes)
        apply_lora(model, lora_rank, lora_alpha, lora_scaling, merged=trainable_layers == "lora_alternative")
        model.out_head.linear.requires_grad_(True)
    else:
        replace_head_and_freeze(model, num_classes, trainable_layers)
    if disable_causal_mask:
        set_causal_mask(model, False)
    return model


# --- LoRA: a small trainable low-rank update next to every frozen Linear (appendix E's idea) ---

class LoRALayer(torch.nn.Module):
    """The low-rank update x @ A @ B, times alpha (the bonus) or alpha / rank; B starts at zero, so training starts
    from the model."""

    def __init__(self, in_dim, out_dim, rank, alpha, scaling="alpha"):
        super().__init__()
        if scaling not in LORA_SCALINGS:
            raise ValueError(f"Unknown LoRA scaling {scaling!r}; choose one of {', '.join(LORA_SCALINGS)}.")
        self.A = torch.nn.Parameter(torch.empty(in_dim, rank))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the same init as an nn.Linear weight
        self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))
        self.rank = rank
        self.alpha = alpha
        self.scaling = scaling

    def forward(self, x):
        factor = self.alpha if self.scaling == "alpha" else self.alpha / self.rank
        return factor * (x @ self.A @ self.B)


class LinearWithLoRA(torch.nn.Module):
    """A frozen nn.Linear plus its LoRA update; .linear keeps the original weights (state_dict "X.linear.weight")."""

    def __init__(self, linear, rank, alpha, scaling="alpha"):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, scaling)

    # read like the nn.Linear it wraps, so code asking for out_features or bias keeps working
    in_features = property(lambda self: self.linear.in_features)
    out_features = property(lambda self: self.linear.out_features)
    weight = property(lambda self: self.linear.weight)
    bias = property(lambda self: self.linear.bias)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


class LinearWithLoRAMerged(LinearWithLoRA):
    """The bonus's lora_alternative: the same parameters and function, the update merged into one weight first."""

    def forward(self, x):
        factor = self.lora.alpha if self.lora.scaling == "alpha" else self.lora.alpha / self.lora.rank
        combined_weight = self.linear.weight + factor * (self.lora.A @ self.lora.B).T
        return torch.nn.functional.linear(x, combined_weight, self.linear.bias)


def replace_linear_with_lora(model, rank, alpha, scaling="alpha", merged=False):
    """Swap every nn.Linear below `model` (out_head included) for a LinearWithLoRA(Merged), in place; returns model."""
    wrapper = LinearWithLoRAMerged if merged else LinearWithLoRA
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            setattr(model, name, wrapper(module, rank, alpha, scaling))
        elif not isinstance(module, LinearWithLoRA):  # never wrap twice
            replace_linear_with_lora(module, rank, alpha, scaling, merged)
    return model


def apply_lora(model, rank=16, alpha=16, scaling="alpha", merged=False):
    """Freeze every weight, then add LoRA to every Linear: afterwards only the A and B matrices train.

    merged=True: the bonus script's lora_alternative (LinearWithLoRAMerged), the same parameters and maths.
    """
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}; pass e.g. --lora-rank 16.")
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, int(rank), float(alpha), scaling, merged)
    for module in model.modules():
        if isinstance(module, LoRALayer):  # new ones train anyway; earlier ones were just frozen above
            module.requires_grad_(True)
    return model


def lora_settings(model):
    """{"lora_rank", "lora_alpha", "lora_scaling"} (and "lora_merged": True) when the model has LoRA layers, else {}."""
    for module in model.modules():
        if isinstance(module, LinearWithLoRA):
            lora = module.lora
            settings = {"lora_rank": lora.rank, "lora_alpha": lora.alpha, "lora_scaling": lora.scaling}
            return {**settings, "lora_merged": True} if isinstance(module, LinearWithLoRAMerged) else settings
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


def classifier_switches(model):
    """The switches that change a model's structure, read off the model itself: {"lora": {...} or {}, "causal"}."""
    causal = [m.causal for m in getattr(model, "module", model).modules() if hasattr(m, "causal")]
    return {"lora": lora_settings(model), "causal": all(causal)}


def rebuild_classifier_switches(model, checkpoint):
    """Give a freshly built model the structure a checkpoint was trained with: LoRA layers, no causal mask."""
    switches = checkpoint.get("switches")
    if switches is None:  # a file from before the switches were read off the model: its extras say them
        extra = checkpoint.get("extra") or {}
        lora = {}
        if checkpoint.get("trainable_layers") == "lora":  # those files scaled LoRA by alpha / rank
            lora = {"lora_rank": extra.get("lora_rank", 16), "lora_alpha": extra.get("lora_alpha", 16),
                    "lora_scaling": extra.get("lora_scaling", "alpha_over_rank")}
        switches = {"lora": lora, "causal": not extra.get("disable_causal_mask")}
    lora = switches.get("lora") or {}
    if lora and not lora_settings(model):
        apply_lora(model, lora["lora_rank"], lora["lora_alpha"], lora.get("lora_scaling", "alpha"),
                   merged=lora.get("lora_merged", False))
    if not switches.get("causal", True):
        set_causal_mask(model, False)
    return model
