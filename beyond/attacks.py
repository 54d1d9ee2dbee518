"""Attack the spam filter: evasion attacks and defences, measured the same way for any classifier.

Everything here takes a `score_fn(list_of_texts) -> sequence of P(spam)`, so the GPT-2 classifier and the
TF-IDF baseline share the code. Attacks run on held-out spam that the classifier catches; an attack succeeds
when the changed message is called ham (P(spam) below 0.5).
"""

import copy
import functools
import math
import random
import re
import unicodedata
import warnings

import pandas as pd
import torch
from tqdm.auto import tqdm

import spam_dataset
from beyond import baseline, checkpoints, fast_trainer, look_inside, prediction
from beyond.bonus_training import saved_average_embeddings
from beyond.data_splits import prepare_spam_splits
from beyond.gpt2_tokenizer import get_gpt2_tokenizer

THRESHOLD = 0.5  # P(spam) at or above this: spam (the argmax of two classes)
# The spam's payload: phone numbers, short codes, links. A spammer who garbles them has nothing left to send,
# so the attacks leave words matching this alone.
PAYLOAD = re.compile(r"\d{4,}|www\.|https?:|\.co")

# --- Character tricks: each maps a string to a look-alike the tokenizer reads differently ---------------

_LEET = str.maketrans({"a": "4", "A": "4", "e": "3", "E": "3", "i": "1", "I": "1", "o": "0", "O": "0",
                       "s": "5", "S": "5", "t": "7", "T": "7"})
# Latin letter -> the Cyrillic letter that looks the same (a few of Unicode's "confusables", UTS #39).
HOMOGLYPHS = {"a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458", "o": "\u043e",
              "p": "\u0440", "s": "\u0455", "x": "\u0445", "y": "\u0443", "A": "\u0410", "B": "\u0412",
              "C": "\u0421", "E": "\u0415", "H": "\u041d", "I": "\u0406", "K": "\u041a", "M": "\u041c",
              "O": "\u041e", "P": "\u0420", "S": "\u0405", "T": "\u0422", "X": "\u0425"}
# Greek capitals that look Latin: not used by the attack, but folded by the defence all the same.
_GREEK = {"\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I",
          "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T",
          "\u03a5": "Y", "\u03a7": "X", "\u03bf": "o"}
# Invisible characters: zero-width space, non-joiner, joiner, word joiner, byte-order mark, soft hyphen.
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")


def leetspeak(text):
    """FREE -> FR33: vowels and a few consonants as digits."""
    return text.translate(_LEET)


def homoglyphs(text):
    """Latin letters -> Cyrillic look-alikes: the same picture, different bytes, different tokens."""
    return "".join(HOMOGLYPHS.get(ch, ch) for ch in text)


def zero_width(text):
    """An invisible zero-width space between the letters of every word."""
    return re.sub(r"\S+", lambda m: ZERO_WIDTH[0].join(m.group()), text)


def odd_spacing(text):
    """F R E E: a space between the letters of every word."""
    return re.sub(r"\S+", lambda m: " ".join(m.group()), text)


def visible(text):
    """text with its invisible characters shown as a middle dot, for printing attacks that hide them."""
    return text.translate(dict.fromkeys(map(ord, ZERO_WIDTH), "\u00b7"))


def drop(text):
    """The word removed (the greedy attack's blunt edit)."""
    return ""


CHAR_TRICKS = {"leetspeak": leetspeak, "homoglyphs": homoglyphs, "zero_width": zero_width,
               "spacing": odd_spacing}
WORD_EDITS = {"drop": drop, **CHAR_TRICKS}


def split_words(text):
    """The message as pieces that concatenate back to it: each word with the whitespace after it."""
    pieces = re.findall(r"\s*\S+\s*", text)
    return pieces or ([text] if text else [])


def edit_word(piece, edit):
    """Apply edit (a WORD_EDITS function) to the word in piece, keeping the whitespace around it."""
    lead, word, trail = re.fullmatch(r"(\s*)(.*?)(\s*)", piece, flags=re.DOTALL).groups()
    new = edit(word)
    return lead + (new + trail if new else "")  # a dropped word takes its trailing space with it


