"""The fast trainer matches the chapter's loop: per-step losses, accuracies, printout, random numbers."""

import copy
import functools
import re

import pytest
import torch
from torch.utils.data import DataLoader

import gpt_model
from beyond import activation_cache, bonus_training, experiments, fast_trainer, metrics

# a small vocabulary keeps the "all layers trainable" fallback quick; two frozen blocks, one trainable
CFG = {**gpt_model.TINY_CONFIG, "vocab_size": 1024, "context_length": 64, "n_layers": 3}
PAD = 1023


def make_examples(n, seed):
    """(ids, label) pairs of varied lengths; spam (1) when a token below 100 occurs, so there is a signal."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(3, 25, (1,), generator=g))
        ids = torch.randint(0, 1000, (length,), generator=g)
        examples.append((ids, torch.tensor(int((ids < 100).any()))))
    return examples


def pad_to(examples, length):
    """The chapter's dataset: every message right-padded to one length."""
    return [(torch.cat([ids, torch.full((length - len(ids),), PAD)]), label) for ids, label in examples]


def pad_per_batch(batch):
    """Per-batch padding (for trainable_token_pos="flexible"): pad to the batch's longest message."""
    width = max(len(ids) for ids, _ in batch)
    return (torch.stack([torch.cat([ids, torch.full((width - len(ids),), PAD)]) for ids, _ in batch]),
            torch.stack([label for _, label in batch]))


def make_loaders(per_batch):
    train, val = make_examples(36, seed=1), make_examples(14, seed=2)
    if per_batch:
        kw = {"collate_fn": pad_per_batch}
    else:
        train, val, kw = pad_to(train, 24), pad_to(val, 24), {}
    torch.manual_seed(123)  # as create_data_loaders does: the train shuffling draws from the global RNG
    return (DataLoader(train, batch_size=4, shuffle=True, drop_last=True, **kw),
            DataLoader(val, batch_size=4, **kw))


def make_model(cfg=CFG, trainable_layers="last_block"):
    torch.manual_seed(0)
    model = gpt_model.GPTModel(cfg)
    return experiments.replace_head_and_freeze(model, num_classes=2, trainable_layers=trainable_layers)


def chapter_optimizer(model, lr, weight_decay):
    """The chapter's optimizer, as printed."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def run(trainer, model, per_batch=False, pad_token_id=PAD, make_optimizer=chapter_optimizer, **kwargs):
    """Train 3 epochs; return the 5-tuple, per-step losses, printed lines, final weights and the RNG state."""
    train_loader, val_loader = make_loaders(per_batch)
    optimizer = make_optimizer(model, lr=5e-4, weight_decay=0.1)
    steps = []
    lines = []
    import builtins

    real_print, real_loss = builtins.print, torch.nn.functional.cross_entropy

    def training_loss(*args, **kw):  # both trainers call F.cross_entropy; only training steps with gradients
        loss = real_loss(*args, **kw)
        if torch.is_grad_enabled():
            steps.append(loss.item())
        return loss

    builtins.print = lambda *a, **k: lines.append(" ".join(map(str, a)))
    torch.nn.functional.cross_entropy = training_loss
    try:
        result = trainer(model, train_loader, val_loader, optimizer, "cpu", num_epochs=3, eval_freq=4,
                         eval_iter=2, pad_token_id=pad_token_id, **kwargs)
    finally:
        builtins.print, torch.nn.functional.cross_entropy = real_print, real_loss
    return result, steps, lines, copy.deepcopy(model.state_dict()), torch.get_rng_state()


def shape_of(lines):
    """The printout with its numbers blanked: the text must be the chapter's; numbers are checked apart."""
    return [re.sub(r"\d+\.\d+", "#", line) for line in lines]


