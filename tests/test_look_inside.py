"""Helpers that look inside the classifier: attributions, attention, thresholds, the explain CLI."""

import pytest
import torch

from beyond import look_inside

from tiny import tiny_classifier, tiny_model


def test_occlusion_scores_on_a_toy_score_fn():
    calls = []

    def score_fn(texts):
        calls.append(list(texts))
        return [0.9 if "prize" in t else 0.1 for t in texts]

    scores = look_inside.occlusion_scores(score_fn, ["Claim ", "your ", "prize", "!"])
    assert scores == pytest.approx([0.0, 0.0, 0.8, 0.0])
    assert len(calls) == 1  # one batched call: the message and each piece removed
    assert calls[0][0] == "Claim your prize!" and calls[0][3] == "Claim your !"


def test_occlusion_scores_rejects_wrong_number_of_scores():
    with pytest.raises(ValueError, match="one P\\(spam\\) per text"):
        look_inside.occlusion_scores(lambda texts: [0.5], ["a", "b"])


# --- a tiny GPT whose answer depends on one token only ---------------------------------------------------

KEY_TOKEN = 1234


def one_token_model():
    """A tiny GPT that says spam exactly when KEY_TOKEN occurs anywhere before the read position.

    Every token has the same embedding except KEY_TOKEN, which adds one direction; the first block attends
    uniformly (zero queries and keys) and copies that direction to every later position; the head reads it.
    """
    import gpt_model

    torch.manual_seed(0)
    cfg = dict(gpt_model.TINY_CONFIG)
    model = gpt_model.GPTModel(cfg)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    d = cfg["emb_dim"]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith(".scale"):
                param.zero_()
        model.tok_emb.weight[:, 1] = 1.0  # one shared direction for every token...
        model.tok_emb.weight[KEY_TOKEN, 0] = 4.0  # ...and KEY_TOKEN's own
        model.pos_emb.weight[:, 2] = 1.0  # the same for every position: no position matters
        att = model.trf_blocks[0].att
        att.W_value.weight.copy_(torch.eye(d))
        att.out_proj.weight.copy_(torch.eye(d))
        model.out_head.weight[1, 0] = 20.0  # spam when that direction is there: about +0.1 and above
        model.out_head.bias[1] = 1.4  # vs -0.26 without KEY_TOKEN (after the final LayerNorm)
    return model.eval()


@pytest.mark.parametrize("method", look_inside.METHODS)
@pytest.mark.parametrize("token_pos", ["last", "flexible"])
def test_attributions_point_at_the_token_the_model_depends_on(method, token_pos):
    model = one_token_model()
    ids = [11, 22, 33, KEY_TOKEN, 44, 55, 66] + [look_inside.PAD_TOKEN_ID] * 5
    assert look_inside.spam_probabilities(model, [ids], trainable_token_pos=token_pos)[0] > 0.9
    without = [t for t in ids if t != KEY_TOKEN] + [look_inside.PAD_TOKEN_ID]
    assert look_inside.spam_probabilities(model, [without], trainable_token_pos=token_pos)[0] < 0.1

    scores = look_inside.attributions(model, ids, method, trainable_token_pos=token_pos)
    assert len(scores) == 7  # message tokens only, no padding
    assert max(range(7), key=lambda i: scores[i]) == 3
    assert scores[3] > 0


def test_integrated_gradients_add_up_to_the_log_odds_change():
    model = tiny_classifier(seed=1).eval()
    ids = [101, 202, 303, 404, look_inside.PAD_TOKEN_ID, look_inside.PAD_TOKEN_ID]
    scores = look_inside.gradient_attributions(model, ids, steps=400)
    batch = torch.tensor([ids])
    with torch.no_grad():
        emb = model.tok_emb(batch)
        emb_baseline = emb.clone()
        emb_baseline[0, :4] = 0.0
        log_odds = [look_inside._spam_log_odds(look_inside._forward_with_embeddings(model, batch, e)[:, -1])
                    for e in (emb, emb_baseline)]
    assert sum(scores) == pytest.approx((log_odds[0] - log_odds[1]).item(), rel=0.02, abs=1e-4)


def test_deletion_check_top_token_beats_random_tokens():
    model = one_token_model()
    pad = look_inside.PAD_TOKEN_ID
    messages = [[11, KEY_TOKEN, 22, 33, 44, 55, pad, pad], [KEY_TOKEN, 60, 70, 80, 90, pad, pad, pad],
                [5, 6, 7, 8, 9, 10, KEY_TOKEN, pad]]
    scores = [look_inside.occlusion_attributions(model, ids) for ids in messages]
    table = look_inside.deletion_check(model, messages, scores, k=1, seed=0)
    assert len(table) == 3
    drop_top = (table["P(spam)"] - table["without top-k"]).mean()
    drop_random = (table["P(spam)"] - table["without random k"]).mean()
    assert drop_top > 0.3 > drop_random


# --- attention --------------------------------------------------------------------------------------------


def test_recomputed_attention_reproduces_the_attention_output():
    model = tiny_model(seed=2).eval()
    batch = torch.randint(0, 1000, (2, 9))
    seen = {}
    block = model.trf_blocks[1]
    hooks = [block.norm1.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o)),
             block.att.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))]
    weights = look_inside.attention_weights(model, batch)
    for hook in hooks:
        hook.remove()
    assert weights.shape == (2, 2, 2, 9, 9)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 2, 2, 9))
    att = block.att
    with torch.no_grad():
        values = att.W_value(seen["x"]).view(2, 9, att.num_heads, att.head_dim).transpose(1, 2)
        context = (weights[:, 1] @ values).transpose(1, 2).reshape(2, 9, -1)
        assert torch.allclose(att.out_proj(context), seen["out"], atol=1e-5)