def apply_trick(text, trick, protect=None):
    """Apply a character trick to every word of text (but those matching protect); returns (new text, words
    changed)."""
    pieces = split_words(text)
    new = [p if protect is not None and protect.search(p) else edit_word(p, trick) for p in pieces]
    return "".join(new), sum(a != b for a, b in zip(pieces, new))


def token_changes(text, tokenizer, tricks=None):
    """A DataFrame: the text under each trick, its GPT-2 tokens (as byte strings where a token splits a letter)."""
    rows = []
    for name, trick in {"original": lambda t: t, **(tricks or CHAR_TRICKS)}.items():
        changed = trick(text)
        ids = tokenizer.encode(changed, disallowed_special=())
        pieces = [_token_text(tokenizer, i) for i in ids]
        rows.append({"trick": name, "text": changed, "tokens": len(ids), "pieces": " | ".join(pieces)})
    return pd.DataFrame(rows).set_index("trick")


def _token_text(tokenizer, token_id):
    """One token as text; a token holding part of a multi-byte letter is shown as its bytes."""
    raw = tokenizer.decode_single_token_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return str(raw)[1:]  # e.g. '\xd0' : half of a Cyrillic letter


# --- Attacks: each (text, score_fn) -> (attacked text, edits) ---------------------------------------------

def trick_attack(text, score_fn, trick):
    """The blind attack: one character trick on every word but the payload, no look at the classifier."""
    return apply_trick(text, trick, PAYLOAD)


def padding_attack(text, score_fn, ham_texts, where="append", max_messages=8, threshold=THRESHOLD):
    """Add ordinary ham messages (from the TRAINING set) one at a time until the message reads as ham.

    Returns (attacked text, words added); the text with all max_messages added when none is enough.
    """
    if where not in ("append", "prepend"):
        raise ValueError(f"padding where={where!r}; use 'append' or 'prepend'.")
    candidates, words = [], []
    for n in range(1, min(max_messages, len(ham_texts)) + 1):
        filler = " ".join(ham_texts[:n])
        candidates.append(f"{text} {filler}" if where == "append" else f"{filler} {text}")
        words.append(len(filler.split()))
    if not candidates:
        return text, 0
    for candidate, added, p in zip(candidates, words, score_fn(candidates)):
        if p < threshold:
            return candidate, added
    return candidates[-1], words[-1]


def greedy_attack(text, score_fn, budget=5, edits=None, threshold=THRESHOLD, protect=PAYLOAD):
    """Edit the word pushing hardest towards spam (occlusion), then the next, at most budget edits.

    Each round asks look_inside.occlusion_scores which untouched word adds most to P(spam), tries every
    edit in `edits` (a dict like WORD_EDITS, the default: drop and the character tricks) on it, and keeps
    the one with the lowest P(spam). Words matching `protect` (the payload) stay as they are; None edits
    any word. Stops once the message reads as ham. Returns (attacked text, edits made).
    """
    edits = list((edits or WORD_EDITS).values())
    pieces = split_words(text)
    free = [i for i, piece in enumerate(pieces) if protect is None or not protect.search(piece)]
    p, made = float(score_fn([text])[0]), 0
    while p >= threshold and made < budget and free:
        scores = look_inside.occlusion_scores(score_fn, pieces)
        i = max(free, key=lambda j: scores[j])
        options = [pieces[:i] + [edit_word(pieces[i], edit)] + pieces[i + 1:] for edit in edits]
        probs = [float(q) for q in score_fn(["".join(o) for o in options])]
        best = min(range(len(options)), key=probs.__getitem__)
        pieces, p, made = options[best], probs[best], made + 1
        free.remove(i)
    return "".join(pieces), made


ATTACKS = ("leetspeak", "homoglyphs", "zero_width", "spacing", "pad_append", "pad_prepend", "greedy")


def make_attacks(ham_texts, names=ATTACKS, budget=5, max_pad_messages=8):
    """name -> attack(text, score_fn) for the named attacks; padding draws on ham_texts (training ham only)."""
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ValueError(f"Unknown attack {', '.join(unknown)}; choose from {', '.join(ATTACKS)}.")
    if budget < 1:
        raise ValueError(f"The greedy attack's budget is {budget}; give at least 1 edit.")
    made = {}
    for name in names:
        if name in CHAR_TRICKS:
            made[name] = functools.partial(trick_attack, trick=CHAR_TRICKS[name])
        elif name.startswith("pad_"):
            made[name] = functools.partial(padding_attack, ham_texts=list(ham_texts), where=name[4:],
                                           max_messages=max_pad_messages)
        else:
            made[name] = functools.partial(greedy_attack, budget=budget)
    return made