def assert_same_run(fast, simple, noise_only=("att.W_key.bias",)):
    (f_res, f_steps, f_lines, f_state, f_rng), (s_res, s_steps, s_lines, s_state, s_rng) = fast, simple
    assert len(f_steps) == len(s_steps) == 3 * 9
    assert f_steps == pytest.approx(s_steps, rel=1e-4)
    for f_values, s_values in zip(f_res[:2], s_res[:2]):  # train_losses, val_losses
        assert len(f_values) == len(s_values) == 7
        assert f_values == pytest.approx(s_values, rel=1e-4)
    assert f_res[2:] == s_res[2:]  # accuracies and examples_seen: identical
    assert shape_of(f_lines) == shape_of(s_lines)
    assert torch.equal(f_rng, s_rng)  # the same random numbers were drawn (batch order of later epochs too)
    for name in s_state:
        if any(part in name for part in noise_only):
            # weights whose true gradient is 0 (softmax ignores a shift shared by all scores, so the key bias
            # has none): AdamW turns the float noise left in its place, different per trainer, into full steps
            continue
        torch.testing.assert_close(f_state[name], s_state[name], rtol=1e-3, atol=1e-4)  # lr is 5e-4


@pytest.mark.parametrize("token_pos, per_batch", [("last", False), ("flexible", True), ("first", False)])
def test_fast_trainer_matches_chapter_loop(token_pos, per_batch):
    simple = run(bonus_training.train_classifier_simple, make_model(), per_batch, trainable_token_pos=token_pos)
    cache = activation_cache.ActivationCache()
    fast = run(fast_trainer.train_classifier_fast, make_model(), per_batch, trainable_token_pos=token_pos,
               cache=cache)
    assert not any("not used" in line for line in fast[2])
    assert len(cache.rows) > 0  # the cache was used, not the fallback
    # reading the first token, attention has one key to look at: queries and keys get no true gradient
    noise_only = ("att.W_key", "att.W_query") if token_pos == "first" else ("att.W_key.bias",)
    assert_same_run(fast, simple, noise_only)
    # the losses moved: the test would notice a trainer that does not train
    assert simple[0][0][0] != pytest.approx(simple[0][0][-1], rel=1e-3)


def test_fast_trainer_two_trainable_blocks():
    simple = run(bonus_training.train_classifier_simple, make_model(trainable_layers="last_two_blocks"))
    fast = run(fast_trainer.train_classifier_fast, make_model(trainable_layers="last_two_blocks"))
    assert_same_run(fast, simple)


def test_fast_trainer_with_wrapped_projections():
    """Projections wrapped in another module (as LoRA does) take the general path: every key and value."""
    def wrapped():
        model = make_model()
        att = model.trf_blocks[-1].att
        att.W_key, att.W_value = torch.nn.Sequential(att.W_key), torch.nn.Sequential(att.W_value)
        return model

    assert_same_run(run(fast_trainer.train_classifier_fast, wrapped()), run(bonus_training.train_classifier_simple, wrapped()),
                    noise_only=("att.W_key.0.bias",))


@functools.lru_cache(maxsize=1)
def chapter_run():
    """The chapter's loop on the default tiny setup, run once for the tests that compare against it."""
    return run(bonus_training.train_classifier_simple, make_model())


def without_cache_lines(fast):
    """The fast run with its own "Fast trainer: ..." notes taken out of the printout (the chapter has none)."""
    notes = [line for line in fast[2] if line.startswith("Fast trainer:")]
    fast[2][:] = [line for line in fast[2] if not line.startswith("Fast trainer:")]
    return notes


@pytest.mark.parametrize("memory, disk_free, where", [
    (None, None, "memory"), (0, None, "disk"), (20_000, None, "split"), (20_000, 0, "recomputed")])
