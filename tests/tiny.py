"""Small models, stand-ins and data helpers shared by the tests (imported as `from tiny import ...`)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import gpt_model

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sms_spam_collection.zip"
needs_real_data = pytest.mark.skipif(not SHARED_ZIP.is_file(),
                                     reason=f"real SMS data not found at {SHARED_ZIP} (the team's shared folder)")


def write(path, text, encoding="utf-8"):
    """A text file in the given encoding; returns its path."""
    path.write_bytes(text.encode(encoding))
    return path


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


# --- tiny GPT-2 weights in the chapter's params layout (what download_and_load_gpt2 returns) ---

TINY_SETTINGS = {"n_vocab": 10, "n_ctx": 6, "n_embd": 8, "n_head": 2, "n_layer": 2}


def tiny_params(seed=0):
    """Random weights in the chapter's params layout (numpy, float32)."""
    rng = np.random.default_rng(seed)
    E = TINY_SETTINGS["n_embd"]

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {"wte": r(TINY_SETTINGS["n_vocab"], E), "wpe": r(TINY_SETTINGS["n_ctx"], E), "g": r(E), "b": r(E),
            "blocks": [{"attn": {"c_attn": {"w": r(E, 3 * E), "b": r(3 * E)}, "c_proj": {"w": r(E, E), "b": r(E)}},
                        "mlp": {"c_fc": {"w": r(E, 4 * E), "b": r(4 * E)}, "c_proj": {"w": r(4 * E, E), "b": r(E)}},
                        "ln_1": {"g": r(E), "b": r(E)}, "ln_2": {"g": r(E), "b": r(E)}}
                       for _ in range(TINY_SETTINGS["n_layer"])]}


def flatten(params, prefix=""):
    """Nested params -> {"blocks/0/attn/c_attn/w": array, ...} for comparisons."""
    out = {}
    items = enumerate(params) if isinstance(params, list) else params.items()
    for key, value in items:
        if isinstance(value, (dict, list)):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def assert_same_params(got, want):
    got, want = flatten(got), flatten(want)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def hf_tensors(params, prefix=""):
    """The same weights under Hugging Face gpt2 names (Conv1D [in, out]), plus the buffers real files carry."""
    t = {"wte.weight": params["wte"], "wpe.weight": params["wpe"],
         "ln_f.weight": params["g"], "ln_f.bias": params["b"]}
    n = TINY_SETTINGS["n_ctx"]
    for i, blk in enumerate(params["blocks"]):
        for hf, ours in [("attn.c_attn", blk["attn"]["c_attn"]), ("attn.c_proj", blk["attn"]["c_proj"]),
                         ("mlp.c_fc", blk["mlp"]["c_fc"]), ("mlp.c_proj", blk["mlp"]["c_proj"])]:
            t[f"h.{i}.{hf}.weight"], t[f"h.{i}.{hf}.bias"] = ours["w"], ours["b"]
        for ln in ("ln_1", "ln_2"):
            t[f"h.{i}.{ln}.weight"], t[f"h.{i}.{ln}.bias"] = blk[ln]["g"], blk[ln]["b"]
        t[f"h.{i}.attn.bias"] = np.tril(np.ones((n, n), dtype=np.float32))[None, None]
        t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    t = {prefix + k: np.ascontiguousarray(v) for k, v in t.items()}
    t["lm_head.weight"] = np.ascontiguousarray(params["wte"])
    return t
