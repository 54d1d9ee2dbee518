"""gpt_model: logits against Hugging Face's GPT-2, chapter checkpoints, loading errors, generation, causality."""

import pytest
import torch

import gpt_model
from gpt_model import (
    TINY_CONFIG,
    GPTModel,
    generate_text_simple,
    get_model_config,
    load_weights_into_gpt,
    model_size_to_download_name,
    text_to_token_ids,
    token_ids_to_text,
)

# a small GPT-2 that still has every part of the real one (vocabulary included, so real token ids fit)
SMALL_CFG = {"vocab_size": 50257, "context_length": 128, "emb_dim": 64, "n_layers": 2, "n_heads": 4,
             "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread; on a busy machine two OpenMP threads wait on each other ~100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed=123, **overrides):
    torch.manual_seed(seed)
    return GPTModel({**SMALL_CFG, **overrides}).eval()


def random_params(cfg, seed=0):
    """An OpenAI-layout params dict (numpy, Conv1D [in, out]) with random values for cfg."""
    g = torch.Generator().manual_seed(seed)
    e = cfg["emb_dim"]

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).numpy()

    def block():
        return {"attn": {"c_attn": {"w": r(e, 3 * e), "b": r(3 * e)}, "c_proj": {"w": r(e, e), "b": r(e)}},
                "mlp": {"c_fc": {"w": r(e, 4 * e), "b": r(4 * e)}, "c_proj": {"w": r(4 * e, e), "b": r(e)}},
                "ln_1": {"g": 1 + r(e), "b": r(e)}, "ln_2": {"g": 1 + r(e), "b": r(e)}}

    return {"wte": r(cfg["vocab_size"], e), "wpe": r(cfg["context_length"], e), "g": 1 + r(e), "b": r(e),
            "blocks": [block() for _ in range(cfg["n_layers"])]}


# ---------------------------------------------------------------------------------------------------------
# Logits against a reference GPT-2 (Hugging Face transformers)


@pytest.fixture(scope="module")
def hf_gpt2():
    """A random 2-layer Hugging Face GPT2LMHeadModel, every weight (biases and norms too) randomised."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=SMALL_CFG["vocab_size"], n_positions=SMALL_CFG["context_length"], n_embd=SMALL_CFG["emb_dim"],
        n_layer=SMALL_CFG["n_layers"], n_head=SMALL_CFG["n_heads"], resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new", attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # zero biases and unit norms (HF's init) would hide a swapped bias or a missing LayerNorm shift
            is_norm_gain = "ln_" in name and name.endswith(".weight")
            p.copy_(torch.randn_like(p) * (0.2 if "ln_" in name else 0.05) + (1.0 if is_norm_gain else 0.0))
    return model


def params_from_hf_state_dict(sd):
    """OpenAI's nested params from a Hugging Face GPT-2 state_dict (its Conv1D weights are already [in, out])."""
    sd = {k.removeprefix("transformer."): v.detach().numpy() for k, v in sd.items()}

    def wb(key):
        return {"w": sd[key + ".weight"], "b": sd[key + ".bias"]}

    def gb(key):
        return {"g": sd[key + ".weight"], "b": sd[key + ".bias"]}

    blocks = [{"attn": {"c_attn": wb(f"h.{i}.attn.c_attn"), "c_proj": wb(f"h.{i}.attn.c_proj")},
               "mlp": {"c_fc": wb(f"h.{i}.mlp.c_fc"), "c_proj": wb(f"h.{i}.mlp.c_proj")},
               "ln_1": gb(f"h.{i}.ln_1"), "ln_2": gb(f"h.{i}.ln_2")}
              for i in range(SMALL_CFG["n_layers"])]
    return {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "g": sd["ln_f.weight"], "b": sd["ln_f.bias"],
            "blocks": blocks}


def max_logit_diff(hf_model, params):
    model = small_model(seed=999)
    load_weights_into_gpt(model, params)
    torch.manual_seed(1)
    idx = torch.randint(0, SMALL_CFG["vocab_size"], (2, SMALL_CFG["context_length"]))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf_model(idx).logits
    assert ours.shape == theirs.shape == (2, SMALL_CFG["context_length"], SMALL_CFG["vocab_size"])
    return (ours - theirs).abs().max().item()


def test_logits_match_hugging_face_gpt2(hf_gpt2):
    diff = max_logit_diff(hf_gpt2, params_from_hf_state_dict(hf_gpt2.state_dict()))
    print(f"max abs logit diff vs transformers GPT-2: {diff:.2e}")
    assert diff <= 1e-4