def test_fast_trainer_exact_with_the_cache_in_memory_on_disk_split_or_recomputed(memory, disk_free, where,
                                                                                 tmp_path, monkeypatch):
    if disk_free is not None:  # a full disk: the messages beyond memory are recomputed, and one line says so
        monkeypatch.setattr(activation_cache.shutil, "disk_usage", lambda path: shutil_usage(free=disk_free))
    simple = chapter_run()
    cache = activation_cache.ActivationCache(memory, str(tmp_path))
    fast = run(fast_trainer.train_classifier_fast, make_model(), cache=cache)
    assert (cache.memory_bytes > 0) == (where != "disk")
    assert (cache.disk_bytes > 0) == (where in ("disk", "split"))
    notes = without_cache_lines(fast)
    assert (len(notes) == 1 and "--cache-dir" in notes[0]) == (where == "recomputed")
    assert_same_run(fast, simple)
    assert list(tmp_path.iterdir()) == []  # the file has no name on disk: nothing to leave behind
    cache.close()
    assert cache.file is None and cache.rows == {}


def test_without_a_cache_from_the_caller_the_trainer_frees_its_own(monkeypatch, tmp_path):
    made = []

    class Recorded(activation_cache.ActivationCache):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(fast_trainer, "ActivationCache", Recorded)
    assert_same_run(run(fast_trainer.train_classifier_fast, make_model(), cache_memory=0, cache_dir=str(tmp_path)),
                    chapter_run())
    assert len(made) == 1 and made[0].memory == 0 and made[0].cache_dir == str(tmp_path)
    assert made[0].rows == {} and made[0].file is None  # freed when the call returned


def shutil_usage(free):
    import shutil

    return shutil._ntuple_diskusage(total=10**12, used=10**12 - free, free=free)


def test_cache_budget_defaults_to_a_share_of_available_memory(monkeypatch):
    class Memory:
        available = 10 * 2**30

    monkeypatch.setattr(activation_cache.psutil, "virtual_memory", lambda: Memory())
    assert activation_cache.ActivationCache().memory == int(activation_cache.CACHE_MEMORY_SHARE * 10 * 2**30)
    assert activation_cache.ActivationCache(memory="8GB").memory == 8 * 2**30


@pytest.mark.parametrize("text, size", [("8GB", 8 * 2**30), ("512MB", 512 * 2**20), ("1.5g", 3 * 2**29),
                                        ("0", 0), ("2048", 2048), (" 4 GiB ", 4 * 2**30)])
def test_parse_size(text, size):
    assert activation_cache.parse_size(text) == size


def test_parse_size_rejects_nonsense_in_one_sentence():
    with pytest.raises(ValueError, match="not a size.*8GB"):
        activation_cache.parse_size("lots")


