"""The GPT-2 network of chapters 4-6: config presets, GPTModel and its parts, loading OpenAI's weights, text <-> ids."""

import torch
import torch.nn.functional as F
from torch import nn

# -----------------------------------------------------------------------------------------------------------
# Configurations (the chapter's names and numbers)

BASE_CONFIG = {
    "vocab_size": 50257,  # GPT-2's BPE vocabulary
    "context_length": 1024,  # GPT-2's maximum number of positions
    "drop_rate": 0.0,  # no dropout when fine-tuning, as in the chapter
    "qkv_bias": True,  # OpenAI's checkpoints have query/key/value biases
}

model_configs = {
    "gpt2-small (124M)": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-medium (355M)": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-large (774M)": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "gpt2-xl (1558M)": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}

# chapter 4's model, trained from scratch in chapter 5
GPT_CONFIG_124M = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}

# a tiny random GPT for the offline test mode: same vocabulary, so the real tokenizer and data still fit
TINY_CONFIG = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 32,
    "n_layers": 2,
    "n_heads": 2,
    "drop_rate": 0.0,
    "qkv_bias": True,
}


def _model_size_names():
    """Every accepted spelling (lower case, no spaces) -> the chapter's key in model_configs."""
    names = {}
    for key in model_configs:
        short, size = key.split(" ")  # "gpt2-small", "(124M)"
        for alias in (key, short, size.strip("()")):
            names[alias.replace(" ", "").lower()] = key
    names["gpt2"] = "gpt2-small (124M)"  # Hugging Face's name for the small model
    return names


def _canonical_model_size(model_size):
    """The chapter's key for a model size such as "gpt2-small (124M)", "gpt2-small" or "124M"."""
    key = _model_size_names().get(str(model_size).replace(" ", "").lower())
    if key is None:
        choices = ", ".join(repr(k) for k in model_configs)
        raise ValueError(f"unknown model size {model_size!r}: choose one of {choices} (or 124M, 355M, 774M, 1558M)")
    return key


def get_model_config(model_size):
    """The full GPTModel config for a GPT-2 size: BASE_CONFIG plus that size's width and depth (a new dict)."""
    return {**BASE_CONFIG, **model_configs[_canonical_model_size(model_size)]}


def model_size_to_download_name(model_size):
    """The name of OpenAI's checkpoint folder for a model size: "124M", "355M", "774M" or "1558M"."""
    return _canonical_model_size(model_size).split("(")[1].rstrip(")")


# -----------------------------------------------------------------------------------------------------------
# The network