def memoised(score_fn):
    """score_fn that scores each distinct text once: attacks and defences ask about the same texts again and again.

    Scores do not depend on what else is in the batch (every message is padded to the same length), so the
    answers are the ones score_fn gives; new texts still go to score_fn together, in one call.
    """
    known = {}

    def score(texts):
        texts = list(texts)
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if new:
            known.update(zip(new, (float(p) for p in score_fn(new))))
        return [known[t] for t in texts]

    return score


def caught_spam(score_fn, texts, labels, threshold=THRESHOLD):
    """The spam messages (label 1) the classifier calls spam: the ones worth attacking."""
    spam = [t for t, y in zip(texts, labels) if int(y) == 1]
    return [t for t, p in zip(spam, score_fn(spam)) if p >= threshold] if spam else []


def run_attack(score_fn, spam_texts, attack, threshold=THRESHOLD, desc=None):
    """Attack every message; a DataFrame with original, attacked, edits, P(spam) after, success.

    desc: a progress bar with this label, one step per message (the greedy attack takes seconds per message).
    """
    rows = [dict(zip(("attacked", "edits"), attack(text, score_fn)), original=text)
            for text in tqdm(spam_texts, desc=desc, unit="msg", disable=desc is None, leave=False)]
    after = [float(p) for p in score_fn([r["attacked"] for r in rows])] if rows else []
    for row, p in zip(rows, after):
        row.update(p_spam=p, success=p < threshold)
    return pd.DataFrame(rows, columns=["original", "attacked", "edits", "p_spam", "success"])


def summarise(results):
    """(success rate, mean edits of the successful attacks); nan where nothing to average."""
    if len(results) == 0:
        return float("nan"), float("nan")
    won = results[results["success"]]
    return float(results["success"].mean()), float(won["edits"].mean()) if len(won) else float("nan")


def format_result(rate, edits):
    """"40% (2.5)": the success rate and, in brackets, the mean edits of the successes."""
    if math.isnan(rate):
        return "n/a"
    return f"{rate:.0%}" + ("" if math.isnan(edits) else f" ({edits:.1f})")


def success_by_budget(results, budget):
    """Greedy success rate for every k = 0..budget, read off one run with the largest budget.

    Valid because the greedy attack is deterministic: with budget k it makes the same first k edits.
    """
    n = max(len(results), 1)
    return [float(((results["edits"] <= k) & results["success"]).sum()) / n for k in range(budget + 1)]


# --- Defences ------------------------------------------------------------------------------------------

_FOLD = str.maketrans({**{v: k for k, v in HOMOGLYPHS.items()}, **_GREEK, **dict.fromkeys(ZERO_WIDTH)})


def normalise(text):
    """NFKC (full-width and styled letters -> plain), Cyrillic/Greek look-alikes -> Latin, invisibles removed."""
    return unicodedata.normalize("NFKC", text).translate(_FOLD)


def with_normalisation(score_fn):
    """A score_fn that normalises every text first: the input-normalisation defence."""
    return lambda texts: score_fn([normalise(t) for t in texts])


def augment_training_set(train_df, ham_texts, seed=123, share=0.5):
    """train_df plus one attacked copy of every training spam (a random trick or padding on random words).

    Each copy gets one of drop / the character tricks on a random `share` of its words (the payload spared), or
    one ham message
    (from ham_texts, the training ham) appended or prepended. Label stays spam.
    """
    rng = random.Random(seed)
    kinds = list(WORD_EDITS) + ["pad_append", "pad_prepend"]
    copies = []
    for text in train_df.loc[train_df["Label"] == 1, "Text"]:
        kind = rng.choice(kinds)
        if kind.startswith("pad_"):
            filler = rng.choice(ham_texts)
            copies.append(f"{text} {filler}" if kind == "pad_append" else f"{filler} {text}")
            continue
        pieces = split_words(text)
        editable = [i for i, piece in enumerate(pieces) if not PAYLOAD.search(piece)]  # as the attacks do
        chosen = set(rng.sample(editable, max(1, round(share * len(editable))))) if editable else set()
        copies.append("".join(edit_word(p, WORD_EDITS[kind]) if i in chosen else p for i, p in enumerate(pieces)))
    extra = pd.DataFrame({"Label": 1, "Text": copies})
    return pd.concat([train_df[["Label", "Text"]], extra], ignore_index=True)


