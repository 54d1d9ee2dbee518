"""Look inside the spam classifier: error analysis, token attributions, attention, thresholds.

Beyond-chapter helpers for notebook 09 and the `explain` subcommand; they import the chapter
modules and are never imported by them. Class 1 is spam throughout, as in the chapter.
"""

import html
import random
import re

import numpy as np
import pandas as pd
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from beyond.bonus_training import read_positions, select_token_logits
from beyond.prediction import class_probabilities, encode_for_classifier

PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|>, the chapter's padding token
SPAM = 1


# ---------------------------------------------------------------------------------------------------------
# Messages as token ids, and P(spam) of batches of them
# ---------------------------------------------------------------------------------------------------------


def encode_message(text, tokenizer, max_length=None, pad_token_id=PAD_TOKEN_ID, context_length=1024):
    """The ids the classifier reads (prediction's encoding): cut to max_length and padded to it; unpadded when None."""
    return encode_for_classifier(text, tokenizer, context_length, max_length, pad_token_id) or [pad_token_id]


def num_message_tokens(ids, pad_token_id=PAD_TOKEN_ID):
    """How many ids belong to the message: up to the last real token, the one "flexible" reads (0: padding only)."""
    if all(t == pad_token_id for t in ids):
        return 0
    return int(read_positions(torch.tensor([list(ids)]), "flexible", pad_token_id)[0]) + 1


def token_strings(ids, tokenizer):
    """Each id decoded on its own, for display (a character split over two tokens shows as a replacement mark)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def spam_probabilities(model, rows, *, trainable_token_pos="last", pad_token_id=PAD_TOKEN_ID,
                       average_embeddings=False, batch_size=32):
    """P(spam) for each id list in rows (prediction.class_probabilities: rows of equal length share a batch)."""
    return class_probabilities(rows, model, trainable_token_pos=trainable_token_pos, pad_token_id=pad_token_id,
                               average_embeddings=average_embeddings, batch_size=batch_size)[:, SPAM].tolist()


# ---------------------------------------------------------------------------------------------------------
# Attributions: which tokens pushed towards spam
# ---------------------------------------------------------------------------------------------------------


def occlusion_scores(score_fn, pieces):
    """Return, per piece, P(spam) of the whole message minus P(spam) with that piece removed.

    `pieces` are strings that concatenate to the message; `score_fn(list_of_texts)` returns one
    P(spam) per text. Works for any classifier (GPT-2, TF-IDF, ...): one batched call.
    """
    pieces = list(pieces)
    texts = ["".join(pieces)] + ["".join(pieces[:i] + pieces[i + 1:]) for i in range(len(pieces))]
    scores = [float(s) for s in score_fn(texts)]
    if len(scores) != len(texts):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(texts)} texts; it must return one "
                         "P(spam) per text.")
    return [scores[0] - s for s in scores[1:]]


def _without(ids, positions, pad_token_id, keep_length=None):
    """ids with the given positions deleted, padded back to the same length when the input was padded.

    keep_length None: pad back when ids end in padding (a message exactly max_length long needs True).
    """
    kept = [t for i, t in enumerate(ids) if i not in positions]
    if keep_length or (keep_length is None and ids and ids[-1] == pad_token_id):
        kept += [pad_token_id] * (len(ids) - len(kept))
    return kept or [pad_token_id]


def occlusion_attributions(model, ids, *, trainable_token_pos="last", pad_token_id=PAD_TOKEN_ID,
                           average_embeddings=False, keep_length=None):
    """Per message token: P(spam) minus P(spam) with that one token deleted (positive: it pushed towards spam)."""
    n = num_message_tokens(ids, pad_token_id)
    rows = [list(ids)] + [_without(ids, {i}, pad_token_id, keep_length) for i in range(n)]
    probs = spam_probabilities(model, rows, trainable_token_pos=trainable_token_pos, pad_token_id=pad_token_id,
                               average_embeddings=average_embeddings)
    return [probs[0] - p for p in probs[1:]]


def _forward_with_embeddings(model, batch, token_embeddings):
    """model(batch), but with the token-embedding layer's output replaced by token_embeddings."""
    handle = model.tok_emb.register_forward_hook(lambda module, inputs, output: token_embeddings)
    try:
        return model(batch)
    finally:
        handle.remove()