def test_padding_share_uniform_attention_and_flexible():
    model = one_token_model()  # uniform attention in block 0
    pad = look_inside.PAD_TOKEN_ID
    batch = torch.tensor([[1, 2, 3, pad, pad, pad, pad, pad], [1, 2, 3, 4, 5, 6, pad, pad]])
    last = look_inside.pad_attention_share(model, batch, "last")
    assert last["padding_share"] == pytest.approx(7 / 16)
    assert last["attention_on_padding"][0] == pytest.approx(7 / 16)  # uniform: attention share = pad share
    flexible = look_inside.pad_attention_share(model, batch, "flexible")
    assert flexible["attention_on_padding"] == [0.0, 0.0]  # the last real token cannot see the later padding


# --- thresholds and calibration, against scikit-learn ----------------------------------------------------


def _scores(n=400, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    return labels, p


def test_curves_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels, p = _scores()
    c = look_inside.curves(labels, p)
    assert c["roc_auc"] == pytest.approx(roc_auc_score(labels, p))
    assert c["pr_auc"] == pytest.approx(average_precision_score(labels, p), abs=0.02)


def test_threshold_keeps_false_positives_under_one_percent():
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    labels, p = _scores()
    rates = look_inside.threshold_for_false_positives(labels, p, max_fpr=0.01)
    predicted = (p >= rates["threshold"]).astype(int)
    tn, fp, _fn, _tp = confusion_matrix(labels, predicted).ravel()
    assert fp / (fp + tn) == pytest.approx(rates["false_positive_rate"]) and rates["false_positive_rate"] < 0.01
    assert rates["recall"] == pytest.approx(recall_score(labels, predicted))
    assert rates["precision"] == pytest.approx(precision_score(labels, predicted))
    lower = p[p < rates["threshold"]].max()  # the next threshold down lets too much ham through
    assert look_inside.rates_at(labels, p, lower)["false_positive_rate"] >= 0.01
    assert np.isfinite(rates["threshold"])


def test_expected_calibration_error_matches_a_direct_count():
    import numpy as np
    from sklearn.calibration import calibration_curve

    labels, p = _scores(seed=3)
    ece, prob_true, prob_pred = look_inside.expected_calibration_error(labels, p, n_bins=5)
    expected_true, expected_pred = calibration_curve(labels, p, n_bins=5)
    assert np.allclose(prob_true, expected_true) and np.allclose(prob_pred, expected_pred)
    bins = np.minimum((p * 5).astype(int), 4)
    direct = sum(abs(labels[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum()
                 for b in range(5) if (bins == b).any()) / len(p)
    assert ece == pytest.approx(direct)


# --- error analysis and views -----------------------------------------------------------------------------


def test_error_table_lists_only_errors_most_confident_first():
    texts = ["win cash", "hi mum", "call 0800 now", "see you", "free www.x.com"]
    table = look_inside.error_table(texts, [1, 0, 1, 0, 1], [0.9, 0.6, 0.05, 0.1, 0.3], [2, 2, 3, 2, 4])
    assert list(table["message"]) == ["call 0800 now", "free www.x.com", "hi mum"]
    comparison = look_inside.compare_errors(texts, [1, 0, 1, 0, 1], [0.9, 0.6, 0.05, 0.1, 0.3], [2, 2, 3, 2, 4])
    sentence = look_inside.describe_errors(comparison)
    assert "2 misclassified spam messages average 4 tokens (correct spam: 2)" in sentence
    assert "50% a URL (0%)" in sentence


def test_tokens_html_escapes_and_colours():
    page = look_inside.tokens_html(["<b>", " free"], [-0.1, 0.2])
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert "rgba(214,38,41,0.85)" in page  # the strongest spam push at full strength


def test_figures_build(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    labels, p = _scores(n=60)
    look_inside.plot_threshold(labels, p, threshold=0.7).savefig(tmp_path / "t.png")
    look_inside.plot_token_attributions(["Win", " a", " prize"] * 30, [0.3, -0.1, 0.2] * 30).savefig(tmp_path / "a.png")
    rows = look_inside.read_attention(one_token_model(), torch.tensor([[1, 2, KEY_TOKEN, 3]]))[0]
    look_inside.plot_read_attention(rows, ["a", "b", "c", "d"]).savefig(tmp_path / "r.png")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("t.png", "a.png", "r.png"))


# --- the explain subcommand -------------------------------------------------------------------------------


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    """A saved one-token classifier, padded to 12 tokens, as a training run's output folder."""
    import gpt_model
    from beyond.checkpoints import save_classifier

    out = tmp_path / "run"
    out.mkdir()
    save_classifier(out / "classifier.pt", one_token_model(), gpt_model.TINY_CONFIG, label_names=["ham", "spam"],
                    max_length=12)
    return out


def test_explain_cli_ranks_the_token_the_model_depends_on(tiny_checkpoint, tmp_path, capsys):
    from beyond import cli
    from beyond.gpt2_tokenizer import get_gpt2_tokenizer

    key = get_gpt2_tokenizer().decode([KEY_TOKEN])
    figure = tmp_path / "why.png"
    message = f"hello{key} there friend"
    assert cli.main(["explain", "--checkpoint", str(tiny_checkpoint), "--output", str(figure), message]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("spam\tP(spam) 0.9")
    assert lines[2].endswith(repr(key))  # the top-ranked token
    assert figure.stat().st_size > 0 and lines[-1] == f"Wrote {figure}"
    assert cli.main(["explain", "--checkpoint", str(tiny_checkpoint), "--method", "integrated_gradients",
                     "--top", "1", message]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].endswith(repr(key))


def test_explain_cli_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    from beyond import cli

    assert cli.main(["explain", "--checkpoint", str(tmp_path / "nowhere"), "free prize"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]