def test_logits_match_through_safetensors_loader(hf_gpt2, tmp_path):
    """The real path: HF save_pretrained -> model.safetensors -> weight_sources' loader -> our model."""
    from beyond import weight_sources

    hf_gpt2.save_pretrained(tmp_path)
    settings, params = weight_sources.load_gpt2_params_from_safetensors(tmp_path / "model.safetensors")
    assert settings["n_embd"] == SMALL_CFG["emb_dim"] and settings["n_layer"] == SMALL_CFG["n_layers"]
    diff = max_logit_diff(hf_gpt2, params)
    print(f"max abs logit diff vs transformers GPT-2 via safetensors: {diff:.2e}")
    assert diff <= 1e-4


def test_weights_are_copied_in_place_and_head_tied():
    model = small_model()
    wte_param = model.tok_emb.weight
    params = random_params(SMALL_CFG)
    load_weights_into_gpt(model, params)
    assert model.tok_emb.weight is wte_param  # the same Parameter object: optimizers built before stay valid
    assert torch.equal(model.out_head.weight, torch.from_numpy(params["wte"]))
    assert model.out_head.weight is not model.tok_emb.weight  # a copy, as in the chapter: the head trains alone
    # c_attn [in, 3*out] is split into query, key, value and transposed to nn.Linear's [out, in]
    w = params["blocks"][1]["attn"]["c_attn"]["w"]
    assert torch.equal(model.trf_blocks[1].att.W_value.weight, torch.from_numpy(w[:, 128:].T.copy()))


# ---------------------------------------------------------------------------------------------------------
# A state_dict saved from the chapter's own GPTModel (with its causal-mask buffers)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_chapter_state_dict_with_mask_buffers_loads_strictly(mask_dtype):
    source = small_model(seed=1)
    sd = dict(source.state_dict())
    ctx = SMALL_CFG["context_length"]
    for i in range(SMALL_CFG["n_layers"]):
        sd[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(ctx, ctx), diagonal=1).to(mask_dtype)
    keys_before = set(sd)
    target = small_model(seed=2)
    target.load_state_dict(sd)  # strict by default
    assert set(sd) == keys_before  # the caller's dict is left alone
    idx = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        assert torch.equal(source(idx), target(idx))


def test_state_dict_has_the_chapters_names_and_other_unknown_keys_still_fail():
    model = small_model()
    names = set(model.state_dict())
    for name in ["tok_emb.weight", "pos_emb.weight", "final_norm.scale", "final_norm.shift", "out_head.weight",
                 "trf_blocks.1.att.W_query.weight", "trf_blocks.1.att.W_query.bias", "trf_blocks.1.att.out_proj.bias",
                 "trf_blocks.1.ff.layers.0.weight", "trf_blocks.1.ff.layers.2.bias", "trf_blocks.1.norm1.scale",
                 "trf_blocks.1.norm2.shift"]:
        assert name in names
    assert not any(n.endswith(".mask") for n in names)
    sd = dict(model.state_dict(), **{"trf_blocks.0.att.something_else": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="something_else"):
        small_model().load_state_dict(sd)


def _book_keyed_state_dict(model):
    """model's state_dict keyed exactly as the chapter's GPTModel saves it: with every block's float mask buffer."""
    ctx = model.pos_emb.weight.shape[0]
    masks = {f"trf_blocks.{i}.att.mask": torch.triu(torch.ones(ctx, ctx), diagonal=1)
             for i in range(len(model.trf_blocks))}
    return {**model.state_dict(), **masks}


@pytest.mark.parametrize("fused", [True, False])
def test_the_books_review_classifier_pth_loads_into_our_gpt_model(tmp_path, fused):
    trained = small_model(seed=5)
    trained.out_head = torch.nn.Linear(in_features=SMALL_CFG["emb_dim"], out_features=2)
    path = tmp_path / "review_classifier.pth"
    torch.save(_book_keyed_state_dict(trained), path)  # the chapter: torch.save(model.state_dict(), ...)

    # the chapter's code for loading it, unchanged
    model = GPTModel(SMALL_CFG)
    model.out_head = torch.nn.Linear(in_features=SMALL_CFG["emb_dim"], out_features=2)
    model_state_dict = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    model.load_state_dict(model_state_dict)  # strict
    model.eval()
    for block in model.trf_blocks:
        block.att.use_fused_attention = fused
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), trained(idx), rtol=0, atol=1e-5)


def test_the_mask_buffer_is_the_chapters_and_our_files_leave_it_out():
    att = small_model().trf_blocks[0].att
    ctx = SMALL_CFG["context_length"]
    assert torch.equal(att.mask, torch.triu(torch.ones(ctx, ctx), diagonal=1))  # registered as in the chapter
    assert dict(att.named_buffers())["mask"] is att.mask
    assert "mask" not in att.state_dict()  # a constant: our saved files stay 4 MB per block smaller