def clean_accuracy(score_fn, texts, labels, threshold=THRESHOLD):
    """Accuracy on unattacked messages: what a defence may cost."""
    predicted = [int(p >= threshold) for p in score_fn(list(texts))]
    return sum(p == int(y) for p, y in zip(predicted, labels)) / max(len(predicted), 1)


def attack_defence_table(classifiers, test_texts, test_labels, attacks, max_messages=None):
    """One row per (model, defence): clean accuracy, spam caught, then per attack "success% (mean edits)".

    classifiers: {(model name, defence name): score_fn}; "spam caught" counts the test spam it catches,
    "attacked" how many of them the attacks ran on (at most max_messages). Returns (table DataFrame, {row key:
    {attack: results DataFrame}}) so callers can show examples and curves. A progress bar counts the runs.
    """
    rows, details = [], {}
    for (model_name, defence), score_fn in tqdm(classifiers.items(), desc="attack x defence", unit="classifier"):
        score_fn = memoised(score_fn)  # the clean accuracy scores the spam the attacks start from
        accuracy = clean_accuracy(score_fn, test_texts, test_labels)
        caught = caught_spam(score_fn, test_texts, test_labels)
        spam = caught[:max_messages]
        row = {"model": model_name, "defence": defence, "clean test acc.": f"{accuracy:.1%}",
               "spam caught": len(caught), "attacked": len(spam)}
        details[model_name, defence] = {}
        for name, attack in attacks.items():
            results = run_attack(score_fn, spam, attack, desc=f"{model_name}, {defence}: {name}")
            details[model_name, defence][name] = results
            row[name] = format_result(*summarise(results))
        rows.append(row)
    return pd.DataFrame(rows), details


# --- The GPT-2 classifier as a score_fn, and its adversarially augmented twin ---------------------------

def gpt2_score_fn(model, tokenizer, device, max_length=None, *, trainable_token_pos="last",
                  average_embeddings=False, batch_size=32, precision="fp32"):
    """score_fn for a GPT-2 classifier: prediction.class_probabilities(...)[:, 1] as a list of floats."""
    def score_fn(texts):
        probs = prediction.class_probabilities(list(texts), model, tokenizer, device, max_length,
                                               trainable_token_pos=trainable_token_pos,
                                               average_embeddings=average_embeddings, batch_size=batch_size,
                                               precision=precision)
        return probs[:, 1].tolist()

    return score_fn


def fine_tune_copy(model, train_df, val_df, tokenizer, device, max_length, *, num_epochs=2, lr=5e-5,
                   batch_size=8, seed=123, trainable_token_pos="last", precision="fp32"):
    """A copy of the classifier fine-tuned further on train_df (the chapter's trainable part: last block,
    final norm, head), with the fast trainer (precision "bf16": its frozen pass in bf16); the original stays as it
    was. Returns the copy."""
    tuned = copy.deepcopy(model).to(device)
    for param in tuned.parameters():
        param.requires_grad = False
    for part in (tuned.trf_blocks[-1], tuned.final_norm, tuned.out_head):
        for param in part.parameters():
            param.requires_grad = True
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # the warning that long messages are cut to max_length (as in training)
        warnings.simplefilter("ignore", spam_dataset.DataWarning)
        train = spam_dataset.SpamDataset(train_df, tokenizer, max_length=max_length)
        val = spam_dataset.SpamDataset(val_df, tokenizer, max_length=train.max_length)
        train_loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
        val_loader = torch.utils.data.DataLoader(val, batch_size=batch_size)
        optimizer = fast_trainer.make_optimizer(tuned, lr=lr)
        # a log line every 50 steps, so a long run is never silent (its losses read the cache: no extra pass)
        fast_trainer.train_classifier_fast(tuned, train_loader, val_loader, optimizer, device, num_epochs,
                                           eval_freq=50, eval_iter=1, trainable_token_pos=trainable_token_pos,
                                           precision=precision)
    tuned.eval()
    return tuned