def _spam_log_odds(logits):
    """log P(spam) - log P(not spam): the target the gradient methods explain (no saturation near 0 or 1)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    others = torch.cat([log_probs[:, :SPAM], log_probs[:, SPAM + 1:]], dim=-1)
    return log_probs[:, SPAM] - torch.logsumexp(others, dim=-1)


def gradient_attributions(model, ids, *, method="integrated_gradients", steps=32, trainable_token_pos="last",
                          pad_token_id=PAD_TOKEN_ID, average_embeddings=False, step_batch=8):
    """Per message token: its share of the spam log-odds, from gradients on the token embeddings.

    "grad_x_input": gradient x embedding, one backward pass. "integrated_gradients": the gradient averaged
    along the straight path from a zero embedding for the message tokens (padding left as it is) to the real
    ones, times the difference; the scores then add up to the log-odds change between the two.
    """
    if method not in ("integrated_gradients", "grad_x_input"):
        raise ValueError(f"Unknown attribution method {method!r}; choose integrated_gradients or grad_x_input.")
    device = next(model.parameters()).device
    n = num_message_tokens(ids, pad_token_id)
    batch = torch.tensor([list(ids)], device=device)
    with torch.no_grad():
        embeddings = model.tok_emb(batch)[0]  # [t, d]
    mask = torch.zeros_like(embeddings)
    mask[:n] = 1.0  # only the message's tokens move along the path
    alphas = torch.linspace(1.0 / steps, 1.0, steps, device=device) if method == "integrated_gradients" \
        else torch.ones(1, device=device)
    model.eval()
    total = torch.zeros_like(embeddings)
    for chunk in alphas.split(step_batch):  # a few steps at a time: GPT-2 small's activations are large
        path = embeddings * (1 - mask) + (chunk.view(-1, 1, 1) * embeddings) * mask  # [steps, t, d]
        path.requires_grad_(True)
        inputs = batch.expand(len(chunk), -1)
        logits = select_token_logits(_forward_with_embeddings(model, inputs, path), inputs, trainable_token_pos,
                                     pad_token_id, average_embeddings)
        (grads,) = torch.autograd.grad(_spam_log_odds(logits).sum(), path)
        total += grads.sum(dim=0)
    scores = (total / len(alphas) * embeddings).sum(dim=-1)  # Riemann sum of the path integral, per token
    return scores[:n].detach().cpu().tolist()


METHODS = ("occlusion", "integrated_gradients", "grad_x_input")


def attributions(model, ids, method="occlusion", *, keep_length=None, **options):
    """Per message token scores by "occlusion", "integrated_gradients" or "grad_x_input" (positive: spam)."""
    if method == "occlusion":
        return occlusion_attributions(model, ids, keep_length=keep_length, **options)
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    return gradient_attributions(model, ids, method=method, **options)


def explain(text, model, tokenizer, *, method="occlusion", max_length=None, trainable_token_pos="last",
            pad_token_id=PAD_TOKEN_ID, average_embeddings=False):
    """{"p_spam", "tokens", "scores", "ids"}: one message's P(spam) and its tokens' attributions."""
    ids = encode_message(text, tokenizer, max_length, pad_token_id)
    options = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id,
               "average_embeddings": average_embeddings}
    p_spam = spam_probabilities(model, [ids], **options)[0]
    scores = attributions(model, ids, method, keep_length=max_length is not None, **options)
    return {"p_spam": p_spam, "tokens": token_strings(ids[:len(scores)], tokenizer), "scores": scores, "ids": ids}


def rank_tokens(tokens, scores):
    """(position, token, score) sorted from the strongest push towards spam to the strongest towards ham."""
    return sorted(zip(range(len(tokens)), tokens, scores), key=lambda row: -row[2])


def deletion_check(model, messages_ids, scores_per_message, k=3, seed=123, keep_length=None, **options):
    """Delete each message's top-k tokens, or k random ones: DataFrame of P(spam) before and after both.

    Sane attributions lower P(spam) more with their top-k than random deletions do. Messages with at most k
    tokens are skipped. options: trainable_token_pos, pad_token_id, average_embeddings.
    """
    rng = random.Random(seed)
    pad = options.get("pad_token_id", PAD_TOKEN_ID)
    rows, kept = [], []
    for ids, scores in zip(messages_ids, scores_per_message):
        if len(scores) <= k:
            continue
        top = set(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])
        randoms = set(rng.sample(range(len(scores)), k))
        rows += [list(ids), _without(ids, top, pad, keep_length), _without(ids, randoms, pad, keep_length)]
        kept.append(len(scores))
    probs = spam_probabilities(model, rows, **options)
    return pd.DataFrame({"tokens": kept, "P(spam)": probs[0::3], "without top-k": probs[1::3],
                         "without random k": probs[2::3]})


# ---------------------------------------------------------------------------------------------------------
# Attention: where the read position looks
# ---------------------------------------------------------------------------------------------------------


def attention_weights(model, batch):
    """[b, layers, heads, t, t] attention weights of every block, recomputed from norm1's output.

    The model's attention uses the fused scaled_dot_product_attention, which never returns its weights:
    a hook keeps each block's norm1 output, and softmax(q k^T / sqrt(d_head)) is computed from it again.
    """
    kept = []
    hooks = [block.norm1.register_forward_hook(lambda module, inputs, output: kept.append(output))
             for block in model.trf_blocks]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        return torch.stack([_block_attention(block.att, x) for block, x in zip(model.trf_blocks, kept)], dim=1)


def _block_attention(att, x):
    """[b, heads, t, t] softmax(q k^T / sqrt(d_head)) of one attention module given its (normed) input x."""
    b, t, _ = x.shape
    q, k = (w(x).view(b, t, att.num_heads, att.head_dim).transpose(1, 2) for w in (att.W_query, att.W_key))
    scores = q @ k.transpose(-2, -1) / att.head_dim ** 0.5
    if getattr(att, "causal", True):  # the causal-mask experiment can switch it off
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores.float(), dim=-1)


def read_attention(model, batch, trainable_token_pos="last", pad_token_id=PAD_TOKEN_ID):
    """[b, layers, heads, t]: the attention of the position the classifier reads, over all positions."""
    weights = attention_weights(model, batch)  # [b, L, H, t_query, t_key]
    b, n_layers, n_heads, t, _ = weights.shape
    by_query = weights.permute(0, 3, 1, 2, 4).reshape(b, t, -1)  # [b, t_query, L*H*t_key]
    # the chapter's own selection picks the query row, so this is exactly the position the head reads
    rows = select_token_logits(by_query, batch, trainable_token_pos, pad_token_id)
    return rows.reshape(b, n_layers, n_heads, t)


def pad_attention_share(model, batch, trainable_token_pos="last", pad_token_id=PAD_TOKEN_ID):
    """{"attention_on_padding": [layers] mean share of the read position's attention on pad tokens,
    "padding_share": the share of positions that are padding (what uniform attention would give)}."""
    rows = read_attention(model, batch, trainable_token_pos, pad_token_id)
    is_pad = (batch == pad_token_id).to(rows.dtype)  # [b, t]
    on_pad = (rows * is_pad[:, None, None, :]).sum(dim=-1)  # [b, L, H]
    return {"attention_on_padding": on_pad.mean(dim=(0, 2)).tolist(), "padding_share": is_pad.mean().item()}


def plot_read_attention(rows, tokens, title="Attention of the read position"):
    """Heat maps for one message, tokens down the side (readable at notebook width): per layer (mean over the
    heads), and per head of the last block."""
    import matplotlib.pyplot as plt

    rows = torch.as_tensor(rows).cpu()  # [layers, heads, t]
    labels = [repr(t)[1:-1][:16] for t in tokens]
    fig, axes = plt.subplots(1, 2, figsize=(8, 1.5 + 0.22 * len(tokens)), sharey=True,
                             gridspec_kw={"width_ratios": [rows.shape[0], rows.shape[1]]})
    for ax, values, xlabel in ((axes[0], rows.mean(dim=1), "layer (mean over heads)"),
                               (axes[1], rows[-1], "head of the last block")):
        image = ax.imshow(values.T.numpy(), aspect="auto", cmap="viridis")
        ax.set_xlabel(xlabel)
        ax.set_xticks(range(values.shape[0]), labels=[str(i + 1) for i in range(values.shape[0])], fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    axes[0].set_yticks(range(len(labels)), labels=labels, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    return fig


# ---------------------------------------------------------------------------------------------------------
# Error analysis
# ---------------------------------------------------------------------------------------------------------

_URL = re.compile(r"https?://|www\.|\.(com|net|org|co\.uk)\b", re.IGNORECASE)
_CURRENCY = re.compile(r"[£$€]|\bp(ence)?\b|\bcash\b", re.IGNORECASE)


def message_traits(texts, num_tokens):
    """DataFrame of simple traits per message: tokens, digits, a URL, money, share of upper-case letters."""
    texts = [str(t) for t in texts]
    return pd.DataFrame({
        "tokens": list(num_tokens),
        "has digits": [any(c.isdigit() for c in t) for t in texts],
        "has URL": [bool(_URL.search(t)) for t in texts],
        "mentions money": [bool(_CURRENCY.search(t)) for t in texts],
        "upper-case share": [sum(c.isupper() for c in t) / max(1, sum(c.isalpha() for c in t)) for t in texts],
    })


def error_table(texts, labels, p_spam, num_tokens, label_names=("ham", "spam"), threshold=0.5):
    """The misclassified messages, most confidently wrong first: message, true, predicted, P(spam), tokens."""
    p_spam = np.asarray(p_spam, dtype=float)
    predicted = (p_spam >= threshold).astype(int)
    table = pd.DataFrame({"message": list(texts), "true": [label_names[y] for y in labels],
                          "predicted": [label_names[y] for y in predicted], "P(spam)": p_spam,
                          "tokens": list(num_tokens)})
    wrong = table[np.asarray(labels) != predicted]
    return wrong.iloc[np.argsort(-np.abs(wrong["P(spam)"].to_numpy() - threshold), kind="stable")]


def compare_errors(texts, labels, p_spam, num_tokens, label_names=("ham", "spam"), threshold=0.5):
    """Mean traits of wrong vs right answers within each true class (spam differs from ham on its own)."""
    traits = message_traits(texts, num_tokens)
    labels = np.asarray(labels)
    traits["true"] = [label_names[y] for y in labels]
    traits["answer"] = np.where((np.asarray(p_spam) >= threshold).astype(int) == labels, "right", "wrong")
    table = traits.groupby(["true", "answer"]).mean()
    table.insert(0, "messages", traits.groupby(["true", "answer"]).size())
    return table


def describe_errors(comparison):
    """One sentence per true class with errors: how its wrong answers differ from its right ones."""
    sentences = []
    for true in comparison.index.get_level_values("true").unique():
        rows = comparison.loc[true]
        if "wrong" not in rows.index or "right" not in rows.index:
            continue
        wrong, right = rows.loc["wrong"], rows.loc["right"]
        sentences.append(
            f"{int(wrong['messages'])} misclassified {true} messages average {wrong['tokens']:.0f} tokens "
            f"(correct {true}: {right['tokens']:.0f}); {wrong['has digits']:.0%} have digits "
            f"({right['has digits']:.0%}), {wrong['has URL']:.0%} a URL ({right['has URL']:.0%}), "
            f"{wrong['mentions money']:.0%} mention money ({right['mentions money']:.0%}).")
    return " ".join(sentences) or "No errors to describe."


# ---------------------------------------------------------------------------------------------------------
# The threshold: curves, the 1%-false-positive threshold, calibration (scikit-learn's metrics)
# ---------------------------------------------------------------------------------------------------------


def curves(labels, p_spam):
    """ROC and precision-recall curves of P(spam) with their areas (scikit-learn's roc_curve, auc, ...)."""
    fpr, tpr, roc_thresholds = roc_curve(labels, p_spam, pos_label=SPAM)
    precision, recall, pr_thresholds = precision_recall_curve(labels, p_spam, pos_label=SPAM)
    return {"fpr": fpr, "tpr": tpr, "roc_thresholds": roc_thresholds, "roc_auc": auc(fpr, tpr),
            "precision": precision, "recall": recall, "pr_thresholds": pr_thresholds,
            "pr_auc": auc(recall, precision)}


def rates_at(labels, p_spam, threshold):
    """{"threshold", "false_positive_rate", "recall", "precision"} when P(spam) >= threshold means spam."""
    labels, predicted = np.asarray(labels), np.asarray(p_spam) >= threshold
    spam, ham = labels == SPAM, labels != SPAM
    caught = int((predicted & spam).sum())
    return {"threshold": float(threshold),
            "false_positive_rate": float((predicted & ham).sum() / max(1, ham.sum())),
            "recall": float(caught / max(1, spam.sum())),
            "precision": float(caught / predicted.sum()) if predicted.any() else 1.0}


def threshold_for_false_positives(labels, p_spam, max_fpr=0.01):
    """The lowest threshold keeping ham-called-spam under max_fpr, with the recall it leaves (rates_at's dict).

    Choose it on validation data and check it on the test set: on the data it was chosen on it is optimistic.
    """
    fpr, _tpr, thresholds = roc_curve(labels, p_spam, pos_label=SPAM, drop_intermediate=False)
    allowed = np.flatnonzero(fpr < max_fpr)  # fpr only grows as the threshold falls: the last one is lowest
    threshold = min(float(thresholds[allowed[-1]]), 1.0 + 1e-9)  # roc_curve's first threshold is +inf
    return rates_at(labels, p_spam, threshold)


def expected_calibration_error(labels, p_spam, n_bins=10):
    """(ECE, prob_true, prob_pred): calibration_curve's reliability points weighted by their bins' sizes."""
    p_spam, labels = np.asarray(p_spam, dtype=float), np.asarray(labels) == SPAM
    prob_true, prob_pred = calibration_curve(labels, p_spam, n_bins=n_bins, strategy="uniform")
    # the same bins calibration_curve uses, to count the messages in each non-empty one
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(bins[1:-1], p_spam), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / len(p_spam)), prob_true, prob_pred


