"""attacks.py: the character tricks and their undoing, padding, the greedy attack's budget, the table, the CLI."""

import pandas as pd
import pytest
import torch

import gpt_model
from beyond import attacks
from beyond.gpt2_tokenizer import get_gpt2_tokenizer

SPAM_WORDS = {"win", "free", "cash", "prize", "call"}


def toy_score(texts):
    """P(spam) = 0.3 per spam word (capped at 1): removing or disguising two of three words makes it ham."""
    return [min(1.0, 0.3 * sum(w.lower().strip("!.,") in SPAM_WORDS for w in t.split())) for t in texts]


def share_score(texts):
    """P(spam) = the share of spam words: ordinary words added dilute it."""
    return [sum(w.lower() in SPAM_WORDS for w in t.split()) / max(len(t.split()), 1) for t in texts]


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


# --- the character tricks ---


def test_leetspeak_as_in_the_issue():
    assert attacks.leetspeak("FREE") == "FR33"
    assert attacks.leetspeak("call now to win") == "c4ll n0w 70 w1n"


def test_normalisation_undoes_homoglyphs_and_zero_width():
    text = "URGENT! You have WON a FREE prize, claim it at once"
    for trick in (attacks.homoglyphs, attacks.zero_width, lambda t: attacks.zero_width(attacks.homoglyphs(t))):
        changed = trick(text)
        assert changed != text
        assert attacks.normalise(changed) == text
    assert attacks.normalise(text) == text  # plain text passes unchanged


def test_homoglyphs_look_alike_but_are_not_ascii():
    changed = attacks.homoglyphs("FREE cash")
    assert len(changed) == len("FREE cash") and not changed.isascii()
    assert {ch for ch in changed if not ch.isascii()} <= set(attacks.HOMOGLYPHS.values())


def test_zero_width_is_invisible_and_between_letters():
    changed = attacks.zero_width("win now")
    assert changed == "w\u200bi\u200bn n\u200bo\u200bw"


def test_odd_spacing_round_trip():
    text = "FREE entry now"
    spaced = attacks.odd_spacing(text)
    assert spaced == "F R E E e n t r y n o w" and attacks.odd_spacing("FREE")[::2] == "FREE"


def test_normalisation_folds_full_width_letters_with_nfkc():
    assert attacks.normalise("\uff26\uff32\uff25\uff25 cash") == "FREE cash"


def test_every_trick_changes_the_gpt2_tokens(tokenizer):
    text = "FREE entry! Text WIN now"
    table = attacks.token_changes(text, tokenizer)
    assert list(table.index) == ["original", *attacks.CHAR_TRICKS]
    assert table.loc["original", "tokens"] == len(tokenizer.encode(text))
    original_ids = tokenizer.encode(text)
    for name, trick in attacks.CHAR_TRICKS.items():
        ids = tokenizer.encode(trick(text), disallowed_special=())
        assert ids != original_ids and len(ids) > len(original_ids), name
        assert table.loc[name, "tokens"] == len(ids)
    assert "'\\xd0'" in table.loc["homoglyphs", "pieces"]  # a Cyrillic letter split into byte tokens


@pytest.mark.parametrize("text", ["Win FREE cash now", "  lead and trail  ", "one", "", "a\nb\tc", "   "])
def test_split_words_concatenates_back(text):
    assert "".join(attacks.split_words(text)) == text


def test_dropping_a_word_keeps_the_rest_readable():
    pieces = attacks.split_words("Win FREE cash")
    assert "".join([pieces[0], attacks.edit_word(pieces[1], attacks.drop), pieces[2]]) == "Win cash"
    assert "".join([attacks.edit_word(pieces[0], attacks.drop), *pieces[1:]]) == "FREE cash"


def test_blind_trick_counts_changed_words_and_spares_the_payload():
    text, edits = attacks.apply_trick("Call 09061701461 to claim", attacks.homoglyphs, attacks.PAYLOAD)
    assert "09061701461" in text and edits == 3


# --- padding and the greedy attack ---


