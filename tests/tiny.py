"""Small models and stand-ins shared by the tests (imported as `from tiny import ...`)."""

import torch

import gpt_model


def tiny_model(seed=123, **overrides):
    """The offline tiny GPT (test mode's config), seeded; overrides change its settings."""
    torch.manual_seed(seed)
    return gpt_model.GPTModel({**gpt_model.TINY_CONFIG, **overrides})


def tiny_classifier(seed=123, num_classes=2):
    """The offline tiny GPT with a fresh classification head, as test mode builds it."""
    torch.manual_seed(seed)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], num_classes)
    return model


class TableLogits(torch.nn.Module):
    """A stand-in model whose class logits at each position are given by the test (first token id picks them)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return self.table[ids]  # [b, t, classes]
