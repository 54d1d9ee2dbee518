"""The train command: `python train_classifier.py [flags]` fine-tunes GPT-2 into a spam classifier.

Its flags in groups (the chapter's run, data, speed, the loop's controls, the bonus experiments), then the run:
data, model, the chosen trainer, final metrics, and every output file or none. cli.py parses the command line
and handles errors.
"""

import argparse
import contextlib
import json
import math
import os
import time

import torch

from beyond import data_loaders, data_splits, gpt2_tokenizer
from beyond.activation_cache import ActivationCache, parse_size
from beyond.bonus_training import AVERAGE_EMBEDDINGS, TRAINABLE_TOKEN_POSITIONS, train_classifier_simple
from beyond.checkpoints import save_classifier
from beyond.distributed import (
    cleanup_distributed,
    distribute_training,
    distributed_environment,
    is_main_process,
    printing_on_rank0_only,
    rank0_first,
    setup_distributed,
)
from beyond.duplicates import duplicate_report, format_duplicate_line
from beyond.experiments import LORA_SCALINGS, TRAINABLE_LAYERS, count_trainable_parameters, setup_classifier
from beyond.fast_trainer import (
    FAST_PRECISIONS,
    make_optimizer,
    predict_labels_fast,
    train_classifier_fast,
    why_not_fast,
)
from beyond.intervals import accuracy_records, format_accuracy
from beyond.metrics import classification_metrics, format_metrics_table, plot_confusion_matrix, predict_labels
from beyond.model_setup import WEIGHTS_FORMATS, build_model_with_base, is_test_mode, threads_for_test_mode
from beyond.seeds import parse_seeds, run_over_seeds
from beyond.training_controls import LR_SCHEDULES, controls_for, plot_learning_rates
from gpt_download import atomic_write
from train_classifier import plot_values


def _context_length_arg(value):
    """--context-length: longest_training_example, model_context_length or a number of tokens."""
    value = value.strip().replace("-", "_")
    if value in ("longest_training_example", "model_context_length"):
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not longest_training_example, model_context_length or a "
                                         "positive number of tokens")
    return number


def _size_arg(value):
    """--cache-memory: a size such as 8GB, 512MB or 0."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_train_arguments(parser):
    """Every flag of the training command, in groups: the chapter's run, data, speed, loop controls, experiments."""
    _add_chapter_flags(parser)
    _add_data_flags(parser)
    _add_speed_flags(parser)
    _add_loop_flags(parser)
    _add_bonus_flags(parser)
    _add_honest_flags(parser)
    return parser


def _add_chapter_flags(parser):
    """The chapter's run: model, weights, training settings, device, outputs."""
    chapter = parser.add_argument_group("the chapter's run")
    chapter.add_argument("--model-size", default="gpt2-small (124M)",
                         help='"gpt2-small (124M)" or 124M, "gpt2-medium (355M)" or 355M, 774M, 1558M')
    chapter.add_argument("--weights", choices=("pretrained", "random"), default="pretrained")
    chapter.add_argument("--weights-format", choices=WEIGHTS_FORMATS, default="openai",
                         help="openai: the chapter's TensorFlow checkpoint (safetensors when TensorFlow does not "
                              "import); safetensors: Hugging Face's copy of the same weights, no TensorFlow; "
                              "pytorch: the book's own state_dict files (rasbt/gpt2-from-scratch-pytorch), no "
                              "TensorFlow")
    chapter.add_argument("--models-dir", default="gpt2", help="where the GPT-2 checkpoint files are kept")
    chapter.add_argument("--num-epochs", type=int, default=5)
    chapter.add_argument("--batch-size", type=int, default=8)
    chapter.add_argument("--lr", type=float, default=5e-5)
    chapter.add_argument("--weight-decay", type=float, default=0.1)
    chapter.add_argument("--seed", type=int, default=123)
    chapter.add_argument("--eval-freq", type=int, default=50, help="evaluate every N training steps")
    chapter.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    chapter.add_argument("--output-dir", default="outputs", help="where classifier.pt, metrics.json and plots go")
    chapter.add_argument("--full-checkpoint", action="store_true",
                         help="save every weight in classifier.pt (~500 MB for GPT-2 small) instead of only what "
                              "training changed plus a record of the base weights (loading then finds them)")
    chapter.add_argument("--test-mode", action="store_true",
                         help="tiny random GPT, no downloads, seconds (same as TUTORIAL_TEST_MODE=1)")
    return parser