class LayerNorm(nn.Module):
    """Layer normalization with the chapter's parameter names (scale, shift) so checkpoints load by name."""

    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        # the same biased-variance normalization as the chapter's, in one fused call
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with the tanh approximation: the curve GPT-2 was trained with, so pretrained weights behave."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """The position-wise MLP: widen to 4x, GELU, back to emb_dim (layers[0] and layers[2] are the Linears)."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: chapter 3's maths written out, PyTorch's fused kernel as the fast path."""

    # The fast path: F.scaled_dot_product_attention computes the same softmax(q k^T / sqrt(d)) v in one fused
    # kernel, without building the [tokens x tokens] score matrix in memory. Set False to run the written-out
    # path (forward_readable) a reader follows in chapter 3; tests check that the two agree.
    use_fused_attention = True

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"emb_dim {d_out} is not divisible by n_heads {num_heads}: pick n_heads that divides it")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads  # Reduce the projection dim to match desired output dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # Linear layer to combine head outputs
        self.dropout = nn.Dropout(dropout)
        # The chapter's causal mask: 1 above the diagonal marks the future tokens a query must not see. Not
        # persistent: a constant needs no saving (our files stay 4 MB per block smaller); the chapter's files,
        # which hold it, still load strictly (the hook below sets theirs aside).
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1),
                             persistent=False)
        self.register_load_state_dict_pre_hook(_drop_chapter_mask_buffer)
        # False lets every token see the whole input, for the bonus experiment "disable the causal mask"
        self.causal = True

    def forward(self, x):
        if not self.use_fused_attention:
            return self.forward_readable(x)
        b, num_tokens, _ = x.shape
        # call the Linear modules (not their weights) so wrappers such as LoRA layers take part
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        # [b, t, d_out] -> [b, heads, t, head_dim]
        queries, keys, values = (
            z.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2) for z in (queries, keys, values)
        )
        context_vec = F.scaled_dot_product_attention(
            queries, keys, values, dropout_p=self.dropout.p if self.training else 0.0, is_causal=self.causal
        )
        context_vec = context_vec.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)

    def forward_readable(self, x):
        """Chapter 3's attention step by step: scores, causal mask, scaling, softmax, dropout, context vectors."""
        b, num_tokens, _ = x.shape
        keys = self.W_key(x)  # Shape: (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        # Implicitly split the matrix by adding a `num_heads` dimension: (b, num_tokens, num_heads, head_dim)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)

        # Transpose: (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
        keys = keys.transpose(1, 2)
        queries = queries.transpose(1, 2)
        values = values.transpose(1, 2)

        # Dot products of every query with every key, for each head
        attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_tokens)

        if self.causal:
            # The mask truncated to the number of tokens, as booleans; future positions get -inf (weight 0)
            mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
            attn_scores.masked_fill_(mask_bool, -torch.inf)

        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)

        # Context vectors: (b, num_heads, num_tokens, head_dim) -> (b, num_tokens, num_heads, head_dim)
        context_vec = (attn_weights @ values).transpose(1, 2)

        # Combine heads, where self.d_out = self.num_heads * self.head_dim
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)  # optional projection


def _drop_chapter_mask_buffer(module, state_dict, prefix, *args):
    """Set aside the chapter's saved causal mask ("...att.mask"): ours is built, not loaded, so both files load."""
    state_dict.pop(prefix + "mask", None)  # load_state_dict works on a copy: the caller's dict is untouched


class TransformerBlock(nn.Module):
    """One pre-LayerNorm transformer block: attention then feed-forward, each added back to its input."""

    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, a stack of transformer blocks, a final norm and the output head."""

    def __init__(self, cfg):
        super().__init__()
        # modules are created in the chapter's order, so torch.manual_seed gives the chapter's random init
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        seq_len = in_idx.shape[1]
        context_length = self.pos_emb.num_embeddings
        if seq_len > context_length:
            raise ValueError(
                f"the input has {seq_len} tokens but the model's context_length is {context_length}: "
                f"truncate the input to at most {context_length} tokens"
            )
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = self.drop_emb(tok_embeds + pos_embeds)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)  # [batch, seq_len, out_features]: the vocabulary, or the classes after a head swap


# -----------------------------------------------------------------------------------------------------------
# Text generation and tokens


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding: append max_new_tokens most likely tokens to idx [batch, n], seeing at most context_size."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to what the model can attend to
        with torch.no_grad():
            logits = model(idx_cond)
        # argmax of the logits equals argmax of the softmax (the chapter's), without rounding ties
        idx_next = torch.argmax(logits[:, -1, :], dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def text_to_token_ids(text, tokenizer):
    """Encode text into a [1, n] LongTensor (a batch of one), allowing the <|endoftext|> token."""
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer):
    """Decode a [1, n] (or [n]) tensor of token ids back into text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


# -----------------------------------------------------------------------------------------------------------
# OpenAI's pretrained weights


