"""A second protocol beside the chapter's: 5-fold stratified cross-validation on every distinct message.

The chapter balances the data (747 spam, 747 ham) and tests once, on 300 messages. Published results on the
SMS Spam Collection use the full, unbalanced data (about one message in eight is spam), usually deduplicated,
with cross-validation or an 80/20 split. This protocol puts GPT-2 and the TF-IDF baseline on that map, on the
same folds: accuracy (with its count and 95% interval) and the spam class's precision, recall, F1 and PR-AUC
(average precision), per fold, as mean ± sd over the folds, and over all folds' predictions pooled.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold, train_test_split

import spam_dataset
from beyond.baseline import fit_tfidf_baseline
from beyond.data_loaders import create_data_loaders
from beyond.data_splits import find_local_sms_zip, prepare_spam_splits
from beyond.experiments import setup_classifier
from beyond.fast_trainer import make_optimizer, train_classifier_fast
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.intervals import accuracy_record, format_accuracy
from beyond.model_setup import build_model, is_test_mode, resolve_device, threads_for_test_mode
from beyond.prediction import class_probabilities
from beyond.seeds import summarise
from beyond.training_controls import controls_for
from gpt_download import atomic_write

N_FOLDS = 5
SCORES = ("accuracy", "precision", "recall", "f1", "pr_auc")


def load_all_messages(data=None, data_dir="data", *, offline=False, text_column=None, label_column=None,
                      encoding=None):
    """(DataFrame of every distinct message, Label as class ids, Text; the label names): deduplicated, unbalanced."""
    if data is None and not offline:  # the chapter's download, into data_dir
        folder = Path(data_dir) / "sms_spam_collection"
        data = spam_dataset.download_and_unzip_spam_data(spam_dataset.SMS_URL,
                                                         Path(data_dir) / "sms_spam_collection.zip", folder,
                                                         folder / "SMSSpamCollection.tsv")
    elif data is None:
        data = find_local_sms_zip(data_dir) or "synthetic"
    with tempfile.TemporaryDirectory() as tmp:  # one "split" holding everything, read back at once
        splits = prepare_spam_splits(data, tmp, text_column=text_column, label_column=label_column,
                                                  encoding=encoding, balance=False, dedupe=True, train_frac=1.0,
                                                  validation_frac=0.0, verbose=False)
        messages = spam_dataset.read_split(splits["train"])
    if splits["note"]:
        print(splits["note"])
    if len(splits["label_names"]) != 2:
        raise spam_dataset.DataError(f"--protocol cv5 scores a positive class, so it needs two classes; the data "
                                     f"has {len(splits['label_names'])}: {splits['label_names']}")
    return messages, splits["label_names"]


def stratified_folds(labels, n_folds=N_FOLDS, seed=123):
    """[(train_index, test_index)] from StratifiedKFold, shuffled with seed: each message tested exactly once."""
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(labels)), np.asarray(labels)))


def fold_scores(labels, spam_probabilities):
    """Accuracy (count, 95% interval) and spam precision, recall, F1, PR-AUC of P(spam) against the labels."""
    labels, probabilities = np.asarray(labels), np.asarray(spam_probabilities, dtype=float)
    predicted = (probabilities > 0.5).astype(int)  # argmax of two classes; a tie goes to ham, as argmax does
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="binary",
                                                               zero_division=0)
    return {**accuracy_record(int((predicted == labels).sum()), len(labels)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "pr_auc": float(average_precision_score(labels, probabilities))}


def cross_validate(messages, spam_probabilities, n_folds=N_FOLDS, seed=123):
    """Scores per fold, their mean ± sd, and pooled over every fold, of spam_probabilities(train_df, test_df)."""
    labels = messages["Label"].to_numpy()
    pooled = np.zeros(len(messages))
    folds = []
    for number, (train_index, test_index) in enumerate(stratified_folds(labels, n_folds, seed), start=1):
        print(f"--- fold {number} of {n_folds}: train on {len(train_index)}, test on {len(test_index)} ---",
              flush=True)
        pooled[test_index] = spam_probabilities(messages.iloc[train_index].reset_index(drop=True),
                                                messages.iloc[test_index].reset_index(drop=True))
        folds.append(fold_scores(labels[test_index], pooled[test_index]))
    return {"folds": folds, "mean_sd": {key: summarise([fold[key] for fold in folds]) for key in SCORES},
            "overall": fold_scores(labels, pooled)}


def tfidf_spam_probabilities(train_df, test_df, seed=123):
    """P(spam) of the test messages from the TF-IDF + logistic-regression baseline fitted on train_df."""
    model = fit_tfidf_baseline(train_df["Text"], train_df["Label"], seed=seed)
    return model.predict_proba(test_df["Text"].tolist())[:, 1]


def gpt2_spam_probabilities(train_df, test_df, args):
    """P(spam) of the test messages after the chapter's fine-tune (fast trainer) on train_df, 1/8 held out to validate.

    args: the training command's settings (model, weights, epochs, lr, batch size, seed, device, precision).
    """
    train_df, val_df = train_test_split(train_df, test_size=0.125, stratify=train_df["Label"],
                                        random_state=args.seed)  # 70/10/20 of the data, as the chapter's split
    device = resolve_device(args.device)
    tokenizer = get_gpt2_tokenizer(args.models_dir)
    model, cfg = build_model(args.model_size, args.weights, args.models_dir, test_mode=args.test_mode,
                             weights_format=args.weights_format, seed=args.seed)
    loaders = create_data_loaders(train_df, val_df, test_df, tokenizer, batch_size=args.batch_size,
                                               seed=args.seed)
    max_length = min(loaders[0].dataset.max_length, int(cfg["context_length"]))
    if max_length < loaders[0].dataset.max_length:  # cut to the model's context, as the training command does
        loaders = create_data_loaders(train_df, val_df, test_df, tokenizer, seed=args.seed,
                                                   batch_size=args.batch_size, max_length=max_length)
    torch.manual_seed(args.seed)  # the new head's start, as the chapter seeds it
    model = setup_classifier(model, 2).to(device)
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    torch.manual_seed(args.seed)
    train_classifier_fast(model, loaders[0], loaders[1], optimizer, device, args.num_epochs, args.eval_freq,
                          args.eval_iter, precision=args.precision, cache_memory=args.cache_memory,
                          cache_dir=args.cache_dir,  # its own cache, freed when it returns
                          controls=controls_for(args, len(loaders[0])))  # --lr-schedule etc.; None: the chapter's
    return class_probabilities(test_df["Text"].tolist(), model, tokenizer, device, max_length,
                               precision=args.precision)[:, 1].numpy()


def run_cross_validation(args):
    """--protocol cv5: the baseline and GPT-2 on the same folds; prints the table, writes output_dir/cv5.json."""
    test_mode = is_test_mode(args.test_mode)
    with threads_for_test_mode(test_mode):
        messages, label_names = load_all_messages(args.data, args.data_dir, offline=test_mode,
                                                  text_column=args.text_column, label_column=args.label_column,
                                                  encoding=args.encoding)
        print(f"Protocol cv5: {len(messages)} distinct messages ({int(messages['Label'].sum())} {label_names[1]}), "
              f"unbalanced, {N_FOLDS} stratified folds (seed {args.seed}).")
        gpt_name = "tiny random GPT (test mode)" if test_mode else f"GPT-2 {args.model_size}, {args.weights} weights"
        results = {"TF-IDF + logistic regression": cross_validate(
                       messages, lambda train, test: tfidf_spam_probabilities(train, test, args.seed), seed=args.seed),
                   gpt_name: cross_validate(
                       messages, lambda train, test: gpt2_spam_probabilities(train, test, args), seed=args.seed)}
    print("\n" + format_cross_validation(results))
    os.makedirs(args.output_dir, exist_ok=True)
    with atomic_write(os.path.join(args.output_dir, "cv5.json")) as tmp:
        tmp.write_text(json.dumps({"protocol": "cv5", "messages": len(messages), "label_names": label_names,
                                   "seed": args.seed, "models": results}, indent=2), encoding="utf-8")
    print(f"Wrote {os.path.join(args.output_dir, 'cv5.json')}")
    return results


def format_cross_validation(results):
    """A markdown table: per model, each fold, mean ± sd over the folds, and all folds pooled (with the count)."""
    lines = ["| model | folds | accuracy | spam precision | spam recall | spam F1 | PR-AUC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        for number, fold in enumerate(result["folds"], start=1):
            lines.append(f"| {name} | fold {number} | " + " | ".join(f"{fold[k] * 100:.2f}%" for k in SCORES) + " |")
        spread = result["mean_sd"]
        lines.append(f"| {name} | mean ± sd | " + " | ".join(
            f"{spread[k]['mean'] * 100:.2f} ± {(spread[k]['sd'] or 0) * 100:.2f}" for k in SCORES) + " |")
        overall = result["overall"]
        lines.append(f"| {name} | pooled | {format_accuracy(overall['correct'], overall['total'])} | "
                     + " | ".join(f"{overall[k] * 100:.2f}%" for k in SCORES[1:]) + " |")
    return "\n".join(lines)