def _add_data_flags(parser):
    """Where the messages come from and how they are read and balanced."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="the UCI zip, the SMSSpamCollection TSV, a folder holding them, your CSV/TSV, or "
                           "'synthetic' (default: download into --data-dir; test mode: $SMS_SPAM_ZIP or a download "
                           "already in --data-dir, else synthetic data)")
    data.add_argument("--data-dir", default="data", help="where the data and the train/validation/test CSVs go")
    data.add_argument("--text-column", default=None, help="text column of your own CSV")
    data.add_argument("--label-column", default=None, help="label column of your own CSV")
    data.add_argument("--encoding", default=None, help="encoding of your own CSV (e.g. latin-1)")
    data.add_argument("--balance", action=argparse.BooleanOptionalAction, default=True,
                      help="undersample the larger classes to the smallest one, as the chapter does (default: on)")
    data.add_argument("--dedupe", action="store_true",
                      help="drop repeated messages (ignoring case and spacing) before balancing and splitting, so "
                           "no test message is also in training (the chapter keeps them)")
    return parser


def _add_speed_flags(parser):
    """Which loop trains, in which precision, and the fast trainer's cache."""
    speed = parser.add_argument_group("speed")
    speed.add_argument("--trainer", choices=("fast", "simple"), default="fast",
                       help="fast (default: the chapter's results sooner; the chapter's loop where it cannot give "
                            "them) or the chapter's loop, unchanged (simple)")
    speed.add_argument("--precision", choices=FAST_PRECISIONS, default="fp32",
                       help="bf16: the fast trainer's frozen blocks and cache in bfloat16 (half the memory), the "
                            "top under autocast; faster on CPUs with bf16 units, not exact (the chapter's loop "
                            "always runs in fp32)")
    speed.add_argument("--cache-memory", type=_size_arg, default=None,
                       help="memory the fast trainer's activation cache may use, e.g. 8GB (default: half the "
                            "memory available; 0: none, all on disk)")
    speed.add_argument("--cache-dir", default=None,
                       help="where the cache spills beyond --cache-memory (default: the temporary folder)")
    return parser


def _add_loop_flags(parser):
    """Appendix D's schedule and clipping, and early stopping: off by default (the chapter's loop)."""
    loop = parser.add_argument_group("the training loop's controls (appendix D; default: the chapter's loop)")
    loop.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                      help="constant (the chapter's --lr) or cosine: appendix D's linear warm-up from --lr/10 to "
                           "--lr, then a cosine decay to --lr/10, over the optimizer steps")
    loop.add_argument("--warmup-steps", type=int, default=0, help="optimizer steps of linear warm-up (cosine)")
    loop.add_argument("--grad-clip", type=float, default=None,
                      help="clip the gradient norm to this value (appendix D: 1.0), from the end of the warm-up on")
    loop.add_argument("--early-stopping", type=int, default=None, metavar="N",
                      help="stop when the validation loss has not improved for N evaluations, then restore the "
                           "best evaluation's weights (for the final accuracies and the saved classifier)")
    return parser


def _add_bonus_flags(parser):
    """The chapter's bonus experiments, each a switch whose default is the chapter's run."""
    bonus = parser.add_argument_group("experiments beyond the chapter (its bonus table)")
    bonus.add_argument("--trainable-layers", default="last_block", choices=TRAINABLE_LAYERS,
                       help="what trains besides the new head (default: last_block, as in the chapter)")
    bonus.add_argument("--lora-rank", type=int, default=16, help="rank of the LoRA updates (--trainable-layers lora)")
    bonus.add_argument("--lora-alpha", type=float, default=16,
                       help="LoRA scaling: the update is multiplied by alpha (as the chapter's bonus experiments)")
    bonus.add_argument("--lora-scaling", choices=LORA_SCALINGS, default="alpha",
                       help="alpha (default: the bonus experiments and appendix E) or alpha_over_rank (the LoRA "
                            "paper's alpha / rank); either way the new head trains and is wrapped too, as in the bonus")
    bonus.add_argument("--trainable-token-pos", default="last", choices=TRAINABLE_TOKEN_POSITIONS,
                       help="which token's output classifies: last (chapter), first, or flexible (the last "
                            "non-padding one; each batch is then padded only to its longest message)")
    bonus.add_argument("--average-embeddings", nargs="?", const="all_positions", default=False,
                       choices=AVERAGE_EMBEDDINGS,
                       help="classify the mean of the outputs instead of one token: over every position, padding "
                            "included (the default when given, as the bonus script), or real_tokens only")
    bonus.add_argument("--context-length", type=_context_length_arg, default="longest_training_example",
                       help="pad/truncate to longest_training_example (chapter), model_context_length, or N tokens")
    bonus.add_argument("--no-padding", action="store_true",
                       help="no padding at all: batch size 1 (combine with --accumulation-steps N)")
    bonus.add_argument("--accumulation-steps", type=int, default=1,
                       help="update the weights every N batches (gradient accumulation)")
    bonus.add_argument("--disable-causal-mask", action="store_true", help="let every token attend to the whole message")
    bonus.add_argument("--ignore-index", type=int, default=-100,
                       help="target value the cross entropy ignores (the bonus script's --ignore_index; -100: none)")
    return parser