def _checkpoint_settings_mismatch(gpt, params):
    """One sentence naming the first config setting in which the checkpoint and the model differ, or None."""
    fix = "build the model with the config of the checkpoint's size (get_model_config)"
    wte, wpe, blocks = params["wte"], params["wpe"], params["blocks"]
    model_vocab, model_emb = gpt.tok_emb.weight.shape
    checks = [
        ("emb_dim", wte.shape[1], model_emb),
        ("vocab_size", wte.shape[0], model_vocab),
        ("context_length", wpe.shape[0], gpt.pos_emb.weight.shape[0]),
        ("n_layers", len(blocks), len(gpt.trf_blocks)),
    ]
    for name, theirs, ours in checks:
        if theirs != ours:
            return f"the checkpoint has {name} {theirs} but the model was built with {ours}: {fix}"
    if gpt.trf_blocks[0].att.W_query.bias is None:
        return "the checkpoint has query/key/value biases but the model was built with qkv_bias=False: " + fix
    if tuple(gpt.out_head.weight.shape) != tuple(wte.shape):
        return (
            f"the model's out_head has shape {tuple(gpt.out_head.weight.shape)} but GPT-2 ties it to the token "
            f"embedding {tuple(wte.shape)}: load the pretrained weights before replacing the head"
        )
    return None


def _weight_pairs(gpt, params):
    """(checkpoint name, model parameter, checkpoint array in the parameter's layout) for every tensor."""
    # OpenAI's Conv1D weights are [in, out]; nn.Linear stores [out, in], hence the transposes (.T).
    pairs = [("wte", gpt.tok_emb.weight, params["wte"]), ("wpe", gpt.pos_emb.weight, params["wpe"])]
    for i, (block, p) in enumerate(zip(gpt.trf_blocks, params["blocks"])):
        name = f"blocks[{i}]"
        w, bias = p["attn"]["c_attn"]["w"], p["attn"]["c_attn"]["b"]
        e = w.shape[-1] // 3  # c_attn holds query, key and value side by side
        for j, linear in enumerate((block.att.W_query, block.att.W_key, block.att.W_value)):
            pairs.append((f"{name}.attn.c_attn.w", linear.weight, w[:, j * e : (j + 1) * e].T))
            pairs.append((f"{name}.attn.c_attn.b", linear.bias, bias[j * e : (j + 1) * e]))
        for linear, key in ((block.att.out_proj, "attn.c_proj"), (block.ff.layers[0], "mlp.c_fc"),
                            (block.ff.layers[2], "mlp.c_proj")):
            group, layer = key.split(".")
            pairs.append((f"{name}.{key}.w", linear.weight, p[group][layer]["w"].T))
            pairs.append((f"{name}.{key}.b", linear.bias, p[group][layer]["b"]))
        for norm, theirs, ln in ((block.norm1, p["ln_1"], "ln_1"), (block.norm2, p["ln_2"], "ln_2")):
            pairs.append((f"{name}.{ln}.g", norm.scale, theirs["g"]))
            pairs.append((f"{name}.{ln}.b", norm.shift, theirs["b"]))
    pairs.append(("g", gpt.final_norm.scale, params["g"]))
    pairs.append(("b", gpt.final_norm.shift, params["b"]))
    pairs.append(("wte (tied output head)", gpt.out_head.weight, params["wte"]))  # GPT-2 reuses wte as its head
    return pairs


def _as_tensor(array):
    """A tensor view of a numpy array or tensor (copied only when numpy marks it read-only)."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.as_tensor(array) if array.flags.writeable else torch.tensor(array)


def load_weights_into_gpt(gpt, params):
    """Copy OpenAI's GPT-2 weights (the nested numpy dict of download_and_load_gpt2) into a GPTModel in place."""
    try:
        problem = _checkpoint_settings_mismatch(gpt, params)
        pairs = _weight_pairs(gpt, params)
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(
            f"params is not a GPT-2 weight dict (missing or malformed entry {err}): "
            "pass the params returned by download_and_load_gpt2"
        ) from err
    if problem:
        raise ValueError(problem)
    # check every shape before copying anything, so a bad checkpoint never leaves a half-loaded model
    for name, param, array in pairs:
        if tuple(array.shape) != tuple(param.shape):
            raise ValueError(
                f"checkpoint tensor {name} gives a {tuple(array.shape)} weight where the model has "
                f"{tuple(param.shape)}: the checkpoint is damaged or not GPT-2's; download it again"
            )
    with torch.no_grad():  # copy_ keeps each Parameter object (optimizers, devices, dtypes stay valid)
        for _, param, array in pairs:
            param.copy_(_as_tensor(array))
    return gpt