def test_padding_adds_training_ham_until_called_ham():
    ham = ["see you at the station later", "ok thanks for the lift", "mum says hi"]
    text = "win free cash"
    appended, words = attacks.padding_attack(text, share_score, ham, where="append")
    assert appended == f"{text} {ham[0]}" and words == 6
    prepended, words = attacks.padding_attack(text, share_score, ham, where="prepend")
    assert prepended.endswith(text) and prepended.startswith(ham[0]) and words == 6
    # never enough: all padding messages added, still spam
    never, words = attacks.padding_attack(text, lambda ts: [0.9] * len(ts), ham, max_messages=2)
    assert never == f"{text} {ham[0]} {ham[1]}" and words == 11


def test_greedy_attack_succeeds_on_a_toy_classifier():
    text = "please win this free cash today"
    assert toy_score([text])[0] == pytest.approx(0.9)
    attacked, edits = attacks.greedy_attack(text, toy_score, budget=5)
    # each edit removes one spam word (drop or a disguise), so exactly two edits reach 0.3 < 0.5
    assert edits == 2 and toy_score([attacked])[0] == pytest.approx(0.3)
    assert sum(w in attacked.split() for w in ("win", "free", "cash")) == 1


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_greedy_attack_stops_within_its_budget(budget):
    calls = []

    def stubborn(texts):  # always spam: the attack can only stop at its budget
        calls.append(len(texts))
        return [0.9] * len(texts)

    _, edits = attacks.greedy_attack("one two three four five", stubborn, budget=budget)
    assert edits == budget
    # one score of the message, then per edit one occlusion call and one call trying the edits
    assert len(calls) == 1 + 2 * budget


def test_greedy_attack_never_touches_the_payload():
    text = "call 09061701461 win"
    attacked, edits = attacks.greedy_attack(text, lambda ts: [0.9] * len(ts), budget=5)
    assert "09061701461" in attacked and edits == 2  # only the two other words were free to edit


def test_success_by_budget_reads_one_run():
    results = attacks.run_attack(toy_score, ["win free cash", "win free cash prize call", "free cash call"],
                                 attacks.make_attacks([], ["greedy"], budget=3)["greedy"])
    curve = attacks.success_by_budget(results, 3)
    assert curve[0] == 0 and curve == sorted(curve)
    assert curve[-1] == pytest.approx(results["success"].mean())
    assert (results["edits"] <= 3).all()


def test_make_attacks_names_the_unknown():
    with pytest.raises(ValueError, match="Unknown attack sarcasm"):
        attacks.make_attacks([], ["sarcasm"])


# --- defences and the table ---


def test_augmentation_adds_one_attacked_copy_per_training_spam():
    train = pd.DataFrame({"Label": [1, 0, 1, 0], "Text": ["win free cash now", "hi mum", "call to claim prize",
                                                          "ok see you"]})
    ham = ["hi mum", "ok see you"]
    augmented = attacks.augment_training_set(train, ham, seed=1)
    assert len(augmented) == 6 and augmented["Label"].tolist() == [1, 0, 1, 0, 1, 1]
    assert augmented.iloc[:4].equals(train)
    assert augmented.equals(attacks.augment_training_set(train, ham, seed=1))  # deterministic


def test_attack_defence_table_on_a_toy_classifier():
    texts = ["win free cash", "hello there", "call to win a prize now", "see you"]
    labels = [1, 0, 1, 0]
    made = attacks.make_attacks(["see you soon", "ok"], ["homoglyphs", "greedy"], budget=3)
    table, details = attacks.attack_defence_table(
        {("toy", "none"): toy_score, ("toy", "normalise"): attacks.with_normalisation(toy_score)},
        texts, labels, made)
    assert table["spam caught"].tolist() == [2, 2]

    assert table.loc[0, "homoglyphs"].startswith("100%")  # the toy knows only plain Latin words...
    assert table.loc[1, "homoglyphs"] == "0%"  # ...until normalisation folds them back
    assert table.loc[0, "clean test acc."] == "100.0%"
    assert set(details["toy", "none"]) == {"homoglyphs", "greedy"}


def test_memoised_score_fn_scores_each_distinct_text_once():
    asked = []

    def score(texts):
        asked.append(list(texts))
        return toy_score(texts)

    memo = attacks.memoised(score)
    assert memo(["win free cash", "hello", "win free cash"]) == [float(p) for p in toy_score(
        ["win free cash", "hello", "win free cash"])]
    assert memo(["hello", "see you"]) == [float(p) for p in toy_score(["hello", "see you"])]
    assert asked == [["win free cash", "hello"], ["see you"]]