def _add_honest_flags(parser):
    """How sure a figure is: several seeds, or another protocol than the chapter's one split."""
    honest = parser.add_argument_group("how sure the numbers are")
    honest.add_argument("--seeds", type=parse_seeds, default=None,
                        help="repeat the run for each seed, e.g. 123,124,125 (the split and the head's start "
                             "change; --seed 123 is the chapter's): mean, standard deviation and range")
    honest.add_argument("--protocol", choices=("chapter", "cv5"), default="chapter",
                        help="chapter: its balanced 70/10/20 split (default); cv5: 5-fold stratified cross-"
                             "validation on all deduplicated messages, unbalanced, GPT-2 beside the TF-IDF baseline")
    return parser




def _check_numbers(args):
    """Reject settings that would train nothing or crash later, naming the flag."""
    for flag, value in (("--num-epochs", args.num_epochs), ("--batch-size", args.batch_size),
                        ("--eval-freq", args.eval_freq), ("--eval-iter", args.eval_iter),
                        ("--accumulation-steps", args.accumulation_steps)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1 (got {value}).")
    if not args.lr > 0:
        raise ValueError(f"--lr must be a positive number (got {args.lr}).")
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must not be negative (got {args.weight_decay}).")
    if args.warmup_steps < 0 or (args.warmup_steps and args.lr_schedule != "cosine"):
        raise ValueError(f"--warmup-steps needs --lr-schedule cosine and a number of steps of 0 or more (got "
                         f"{args.warmup_steps}).")
    if args.grad_clip is not None and not args.grad_clip > 0:
        raise ValueError(f"--grad-clip must be a positive gradient norm such as 1.0 (got {args.grad_clip}).")
    if args.early_stopping is not None and args.early_stopping < 1:
        raise ValueError(f"--early-stopping counts evaluations and must be at least 1 (got {args.early_stopping}).")
    if args.cache_dir is not None and not os.path.isdir(args.cache_dir):
        raise ValueError(f"--cache-dir {args.cache_dir} is not a folder; create it or pass another one.")


def _loader_options(args, cfg):
    """create_data_loaders' max_length and per_batch_padding for --context-length, --no-padding and "flexible"."""
    max_length = None
    if args.context_length == "model_context_length":
        max_length = int(cfg["context_length"])
    elif isinstance(args.context_length, int):
        if args.context_length > cfg["context_length"]:
            raise ValueError(f"--context-length {args.context_length} is longer than the model's context of "
                             f"{cfg['context_length']} tokens; pass at most {cfg['context_length']}.")
        max_length = args.context_length
    # "flexible" reads the last real token, and causal attention never lets a real token see the padding after
    # it: padding each batch only to its own longest message gives the same numbers for less work (not so
    # without the causal mask). A batch of one message (--no-padding) is padded to its own length: not at all.
    per_batch_padding = args.no_padding or (args.trainable_token_pos == "flexible" and not args.disable_causal_mask)
    return {"max_length": max_length, "per_batch_padding": per_batch_padding}


def _setup_classifier(model, args, num_classes):
    """The new head and what trains (--trainable-layers, LoRA included), then the causal-mask switch."""
    model = setup_classifier(model, num_classes, args.trainable_layers, lora_rank=args.lora_rank,
                             lora_alpha=args.lora_alpha, lora_scaling=args.lora_scaling,
                             disable_causal_mask=args.disable_causal_mask)
    if args.trainable_layers in ("lora", "lora_alternative"):
        trainable, total = count_trainable_parameters(model)
        print(f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g} (scaled by {args.lora_scaling}): "
              f"{trainable:,} of {total:,} parameters train.")
    return model