def plot_threshold(labels, p_spam, threshold=None, n_bins=10, title=""):
    """A 2x2 figure: P(spam) histograms per class, ROC, precision-recall, the reliability diagram."""
    import matplotlib.pyplot as plt

    labels, p_spam = np.asarray(labels), np.asarray(p_spam, dtype=float)
    c = curves(labels, p_spam)
    ece, prob_true, prob_pred = expected_calibration_error(labels, p_spam, n_bins)
    fig, ((hist, roc), (pr, rel)) = plt.subplots(2, 2, figsize=(9, 7))
    for cls, name, color in ((0, "ham", "tab:blue"), (SPAM, "spam", "tab:red")):
        hist.hist(p_spam[labels == cls], bins=20, range=(0, 1), alpha=0.6, color=color, label=name)
    hist.set(xlabel="P(spam)", ylabel="messages", title="P(spam) per true class")
    roc.plot(c["fpr"], c["tpr"], label=f"AUC {c['roc_auc']:.3f}")
    roc.plot([0, 1], [0, 1], ":", color="gray")
    roc.set(xlabel="false positive rate (ham called spam)", ylabel="recall (spam caught)", title="ROC")
    pr.plot(c["recall"], c["precision"], label=f"AUC {c['pr_auc']:.3f}")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    rel.plot(prob_pred, prob_true, "o-", label=f"ECE {ece:.3f}")
    rel.plot([0, 1], [0, 1], ":", color="gray")
    rel.set(xlabel="mean P(spam) in bin", ylabel="share that is spam", title="reliability diagram")
    if threshold is not None:
        hist.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
        rates = rates_at(labels, p_spam, threshold)
        roc.plot([rates["false_positive_rate"]], [rates["recall"]], "ko", label="threshold")
        pr.plot([rates["recall"]], [rates["precision"]], "ko", label="threshold")
    for ax in (hist, roc, pr, rel):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    return fig