def test_an_interrupted_run_releases_its_cache(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        assert cache.disk_bytes > 0  # the frozen pass has filled the file
        raise KeyboardInterrupt

    monkeypatch.setattr(fast_trainer, "_fast_loop", interrupted)
    cache = activation_cache.ActivationCache(0, str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run(fast_trainer.train_classifier_fast, make_model(), cache=cache)
    assert cache.file is None and cache.rows == {}  # freed at once, although the caller holds the cache
    assert list(tmp_path.iterdir()) == []


def test_bf16_weights_cast_once_give_autocasts_numbers_to_bf16_rounding():
    """The frozen blocks' bf16 copy (fused Linear + GELU where oneDNN has it) computes what autocast computes."""
    model = make_model()
    ids = torch.randint(0, 1000, (3, 17))
    cache = activation_cache.ActivationCache().bind(model, "cpu", "bf16")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(17))
        expected = model.trf_blocks[: cache.num_frozen](x)
    torch.testing.assert_close(cache.prefix(model, ids), expected, rtol=2e-2, atol=2e-2)
    assert activation_cache._fused_gelu_works()  # the PyTorch pinned here has the fused kernel: it is the one tested
    assert isinstance(cache.bf16_blocks[0].ff, activation_cache._FusedGeluFeedForward)


def test_bf16_block_with_one_product_for_queries_keys_values_computes_what_autocast_computes():
    """_Bf16Block (one [768, 2304] product instead of three) agrees with the chapter's block under autocast."""
    model = make_model()
    block = model.trf_blocks[0]
    x = torch.randn(3, 17, CFG["emb_dim"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = block(x)
        got = activation_cache.bf16_copy(model.trf_blocks[:1])[0](x)
    assert isinstance(activation_cache.bf16_copy(model.trf_blocks[:1])[0], activation_cache._Bf16Block)
    assert got.dtype == torch.float32  # the residual stream stays fp32, as under autocast
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


def test_fused_feed_forward_matches_linear_then_gelu_in_bf16():
    ff = make_model().trf_blocks[0].ff.to(torch.bfloat16)
    x = torch.randn(5, 9, CFG["emb_dim"], dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(activation_cache._FusedGeluFeedForward(ff)(x), ff(x), rtol=1.6e-2, atol=1e-2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_rows_give_the_activations_of_one_message_at_a_time(precision):
    """The frozen pass packs length-sorted messages into one product: each row as if run alone (causal)."""
    model = make_model()
    rows = [ids for ids, _ in make_examples(40, seed=3)]
    packed = activation_cache.ActivationCache().bind(model, "cpu", precision)
    calls, prefix = [], packed.prefix
    packed.prefix = lambda model, ids: calls.append(ids.shape) or prefix(model, ids)
    packed.add(model, rows, "cpu", progress=False)
    assert len(calls) == 1 and calls[0][0] == len(rows)  # 40 short messages: one product, not 40
    alone = activation_cache.ActivationCache().bind(model, "cpu", precision)
    tolerance = {"fp32": 1e-5, "bf16": 2e-2}[precision]
    for row in rows:
        expected = alone.prefix(model, row[None])[0].to(packed.dtype)
        torch.testing.assert_close(packed.get(activation_cache.message_key(row)), expected,
                                   rtol=tolerance, atol=tolerance)


def test_bf16_cache_holds_half_the_bytes_and_the_weights_are_cast_once():
    fp32, bf16 = activation_cache.ActivationCache(), activation_cache.ActivationCache()
    run(fast_trainer.train_classifier_fast, make_model(), cache=fp32)
    model = make_model()
    run(fast_trainer.train_classifier_fast, model, precision="bf16", cache=bf16)
    assert {x.dtype for x in bf16.rows.values()} == {torch.bfloat16}
    assert bf16.memory_bytes * 2 == fp32.memory_bytes
    linear = bf16.bf16_blocks[0].qkv  # queries, keys and values in one product
    assert linear.weight.dtype == torch.bfloat16 and model.trf_blocks[0].att.W_query.weight.dtype == torch.float32
    # the frozen blocks' speed is measured in every run
    assert fp32.gflops() > 0 and fp32.report()["tokens"] > 0


@pytest.mark.parametrize("cfg, trainable_layers, reason", [
    ({**CFG, "drop_rate": 0.1}, "last_block", "dropout"),
    (CFG, "all", "embeddings are trainable"),
])
def test_fast_trainer_falls_back_and_says_why(cfg, trainable_layers, reason):
    assert reason in fast_trainer.why_not_fast(make_model(cfg, trainable_layers))
    simple = run(bonus_training.train_classifier_simple, make_model(cfg, trainable_layers))
    fast = run(fast_trainer.train_classifier_fast, make_model(cfg, trainable_layers))
    assert reason in fast[2][0] and "train_classifier_simple" in fast[2][0]
    assert fast[1] == simple[1] and fast[0] == simple[0]  # the chapter's loop itself: bit for bit


def test_fast_trainer_applies_to_the_chapter_setup():
    assert fast_trainer.why_not_fast(make_model()) == ""
    model = make_model()
    model.trf_blocks[0].att.causal = False
    assert "not causal" in fast_trainer.why_not_fast(model)


def test_fast_accuracy_matches_and_follows_weight_changes():
    model = make_model()
    train_loader, val_loader = make_loaders(per_batch=False)
    expected = bonus_training.calc_accuracy_loader(val_loader, model, "cpu", pad_token_id=PAD)
    assert fast_trainer.calc_accuracy_loader_fast(val_loader, model, "cpu", pad_token_id=PAD) == expected
    # change a frozen block: the cache must notice and recompute, not serve stale activations
    with torch.no_grad():
        model.trf_blocks[0].att.W_value.weight.mul_(-3.0)
    for name, loader in (("val", val_loader), ("train", train_loader)):
        torch.manual_seed(5)
        expected = bonus_training.calc_accuracy_loader(loader, model, "cpu", pad_token_id=PAD)
        torch.manual_seed(5)
        assert fast_trainer.calc_accuracy_loader_fast(loader, model, "cpu", pad_token_id=PAD) == expected, name


@pytest.mark.parametrize("token_pos", ["last", "first"])
def test_fast_loss_matches_the_chapter_and_shares_the_callers_cache(token_pos):
    model = make_model()
    _train_loader, val_loader = make_loaders(per_batch=False)
    token = {"trainable_token_pos": token_pos, "pad_token_id": PAD}
    with torch.no_grad():
        expected = bonus_training.calc_loss_loader(val_loader, model, "cpu", num_batches=2, **token)
    cache = activation_cache.ActivationCache()
    assert fast_trainer.calc_loss_loader_fast(val_loader, model, "cpu", 2, cache=cache, **token) == pytest.approx(
        expected, rel=1e-6)
    assert len(cache.rows) == 8  # the two batches' rows stay for the trainer and the accuracies after it


def test_fast_cache_notices_a_data_write_to_a_frozen_weight():
    """`.data` writes bypass the tensor's version counter: the cache compares the values instead."""
    model = make_model()
    _train_loader, val_loader = make_loaders(per_batch=False)
    cache = activation_cache.ActivationCache()
    fast_trainer.calc_accuracy_loader_fast(val_loader, model, "cpu", pad_token_id=PAD, cache=cache)
    before = cache.signature
    model.trf_blocks[0].ff.layers[0].weight.data.mul_(-3.0)
    model.pos_emb.weight.data[5:9] = 0.5
    expected = metrics.predict_labels(model, val_loader, "cpu", pad_token_id=PAD)
    predicted = fast_trainer.predict_labels_fast(val_loader, model, "cpu", pad_token_id=PAD, cache=cache)[1]
    assert torch.equal(predicted, expected[1])
    assert cache.signature != before


def test_a_copy_of_the_model_shares_the_cache_and_its_answers():
    """Two runs from copies of one pretrained model (notebook 8) pass the frozen blocks once between them."""
    model = make_model()
    _train_loader, val_loader = make_loaders(per_batch=False)
    cache = activation_cache.ActivationCache()
    fast_trainer.calc_accuracy_loader_fast(val_loader, model, "cpu", pad_token_id=PAD, cache=cache)
    twin = copy.deepcopy(model)
    kept = dict(cache.rows)
    predicted = fast_trainer.predict_labels_fast(val_loader, twin, "cpu", pad_token_id=PAD, cache=cache)[1]
    assert cache.rows.keys() == kept.keys() and all(cache.rows[k] is v for k, v in kept.items())  # not recomputed
    assert torch.equal(predicted, metrics.predict_labels(twin, val_loader, "cpu", pad_token_id=PAD)[1])


def test_bf16_runs_close_to_fp32():
    fast = run(fast_trainer.train_classifier_fast, make_model(), precision="bf16")
    simple = chapter_run()
    assert fast[1] == pytest.approx(simple[1], rel=5e-2)
    with pytest.raises(ValueError, match="precision"):
        run(fast_trainer.train_classifier_fast, make_model(), precision="fp8")


def test_make_optimizer_is_the_chapters_update_fused_over_trainable_parameters():
    model = make_model()
    optimizer = fast_trainer.make_optimizer(model, lr=5e-4, weight_decay=0.1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in trainable]
    assert len(trainable) < len(list(model.parameters()))  # the frozen ones are left out
    assert optimizer.defaults["fused"] is True  # the CPU has a fused AdamW in the PyTorch this runs on
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (5e-4, 0.1)


def test_fast_trainer_with_make_optimizer_matches_chapter_loop_with_chapters_optimizer():
    simple = chapter_run()
    fast = run(fast_trainer.train_classifier_fast, make_model(), make_optimizer=fast_trainer.make_optimizer)
    assert_same_run(fast, simple)  # per-step losses within 1e-4 relative, identical accuracies


def test_make_optimizer_falls_back_silently_without_a_fused_kernel(monkeypatch):
    real_adamw = torch.optim.AdamW

    def no_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices")
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    optimizer = fast_trainer.make_optimizer(make_model(), lr=1e-3)
    assert not optimizer.defaults.get("fused") and optimizer.defaults["lr"] == 1e-3


@pytest.mark.parametrize("token_pos, per_batch", [("last", False), ("flexible", True)])
def test_classification_metrics_from_the_fast_cache_match_the_full_model(token_pos, per_batch, monkeypatch):
    model, cache = make_model(), activation_cache.ActivationCache()
    run(fast_trainer.train_classifier_fast, model, per_batch, trainable_token_pos=token_pos, cache=cache)
    train_loader, val_loader = make_loaders(per_batch)
    token = {"trainable_token_pos": token_pos, "pad_token_id": PAD}
    # the tiny model predicts one class for all: move the head's threshold into the middle of the widest gap
    # between the middle margins, so both classes occur and no margin sits close enough to flip on float noise
    with torch.no_grad():
        logits = torch.cat([bonus_training.select_token_logits(model(x), x, token_pos, PAD)
                            for loader in (train_loader, val_loader) for x, _ in loader])
        margins = sorted((logits[:, 1] - logits[:, 0]).tolist())
        middle = range(len(margins) // 4, 3 * len(margins) // 4)
        k = max(middle, key=lambda i: margins[i + 1] - margins[i])
        model.out_head.bias[1] -= (margins[k] + margins[k + 1]) / 2
    for loader in (train_loader, val_loader):
        full = metrics.classification_metrics(*metrics.predict_labels(model, loader, "cpu", **token))
        forward = model.forward
        model.forward = lambda *a, **k: pytest.fail("the fast metrics ran the whole model")
        tokens = cache.report()["tokens"]
        try:
            fast = metrics.classification_metrics(*fast_trainer.predict_labels_fast(loader, model, "cpu",
                                                                                     cache=cache, **token))
        finally:
            model.forward = forward
        assert cache.report()["tokens"] == tokens  # every activation came from the trainer's cache
        assert fast["confusion_matrix"] == full["confusion_matrix"]
        assert fast == full
        assert fast["num_examples"] == (36 if loader is train_loader else 14)
        assert fast["accuracy"] == fast_trainer.calc_accuracy_loader_fast(loader, model, "cpu", **token)
    # the trained model predicts both classes: the matrices compared above are not all one column
    assert all(sum(row[c] for row in full["confusion_matrix"]) > 0 for c in (0, 1))
    targets, predictions = fast_trainer.predict_labels_fast(val_loader, model, "cpu", num_batches=2, **token)
    assert targets.shape == predictions.shape == (8,)


def test_fast_predictions_fall_back_to_the_whole_model_and_say_why(capsys):
    model = make_model({**CFG, "drop_rate": 0.1})
    _, val_loader = make_loaders(per_batch=False)
    full = metrics.classification_metrics(*metrics.predict_labels(model, val_loader, "cpu", pad_token_id=PAD))
    fast = metrics.classification_metrics(*fast_trainer.predict_labels_fast(val_loader, model, "cpu", pad_token_id=PAD))
    assert fast == full
    assert "Fast predictions not used: dropout is on" in capsys.readouterr().out