def _choose_trainer(args, model):
    """The one place deciding the loop: "fast" where it is exact for the switches, else "simple" (saying why)."""
    if args.trainer == "fast":
        reason = why_not_fast(model, args.trainable_token_pos, average_embeddings=args.average_embeddings,
                              ignore_index=args.ignore_index, accumulation_steps=args.accumulation_steps,
                              distributed=distributed_environment()[1] > 1)
        if not reason:
            return "fast"
        print(f"Using the chapter's loop: {reason}.")
    if args.precision != "fp32":
        print(f"Note: --precision {args.precision} applies to the fast trainer only; the chapter's loop runs in fp32.")
    return "simple"


def _json_safe(value):
    """metrics for strict JSON readers: nan/inf (e.g. the loss of an empty split) become null, tensors numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _json_safe(value.item())
    return value


def _write_outputs(output_dir, writers):
    """Call each write(tmp) on a temp file, then rename them all into place; returns the paths written.

    A temp file is renamed only when the with block ends without an error; any error (Ctrl-C too) deletes them
    all, so a run leaves all of its outputs or none (and earlier files stay as they were).
    """
    paths = [os.path.join(output_dir, name) for name in writers]
    with contextlib.ExitStack() as stack:
        for path, write in zip(paths, writers.values()):
            write(stack.enter_context(atomic_write(path)))
    return paths


def run_train(args):
    """One training run, one per --seeds seed, or the --protocol cv5 cross-validation."""
    if args.protocol == "cv5":
        _check_numbers(args)  # the single run checks them itself
        # imported here: scikit-learn and the baseline load only for the protocol that uses them
        from beyond.cross_validation import run_cross_validation

        if args.seeds:
            raise ValueError("--seeds and --protocol cv5 do not combine (cv5 already trains five times); pass "
                             "one --seed instead.")
        return run_cross_validation(args)
    if args.seeds:
        return run_over_seeds(run_training, args, args.seeds)
    return run_training(args)


def run_training(args):
    """The whole training run: data, model, training, accuracies, outputs; returns the metrics dict."""
    try:
        with threads_for_test_mode(args.test_mode), printing_on_rank0_only():  # under torchrun: one log
            return _run_training(args)
    finally:
        cleanup_distributed()  # also after an error, so no process waits for the others


def _run_training(args):
    """run_training's body: data and model, training, final metrics, then every output file or none."""
    start = time.time()
    _check_numbers(args)
    test_mode = is_test_mode(args.test_mode)
    _rank, world_size, device = setup_distributed(args.device)  # torchrun; a plain run: (0, 1, device)
    splits, tokenizer, model, cfg, base = _data_and_model(args, test_mode)
    seconds = {"start_up_data_and_model": time.time() - start}  # where the time outside training goes
    model_desc = "tiny random GPT (test mode)" if test_mode else f"{args.model_size}, {args.weights} weights"
    print(f"Model: {model_desc} | device: {device}")
    label_names = list(splits["label_names"])
    loaders, per_batch_padding = _data_loaders(args, splits, tokenizer, cfg)
    max_length = loaders[0].dataset.max_length

    torch.manual_seed(args.seed)  # the chapter seeds before the new head so its random init is reproducible
    model = _setup_classifier(model, args, len(label_names))
    model.to(device)
    trainer = _choose_trainer(args, model)
    train_start = time.time()
    fast_cache = ActivationCache(args.cache_memory, args.cache_dir)  # the fast trainer fills, the metrics read it
    history, controls = _train(args, trainer, model, loaders, device, fast_cache)
    training_seconds = time.time() - train_start
    print(f"Training completed in {training_seconds / 60:.2f} minutes.")
    final_start = time.time()
    accuracies, classification = _final_metrics(args, trainer, model, loaders, device, label_names, fast_cache)
    seconds["final_metrics"] = time.time() - final_start
    cache = fast_cache.report() if trainer == "fast" else {}  # the frozen blocks' speed and the cache's size
    fast_cache.close()  # its memory and its file go now, before the outputs are written
    if cache:
        print(f"Fast trainer: frozen blocks at {cache['frozen_gflops']:.0f} GFLOP/s; cache "
              f"{cache['memory_bytes'] / 2**20:.0f} MB in memory, {cache['disk_bytes'] / 2**20:.0f} MB on disk.")

    train_losses, val_losses, train_accs, val_accs, examples_seen = history
    metrics = {**accuracies, "train_losses": list(train_losses), "val_losses": list(val_losses),
               "train_accs": list(train_accs), "val_accs": list(val_accs),
               "examples_seen": int(examples_seen * world_size), "training_seconds": training_seconds,
               "classification_metrics": classification, "seconds": seconds, "fast_cache": cache}
    if controls is not None:  # the chapter's run keeps its metrics.json and outputs as they were
        metrics.update(training_controls=controls.summary(), learning_rates=list(controls.lrs))
        if controls.stopped_at is not None:  # the plots' epochs axis ends where training stopped
            metrics["epochs_run"] = metrics["examples_seen"] / (len(loaders[0]) * args.batch_size)
    settings = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    settings.update(device=str(device), test_mode=test_mode, trainer=trainer, data_source=splits["source"],
                    label_names=label_names, max_length=max_length, per_batch_padding=per_batch_padding,
                    config=dict(cfg))
    if is_main_process():  # under torchrun only rank 0 writes
        _write_run_outputs(args, model, cfg, base, metrics, settings, start)
    return metrics


