"""The commands that use a saved classifier: `predict` labels messages, `explain` says why, `attack` tries to fool it.

`python train_classifier.py predict|explain|attack --checkpoint DIR ...`: cli.py parses the command line, adds
--device and --debug, and turns errors into one line. Each command imports what it needs when it runs.
"""

import os
import time


def add_predict_arguments(parser):
    """`train_classifier.py predict --checkpoint DIR "message" ...`"""
    parser.add_argument("messages", nargs="*", help="messages to classify (quote each one)")
    parser.add_argument("--checkpoint", required=True,
                        help="a training run's output folder or its classifier.pt, or the chapter's "
                             "review_classifier.pth (torch.save(model.state_dict(), ...))")
    parser.add_argument("--file", help="a text file with one message per line")
    parser.add_argument("--models-dir", default=None,
                        help="where the GPT-2 files are (a small checkpoint's base; default: where training found "
                             "them)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="pad/truncate to this many tokens (default: the file's; a chapter state_dict: 120)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="class names in class-id order (default: the file's; a chapter state_dict: "
                             "'not spam' 'spam'); put -- before the messages")


def run_predict(args):
    """Print label, probability of that label and message, one line each."""
    from beyond.prediction import predict_from_checkpoint

    messages = list(args.messages)
    if args.file:
        if not os.path.isfile(args.file):
            raise FileNotFoundError(f"Message file {args.file} does not exist; pass a text file with one "
                                    "message per line.")
        with open(args.file, encoding="utf-8") as f:
            messages += [line.rstrip("\r\n") for line in f if line.strip()]
    if not messages:
        raise ValueError("No messages to classify; pass them in quotes after --checkpoint DIR, or --file FILE.")
    if args.max_length is not None and args.max_length < 1:
        raise ValueError(f"--max-length must be at least 1 (got {args.max_length}).")
    results = predict_from_checkpoint(args.checkpoint, messages, device=args.device, models_dir=args.models_dir,
                                      max_length=args.max_length, label_names=args.labels)
    for message, (label, probability) in zip(messages, results):
        print(f"{label}\t{probability:.4f}\t{message}")


def _names(values, known, what):
    """--attacks / --defences: names given apart or comma-separated, checked against the known ones."""
    names = [n for value in values for n in value.replace(",", " ").split()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"Unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}.")
    return names


def add_attack_arguments(parser):
    """`train_classifier.py attack --checkpoint DIR`: evasion attacks on the held-out spam the classifier catches."""
    from beyond import attacks

    parser.add_argument("--checkpoint", required=True, help="a training run's output folder or its classifier.pt")
    parser.add_argument("--attacks", nargs="+", default=list(attacks.ATTACKS), help="which attacks (default: all "
                        f"of {', '.join(attacks.ATTACKS)})")
    parser.add_argument("--defences", nargs="+", default=list(attacks.DEFENCES), help="which defences (default: "
                        f"all of {', '.join(attacks.DEFENCES)})")
    parser.add_argument("--budget", type=int, default=5, help="the greedy attack's most edits per message (5)")
    parser.add_argument("--max-messages", type=int, help="attack at most this many caught spam messages (all)")
    parser.add_argument("--augment-epochs", type=int, default=2, help="extra epochs with attacked examples (2)")
    parser.add_argument("--augment-lr", type=float, default=5e-5, help="their learning rate (5e-5)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    parser.add_argument("--data", help="the data the classifier was trained on (as for training)")
    parser.add_argument("--data-dir", default="data", help="where the splits are written (data)")
    parser.add_argument("--test-mode", action="store_true", help="offline: the shared SMS archive or synthetic data")
    parser.add_argument("--seed", type=int, default=123)


def run_attack(args):
    """Print the attack x defence table: success rates, mean edits, clean accuracy (the TF-IDF baseline too)."""
    from beyond import attacks
    from beyond.model_setup import is_test_mode, resolve_device, threads_for_test_mode

    start = time.time()
    with threads_for_test_mode(args.test_mode):
        table, _ = attacks.attack_checkpoint(
            args.checkpoint, args.data, args.data_dir, test_mode=is_test_mode(args.test_mode),
            device=resolve_device(args.device), max_messages=args.max_messages,
            attacks=_names(args.attacks, attacks.ATTACKS, "attack"),
            defences=_names(args.defences, attacks.DEFENCES, "defence"), budget=args.budget,
            augment_epochs=args.augment_epochs, augment_lr=args.augment_lr,
            tfidf_baseline=not args.no_baseline, seed=args.seed)
    print("Attack success rate on the held-out spam each classifier catches (mean edits of the successes):")
    print(table.to_string(index=False))
    print(f"({time.time() - start:.0f} s)")


def add_explain_arguments(parser):
    """`train_classifier.py explain --checkpoint DIR "message"`: label, P(spam), tokens ranked by attribution."""
    from beyond import look_inside

    parser.add_argument("message", help="the message to explain (in quotes)")
    parser.add_argument("--checkpoint", required=True, help="a training run's output folder or its classifier.pt")
    parser.add_argument("--method", choices=look_inside.METHODS, default="occlusion",
                        help="occlusion: P(spam) lost when the token is deleted (default); integrated_gradients "
                             "or grad_x_input: gradient scores of the spam log-odds")
    parser.add_argument("--top", type=int, default=10, help="how many tokens to list (default: 10; 0: all)")
    parser.add_argument("--output", help="write the coloured tokens as a figure (png, pdf, svg)")
    parser.add_argument("--models-dir", default=None, help="where the GPT-2 files are (a small checkpoint's base)")


def run_explain(args):
    """Print label and P(spam), then the message's tokens ranked by attribution (optionally a figure)."""
    from beyond import look_inside
    from beyond.bonus_training import saved_average_embeddings
    from beyond.checkpoints import load_classifier
    from beyond.gpt2_tokenizer import get_gpt2_tokenizer
    from beyond.model_setup import resolve_device
    from gpt_download import atomic_write

    model, info = load_classifier(args.checkpoint, device=resolve_device(args.device), models_dir=args.models_dir)
    extra = info.get("extra") or {}
    result = look_inside.explain(args.message, model, get_gpt2_tokenizer(args.models_dir),
                                 method=args.method,
                                 max_length=info.get("max_length") if info.get("padded", True) else None,
                                 trainable_token_pos=extra.get("trainable_token_pos", "last"),
                                 average_embeddings=saved_average_embeddings(extra))
    names = info.get("label_names") or ["ham", "spam"]
    label = names[1] if result["p_spam"] >= 0.5 else names[0]
    if args.output:
        fig = look_inside.plot_token_attributions(result["tokens"], result["scores"],
                                                  f"{label}, P(spam) = {result['p_spam']:.4f} ({args.method})")
        with atomic_write(args.output) as tmp:
            fig.savefig(tmp, format=os.path.splitext(args.output)[1].lstrip(".").lower() or "png")
    print(f"{label}\tP(spam) {result['p_spam']:.4f}\t{args.message}")
    print(f"tokens by {args.method} (positive: towards spam, negative: towards ham):")
    ranked = look_inside.rank_tokens(result["tokens"], result["scores"])
    for position, token, score in ranked[:args.top or None]:
        print(f"{score:+.4f}\t{position:>4}\t{token!r}")
    if args.output:
        print(f"Wrote {args.output}")