# ---------------------------------------------------------------------------------------------------------
# Showing attributions: HTML for the notebook, a figure for the command line
# ---------------------------------------------------------------------------------------------------------


def _colour(score, largest):
    """RGBA: red pushes towards spam, blue towards ham, stronger colour for a larger share of the largest."""
    strength = min(1.0, abs(score) / largest) if largest > 0 else 0.0
    return (0.84, 0.15, 0.16, 0.85 * strength) if score > 0 else (0.12, 0.47, 0.71, 0.85 * strength)


def tokens_html(tokens, scores):
    """The tokens as HTML spans coloured by their scores (red: towards spam, blue: towards ham)."""
    largest = max((abs(s) for s in scores), default=0.0)
    spans = []
    for token, score in zip(tokens, scores):
        r, g, b, a = _colour(score, largest)
        spans.append(f'<span title="{score:+.4f}" style="background: rgba({r * 255:.0f},{g * 255:.0f},'
                     f'{b * 255:.0f},{a:.2f}); padding: 1px 0; white-space: pre-wrap">{html.escape(token)}</span>')
    return '<div style="font-family: monospace; line-height: 1.8">' + "".join(spans) + "</div>"


def plot_token_attributions(tokens, scores, title="", line_chars=60):
    """A matplotlib figure of the tokens as coloured boxes, wrapped into lines (for the command line)."""
    import matplotlib.pyplot as plt

    largest = max((abs(s) for s in scores), default=0.0)
    lines, line, width = [], [], 0
    for token, score in zip(tokens, scores):
        shown = token.replace("\n", "\u21b5")
        if line and width + len(shown) > line_chars:
            lines.append(line)
            line, width = [], 0
        line.append((width, shown, score))
        width += len(shown)
    lines.append(line)
    char_inches = 0.6 * 10 / 72  # a monospace character at 10 points is about 0.6 em wide
    height = 0.3 * len(lines) + 0.9  # inches: the lines, and room for the two-line title above them
    fig = plt.figure(figsize=(line_chars * char_inches + 0.4, height))
    ax = fig.add_axes((0.2 / fig.get_figwidth(), 0.1 / height, line_chars * char_inches / fig.get_figwidth(),
                       0.3 * len(lines) / height))
    for row, items in enumerate(lines):
        for start, shown, score in items:
            ax.text(start / line_chars, 1 - (row + 0.5) / len(lines), shown, family="monospace", fontsize=10,
                    va="center", bbox={"facecolor": _colour(score, largest), "edgecolor": "none", "pad": 1})
    ax.set_axis_off()
    ax.set_title(title + "\n(red: pushes towards spam, blue: towards ham)", fontsize=10)
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    return fig