def _data_and_model(args, test_mode):
    """(splits, tokenizer, model, cfg, base record): data first, so a bad --data fails before a 500 MB download."""
    rank0_first("start")  # torchrun: rank 0 downloads and writes the splits first, the others then read them
    splits = data_splits.prepare_spam_splits(args.data, args.data_dir, offline=test_mode,
                                             text_column=args.text_column, label_column=args.label_column,
                                             encoding=args.encoding, balance=args.balance,
                                             dedupe=args.dedupe, seed=args.seed)
    print(format_duplicate_line(duplicate_report(splits["train"], splits["validation"], splits["test"]),
                                splits["label_names"]))
    tokenizer = gpt2_tokenizer.get_gpt2_tokenizer(args.models_dir)
    model, cfg, base = build_model_with_base(args.model_size, args.weights, args.models_dir, test_mode=test_mode,
                                             weights_format=args.weights_format, seed=args.seed)
    rank0_first("end")
    return splits, tokenizer, model, cfg, base


def _data_loaders(args, splits, tokenizer, cfg):
    """((train, validation, test) loaders, per_batch_padding) for the padding switches."""
    if args.no_padding and distributed_environment()[1] > 1:
        raise ValueError("--no-padding trains on batches of one message, which cannot be shared among several "
                         "processes; run it without torchrun, or use --trainable-token-pos flexible (each batch "
                         "padded only to its longest message) under torchrun.")
    if args.no_padding and args.batch_size != 1:
        print(f"--no-padding: batch size 1 instead of {args.batch_size} (use --accumulation-steps for larger "
              "updates).")
        args.batch_size = 1  # metrics.json records the batch size that ran
    options = _loader_options(args, cfg)
    loaders = data_loaders.create_data_loaders(splits["train"], splits["validation"], splits["test"], tokenizer,
                                               batch_size=args.batch_size, seed=args.seed, **options)
    context = int(cfg["context_length"])
    if loaders[0].dataset.max_length > context:
        # The chapter asserts this; here the messages are cut to the model's context (a warning counts them).
        print(f"The longest training message ({loaders[0].dataset.max_length} tokens) is longer than the model's "
              f"context; truncating to {context} tokens (--context-length sets another length).")
        options["max_length"] = context
        loaders = data_loaders.create_data_loaders(splits["train"], splits["validation"], splits["test"],
                                                   tokenizer, batch_size=args.batch_size, seed=args.seed, **options)
    return loaders, options["per_batch_padding"]


def _train(args, trainer, model, loaders, device, fast_cache):
    """(the chosen loop's history, its TrainingControls or None); history is (train_losses, val_losses,
    train_accs, val_accs, examples_seen). With early stopping the model ends with its best weights."""
    train_loader, val_loader, _ = loaders
    torch.manual_seed(args.seed)
    if trainer == "fast":
        optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
        controls = controls_for(args, len(train_loader))
        return train_classifier_fast(model, train_loader, val_loader, optimizer, device, args.num_epochs,
                                     args.eval_freq, args.eval_iter, trainable_token_pos=args.trainable_token_pos,
                                     precision=args.precision, cache=fast_cache, controls=controls), controls
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)  # the chapter's
    # torchrun: DDP and this process's share of every global batch; a plain run gets both back unchanged.
    train_model, process_train_loader = distribute_training(model, train_loader, device)
    controls = controls_for(args, len(process_train_loader))
    return train_classifier_simple(train_model, process_train_loader, val_loader, optimizer, device,
                                   args.num_epochs, args.eval_freq, args.eval_iter,
                                   trainable_token_pos=args.trainable_token_pos,
                                   average_embeddings=args.average_embeddings, ignore_index=args.ignore_index,
                                   accumulation_steps=args.accumulation_steps, controls=controls), controls