# --- The whole measurement: attack x defence, for the GPT-2 classifier and the TF-IDF baseline -----------

DEFENCES = ("none", "normalise", "augment", "normalise+augment")


def _with_defences(model_name, score_fn, augmented_fn, defences):
    """{(model, defence): score_fn}: normalisation wraps the input, augmentation swaps in the retrained model."""
    made = {}
    for defence in defences:
        base = augmented_fn() if "augment" in defence else score_fn
        made[model_name, defence] = with_normalisation(base) if "normalise" in defence else base
    return made


def attack_report(model, tokenizer, device, splits, *, max_length=None, trainable_token_pos="last",
                  average_embeddings=False, attacks=ATTACKS, defences=DEFENCES, budget=5, max_messages=None,
                  augment_epochs=2, augment_lr=5e-5, tfidf_baseline=True, seed=123):
    """Attack x defence for a GPT-2 classifier (and, with tfidf_baseline, TF-IDF): (table, details) as
    attack_defence_table returns them. splits: {"train", "validation", "test": DataFrame with Label, Text}.

    Padding and augmentation draw on TRAINING messages only; every attack runs on the test set, afresh
    against each defended model.
    """
    unknown = [d for d in defences if d not in DEFENCES]
    if unknown:
        raise ValueError(f"Unknown defence {', '.join(unknown)}; choose from {', '.join(DEFENCES)}.")
    train, test = splits["train"], splits["test"]
    ham = train.loc[train["Label"] == 0, "Text"].tolist()
    random.Random(seed).shuffle(ham)  # padding text: a fixed random order of training ham
    made = make_attacks(ham, attacks, budget)  # first: a bad name or budget fails before any work
    augmented = augment_training_set(train, ham, seed=seed)
    token = {"trainable_token_pos": trainable_token_pos, "average_embeddings": average_embeddings}
    gpt2 = gpt2_score_fn(model, tokenizer, device, max_length, **token)

    @functools.cache
    def gpt2_augmented():
        tuned = fine_tune_copy(model, augmented, splits["validation"], tokenizer, device, max_length,
                               num_epochs=augment_epochs, lr=augment_lr, seed=seed,
                               trainable_token_pos=trainable_token_pos)
        return gpt2_score_fn(tuned, tokenizer, device, max_length, **token)

    classifiers = _with_defences("GPT-2", gpt2, gpt2_augmented, defences)
    if tfidf_baseline:
        plain = baseline.fit_tfidf_baseline(train["Text"], train["Label"], seed=seed)
        hardened = functools.cache(lambda: baseline.fit_tfidf_baseline(augmented["Text"], augmented["Label"],
                                                                   seed=seed))
        classifiers.update(_with_defences("TF-IDF", lambda texts: plain.predict_proba(list(texts))[:, 1],
                                          lambda: lambda texts: hardened().predict_proba(list(texts))[:, 1],
                                          defences))
    return attack_defence_table(classifiers, test["Text"].tolist(), test["Label"].tolist(), made, max_messages)


def attack_checkpoint(checkpoint, data=None, data_dir="data", *, test_mode=False, device="cpu", max_messages=None,
                      **options):
    """attack_report for a saved classifier (file or run folder) on the split it was trained on.

    data / data_dir / test_mode as for training (prepare_spam_splits rebuilds the same 70/10/20 split, so the
    test messages are the held-out ones). options go to attack_report. Returns (table, details).
    """
    if max_messages is not None and max_messages < 1:
        raise ValueError(f"--max-messages {max_messages}: attack at least 1 message (or leave it out for all).")
    model, info = checkpoints.load_classifier(checkpoint, device=device)
    paths = prepare_spam_splits(data, data_dir, offline=test_mode, verbose=False)
    splits = {name: pd.read_csv(paths[name]) for name in ("train", "validation", "test")}
    tokenizer = get_gpt2_tokenizer()
    extra = info.get("extra") or {}
    return attack_report(model, tokenizer, device, splits, max_length=info.get("max_length"),
                         trainable_token_pos=extra.get("trainable_token_pos", "last"),
                         average_embeddings=saved_average_embeddings(extra),
                         max_messages=max_messages, **options)