def test_visible_shows_zero_width_characters():
    assert attacks.visible(attacks.zero_width("FREE")) == "F\u00b7R\u00b7E\u00b7E"


# --- the GPT-2 classifier through the same code ---


@pytest.fixture(scope="module")
def tiny_classifier():
    torch.manual_seed(123)
    model = gpt_model.GPTModel(gpt_model.TINY_CONFIG)
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], 2)
    return model.eval()


@pytest.fixture(scope="module")
def synthetic_splits(tmp_path_factory):
    from beyond.data_splits import prepare_spam_splits

    paths = prepare_spam_splits("synthetic", tmp_path_factory.mktemp("data"), verbose=False)
    return {name: pd.read_csv(paths[name]) for name in ("train", "validation", "test")}


def test_gpt2_score_fn_gives_the_classifiers_spam_probability(tiny_classifier, tokenizer):
    texts = ["WIN a FREE prize now", "see you at six", attacks.homoglyphs("FREE cash")]
    score = attacks.gpt2_score_fn(tiny_classifier, tokenizer, "cpu", max_length=16)
    for text, p in zip(texts, score(texts)):
        ids = tokenizer.encode(text)[:16]
        ids += [50256] * (16 - len(ids))
        with torch.no_grad():
            logits = tiny_classifier(torch.tensor([ids]))[:, -1, :]
        assert p == pytest.approx(torch.softmax(logits, dim=-1)[0, 1].item(), abs=1e-6)


def test_attack_report_runs_every_attack_and_defence(tiny_classifier, tokenizer, synthetic_splits):
    table, details = attacks.attack_report(tiny_classifier, tokenizer, "cpu", synthetic_splits, max_length=32,
                                           budget=2, max_messages=3, augment_epochs=1)
    assert list(table.columns) == ["model", "defence", "clean test acc.", "spam caught", "attacked", *attacks.ATTACKS]
    assert [tuple(r) for r in table[["model", "defence"]].to_numpy()] == [
        (model, defence) for model in ("GPT-2", "TF-IDF") for defence in attacks.DEFENCES]
    assert (table["attacked"] == table["spam caught"].clip(upper=3)).all()  # the count, and the cap apart
    for per_attack in details.values():
        assert (per_attack["greedy"]["edits"] <= 2).all()


# --- the command line ---


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from beyond import cli

    out = tmp_path_factory.mktemp("run")
    assert cli.main(["--test-mode", "--data", "synthetic", "--data-dir", str(out / "data"), "--output-dir",
                     str(out / "out"), "--num-epochs", "1", "--eval-freq", "10", "--eval-iter", "1"]) == 0
    return out


def test_cli_attack_prints_the_table(trained_run, capsys):
    from beyond import cli

    capsys.readouterr()
    code = cli.main(["attack", "--checkpoint", str(trained_run / "out"), "--test-mode", "--data", "synthetic",
                     "--data-dir", str(trained_run / "data"), "--attacks", "homoglyphs,greedy", "--budget", "2",
                     "--defences", "none", "normalise", "--max-messages", "3", "--augment-epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    header = next(line for line in lines if "defence" in line)
    assert header.split() == ["model", "defence", "clean", "test", "acc.", "spam", "caught", "attacked", "homoglyphs", "greedy"]
    assert sum(line.split()[:2] in (["GPT-2", "none"], ["TF-IDF", "normalise"]) for line in lines) == 2


@pytest.mark.parametrize("flags, message", [
    (["--budget", "0"], "budget is 0"),
    (["--attacks", "sarcasm"], "Unknown attack sarcasm"),
    (["--max-messages", "0"], "--max-messages 0"),
])
def test_cli_attack_user_errors_are_one_line(trained_run, capsys, flags, message):
    from beyond import cli

    capsys.readouterr()
    code = cli.main(["attack", "--checkpoint", str(trained_run / "out"), "--test-mode", "--data", "synthetic",
                     "--data-dir", str(trained_run / "data"), *flags])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_attack_from_the_script_names_a_missing_checkpoint(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "train_classifier.py"
    done = subprocess.run([sys.executable, str(script), "attack", "--checkpoint", str(tmp_path / "nothing")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: Classifier file") and "nothing" in done.stderr