def _final_metrics(args, trainer, model, loaders, device, label_names, fast_cache):
    """({split}_accuracy on every batch, precision/recall/F1 and confusion matrices of validation and test).

    The predictions of each split are computed once; after the fast trainer they come from its cache of the
    frozen blocks' activations (the chapter's way costs, on GPT-2 small, about as long as the fast training).
    """
    def predictions(loader):
        if trainer == "fast":
            return predict_labels_fast(loader, model, device, trainable_token_pos=args.trainable_token_pos,
                                       precision=args.precision, cache=fast_cache)
        return predict_labels(model, loader, device, trainable_token_pos=args.trainable_token_pos,
                              average_embeddings=args.average_embeddings)

    splits = ("train", "validation", "test")
    results = {split: classification_metrics(*predictions(loader), len(label_names))
               for split, loader in zip(splits, loaders)}
    accuracies = {"accuracy_intervals": accuracy_records(results)}  # counts and 95% intervals, for metrics.json
    for split, key, name in zip(splits, ("train_accuracy", "val_accuracy", "test_accuracy"),
                                ("Training", "Validation", "Test")):
        # an empty split has no accuracy: nan, as calc_accuracy_loader says
        accuracies[key] = results[split]["accuracy"] if results[split]["num_examples"] else float("nan")
        record = accuracies["accuracy_intervals"][split]
        print(f"{name} accuracy: {format_accuracy(record['correct'], record['total'])}")
    classification = {split: results[split] for split in ("validation", "test")}
    print(format_metrics_table(classification, label_names))
    return accuracies, classification


def _write_run_outputs(args, model, cfg, base, metrics, settings, start):
    """classifier.pt, the loss, accuracy and confusion-matrix plots (and the learning rate's, with the loop's
    controls), and metrics.json: all of them, or none."""
    def plot(values_a, values_b, label):
        # x positions as in the chapter: evaluations spread evenly over the epochs and the examples seen
        n, epochs_run = len(values_a), metrics.get("epochs_run", args.num_epochs)
        epochs, seen = torch.linspace(0, epochs_run, n), torch.linspace(0, metrics["examples_seen"], n)
        return lambda tmp: plot_values(epochs, seen, values_a, values_b, label=label).savefig(tmp, format="png")

    def plot_test_confusion_matrix(tmp):
        import matplotlib.pyplot as plt

        fig = plot_confusion_matrix(metrics["classification_metrics"]["test"]["confusion_matrix"],
                                    settings["label_names"], title="Test confusion matrix")
        try:
            fig.savefig(tmp, format="png")
        finally:
            plt.close(fig)  # the run keeps no open figures

    def save(tmp):
        extra = {"trainable_token_pos": args.trainable_token_pos, "lora_rank": args.lora_rank,
                 "lora_alpha": args.lora_alpha, "average_embeddings": args.average_embeddings,
                 "disable_causal_mask": args.disable_causal_mask}
        save_classifier(tmp, model, cfg, settings["label_names"], settings["max_length"], extra,
                        model_size=None if settings["test_mode"] else args.model_size,
                        trainable_layers=args.trainable_layers, padded=not args.no_padding, base=base,
                        full=args.full_checkpoint)

    def write_metrics(tmp):
        metrics["seconds"]["outputs"] = time.time() - outputs_start
        metrics["total_seconds"] = time.time() - start
        metrics["settings"] = settings
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(_json_safe(metrics), f, indent=2, allow_nan=False)

    def plot_lr(tmp):
        lrs = metrics["learning_rates"]
        plot_learning_rates(lrs, len(lrs) / metrics.get("epochs_run", args.num_epochs)).savefig(tmp, format="png")

    outputs_start = time.time()
    writers = {
        "classifier.pt": save,
        "loss.png": plot(metrics["train_losses"], metrics["val_losses"], "loss"),
        **({"lr.png": plot_lr} if "learning_rates" in metrics else {}),
        "accuracy.png": plot(metrics["train_accs"], metrics["val_accs"], "accuracy"),
        "confusion_matrix.png": plot_test_confusion_matrix,
        "metrics.json": write_metrics,  # last: its total_seconds counts the other outputs too
    }
    written = _write_outputs(args.output_dir, writers)
    print("Wrote " + ", ".join(written))