def _logits_by_path(model, idx, fused):
    for block in model.trf_blocks:
        block.att.use_fused_attention = fused
    with torch.no_grad():
        return model(idx)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [1, 7, SMALL_CFG["context_length"]])
def test_the_written_out_attention_and_the_fused_one_agree(causal, length, monkeypatch):
    model = small_model(seed=9)
    for block in model.trf_blocks:
        block.att.causal = causal  # the bonus experiments' switch
    idx = torch.randint(0, 50257, (2, length))
    fused = _logits_by_path(model, idx, fused=True)

    def no_fused_kernel(*args, **kwargs):
        raise AssertionError("the written-out path called the fused kernel")

    monkeypatch.setattr(gpt_model.F, "scaled_dot_product_attention", no_fused_kernel)
    readable = _logits_by_path(model, idx, fused=False)
    torch.testing.assert_close(readable, fused, rtol=0, atol=2e-5)
    if length > 1:  # the switch changes the numbers, so agreeing with it on and off says something
        for block in model.trf_blocks:
            block.att.causal = not causal
        assert not torch.allclose(_logits_by_path(model, idx, fused=False), readable, atol=1e-3)


def test_the_fused_path_is_the_default():
    assert gpt_model.MultiHeadAttention.use_fused_attention is True


# ---------------------------------------------------------------------------------------------------------
# Shapes and the head swap


def test_output_shapes_and_classification_head_swap():
    torch.manual_seed(123)
    model = GPTModel(TINY_CONFIG).eval()
    idx = torch.tensor([[5211, 345, 423, 640], [40, 1107, 588, 6]])
    assert model(idx).shape == (2, 4, TINY_CONFIG["vocab_size"])
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(in_features=TINY_CONFIG["emb_dim"], out_features=2)
    assert model(idx[:1]).shape == (1, 4, 2)


def test_too_long_input_names_the_context_length():
    model = small_model(context_length=8)
    with pytest.raises(ValueError, match="context_length is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_same_seed_gives_the_same_random_model():
    a, b = small_model(seed=7), small_model(seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_dropout_only_in_training():
    model = small_model(drop_rate=0.5, vocab_size=1000)
    idx = torch.randint(0, 1000, (1, 16))
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))  # eval: deterministic
        model.train()
        assert not torch.equal(model(idx), model(idx))


def test_attention_calls_its_linear_modules_so_wrappers_take_part():
    model = small_model(vocab_size=1000)
    idx = torch.randint(0, 1000, (1, 8))
    with torch.no_grad():
        before = model(idx)
    calls = []

    class Wrapped(torch.nn.Module):  # what a LoRA layer looks like from outside: a module around the Linear
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            calls.append(1)
            return self.linear(x) + 1.0

    model.trf_blocks[0].att.W_query = Wrapped(model.trf_blocks[0].att.W_query)
    with torch.no_grad():
        assert not torch.equal(before, model(idx))
    assert calls == [1]


# ---------------------------------------------------------------------------------------------------------
# Model sizes


@pytest.mark.parametrize("name", ["gpt2-small (124M)", "124M", "gpt2-small", "GPT2-Small (124m)"])
def test_get_model_config_accepts_chapter_and_short_names(name):
    cfg = get_model_config(name)
    assert cfg == {"vocab_size": 50257, "context_length": 1024, "drop_rate": 0.0, "qkv_bias": True,
                   "emb_dim": 768, "n_layers": 12, "n_heads": 12}
    assert model_size_to_download_name(name) == "124M"


def test_get_model_config_other_sizes_and_fresh_dicts():
    assert get_model_config("gpt2-xl (1558M)")["emb_dim"] == 1600
    assert get_model_config("355M")["n_layers"] == 24
    assert model_size_to_download_name("gpt2-large (774M)") == "774M"
    get_model_config("124M")["emb_dim"] = 1  # a caller editing its copy must not change the presets
    assert gpt_model.model_configs["gpt2-small (124M)"]["emb_dim"] == 768


@pytest.mark.parametrize("bad", ["gpt2-tiny", "125M", "", None])
def test_get_model_config_rejects_bad_names_listing_choices(bad):
    with pytest.raises(ValueError, match=r"unknown model size .*gpt2-small \(124M\).*gpt2-xl \(1558M\)"):
        get_model_config(bad)
    with pytest.raises(ValueError, match="unknown model size"):
        model_size_to_download_name(bad)


# ---------------------------------------------------------------------------------------------------------
# load_weights_into_gpt: clear errors, nothing copied


def _break_last_mlp(params):
    params["blocks"][-1]["mlp"]["c_proj"]["w"] = params["blocks"][-1]["mlp"]["c_proj"]["w"][:-1]


@pytest.mark.parametrize(
    ("params_cfg", "edit", "message"),
    [
        ({"emb_dim": 32, "n_heads": 2}, None, "checkpoint has emb_dim 32 but the model was built with 64"),
        ({"n_layers": 3}, None, "checkpoint has n_layers 3 but the model was built with 2"),
        ({"context_length": 64}, None, "checkpoint has context_length 64 but the model was built with 128"),
        ({"vocab_size": 1000}, None, "checkpoint has vocab_size 1000 but the model was built with 50257"),
        ({}, _break_last_mlp, r"blocks\[1\]\.mlp\.c_proj\.w gives a \(64, 255\) weight where the model has \(64, 256\)"),
        ({}, lambda p: p["blocks"][0].pop("ln_2"), "not a GPT-2 weight dict"),
    ],
)
def test_mismatched_params_raise_clear_error_and_leave_model_unchanged(params_cfg, edit, message):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = random_params({**SMALL_CFG, **params_cfg})
    if edit:
        edit(params)
    with pytest.raises(ValueError, match=message):
        load_weights_into_gpt(model, params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_qkv_bias_false_and_swapped_head_are_named():
    params = random_params(SMALL_CFG)
    with pytest.raises(ValueError, match="qkv_bias=False"):
        load_weights_into_gpt(small_model(qkv_bias=False), params)
    model = small_model()
    model.out_head = torch.nn.Linear(SMALL_CFG["emb_dim"], 2)
    with pytest.raises(ValueError, match="before replacing the head"):
        load_weights_into_gpt(model, params)


# ---------------------------------------------------------------------------------------------------------
# Generation


def test_generate_text_simple_is_greedy_deterministic_and_crops():
    model = small_model(context_length=8, vocab_size=1000)
    idx = torch.tensor([[154, 11, 314, 716]])
    out = generate_text_simple(model, idx, max_new_tokens=10, context_size=8)  # 14 tokens > context 8: crops
    assert out.shape == (1, 14)
    assert torch.equal(out[:, :4], idx)
    assert torch.equal(out, generate_text_simple(model, idx, max_new_tokens=10, context_size=8))
    # every new token is the argmax given the (cropped) tokens before it
    with torch.no_grad():
        for n in range(4, 14):
            assert out[0, n] == model(out[:, max(0, n - 8) : n])[0, -1].argmax()


# ---------------------------------------------------------------------------------------------------------
# The causal mask


def test_causal_output_does_not_depend_on_later_tokens():
    model = small_model(n_layers=1)
    torch.manual_seed(3)
    a = torch.randint(0, 50257, (1, 12))
    b = a.clone()
    b[0, 6:] = torch.randint(0, 50257, (6,))
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :6], lb[:, :6], rtol=0, atol=1e-5)
    assert (la[:, 6:] - lb[:, 6:]).abs().max() > 1e-2


def test_disabling_the_causal_mask_lets_earlier_positions_see_later_tokens():
    model = small_model(n_layers=1)
    assert all(block.att.causal for block in model.trf_blocks)  # causal by default
    for block in model.trf_blocks:
        block.att.causal = False
    torch.manual_seed(3)
    a = torch.randint(0, 50257, (1, 12))
    b = a.clone()
    b[0, 6:] = torch.randint(0, 50257, (6,))
    with torch.no_grad():
        assert (model(a)[:, 0] - model(b)[:, 0]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------------
# Text <-> token ids


class RecordingTokenizer:
    """Stands in for tiktoken: one id per character, remembering the arguments it was given."""

    def encode(self, text, allowed_special=()):
        self.allowed_special = allowed_special
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_text_to_token_ids_shape_and_allowed_special():
    tok = RecordingTokenizer()
    ids = text_to_token_ids("Hi!", tok)
    assert ids.dtype == torch.long and ids.tolist() == [[72, 105, 33]]
    assert tok.allowed_special == {"<|endoftext|>"}
    assert token_ids_to_text(ids, tok) == "Hi!"


def test_round_trip_with_the_gpt2_tokenizer():
    from beyond.gpt2_tokenizer import get_gpt2_tokenizer

    tokenizer = get_gpt2_tokenizer()
    ids = text_to_token_ids("Do you have time", tokenizer)
    assert ids.tolist() == [[5211, 345, 423, 640]]
    text = "Every effort moves you<|endoftext|>"
    ids = text_to_token_ids(text, tokenizer)
    assert ids[0, -1].item() == 50256
    assert token_ids_to_text(ids, tokenizer) == text
