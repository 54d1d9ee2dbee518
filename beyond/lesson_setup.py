"""One call per notebook rebuilds what the earlier notebooks taught, so that a notebook's cells are its lesson.

`setup = rebuild("06")` returns what notebooks 1 to 5 built (data, tokenizer, loaders, the pretrained GPT-2) as
attributes of one namespace. Test mode is read here and nowhere else: with TUTORIAL_TEST_MODE=1 a tiny random GPT
trains for one epoch, offline. TUTORIAL_RANDOM_WEIGHTS=1 keeps GPT-2 small's shape with random weights, offline:
benchmarks/notebook_times.py times the notebooks that way (their cost does not depend on the weights' values).
When a download fails, one line says how to fetch the file by hand and the notebook carries on offline.
"""

import copy
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

import gpt_download
import spam_dataset
from beyond import data_splits, gpt2_tokenizer, synthetic_data
from beyond.bonus_training import select_token_logits  # noqa: F401 (08 reads select_token_logits here)
from beyond.checkpoints import load_classifier
from beyond.data_loaders import create_data_loaders
from beyond.experiments import replace_head_and_freeze
from beyond.fast_trainer import make_optimizer, train_classifier_fast
from beyond.model_setup import build_model_with_base, is_test_mode, resolve_device

RANDOM_WEIGHTS_ENV = "TUTORIAL_RANDOM_WEIGHTS"
DOWNLOAD_ERRORS = (gpt_download.DownloadError, gpt_download.CheckpointError, spam_dataset.DataError, ImportError,
                   OSError)


def settings(model_size="gpt2-small (124M)", epochs=5):
    """The run's settings: test mode, random weights, device, folders, and the epochs (1 in test mode)."""
    test_mode = is_test_mode()
    random_weights = os.environ.get(RANDOM_WEIGHTS_ENV, "").strip() == "1"
    if test_mode:
        torch.set_num_threads(1)  # the tiny model gains nothing from threads; a busy machine loses a lot
    mode = "test" if test_mode else "random_weights" if random_weights else None
    setup = SimpleNamespace(
        test_mode=test_mode, random_weights=random_weights, offline=test_mode or random_weights,
        model_size=model_size, device=resolve_device("auto"), epochs=1 if test_mode else epochs,
        lr=1e-3 if test_mode else 5e-5,  # the tiny test model learns visibly only with a larger step
        data_dir=Path("../data/test_mode") if test_mode else Path("../data"),
        models_dir=Path("../gpt2"),
        output_dir=Path("../outputs/notebooks") / mode if mode else Path("../outputs/notebooks"),
    )
    setup.classifier_path = setup.output_dir / "classifier.pt"
    model = ("a tiny random GPT (test mode)" if test_mode else
             f"{model_size} with RANDOM weights ({RANDOM_WEIGHTS_ENV}=1)" if random_weights else model_size)
    print(f"model: {model} | device: {setup.device} | epochs: {setup.epochs}")
    return setup


def rebuild(upto, model_size="gpt2-small (124M)", epochs=5, batch_size=8):
    """What the notebooks before notebook `upto` built, as one namespace (see the module docstring)."""
    stage = int(upto)
    setup = settings(model_size, epochs)
    setup.batch_size = batch_size
    setup.data_file_path = sms_data_file(setup)
    if stage <= 2:
        setup.df = pd.read_csv(setup.data_file_path, sep="\t", header=None, names=["Label", "Text"])  # notebook 1
        return setup
    setup.splits = data_splits.prepare_spam_splits(setup.data_file_path, setup.data_dir, verbose=False)
    setup.label_names = setup.splits["label_names"]
    setup.train_df, setup.val_df, setup.test_df = (pd.read_csv(setup.splits[name])
                                                   for name in ("train", "validation", "test"))
    setup.tokenizer = gpt2_tokenizer.get_gpt2_tokenizer()
    if stage == 4:
        setup.gpt2_settings, setup.params = gpt2_params(setup)
    if stage <= 4:
        return setup
    setup.train_loader, setup.val_loader, setup.test_loader = data_loaders(setup)
    setup.max_length = setup.train_loader.dataset.max_length
    if stage in (7, 9, 10):
        setup.model = saved_or_quick_classifier(setup)
    else:
        setup.pretrained_model, setup.config, setup.weights, setup.base = pretrained_gpt2(setup)
    return setup


def data_loaders(setup, max_length=None):
    """Notebook 3's three DataLoaders (seed 123), padded to max_length or to the longest training message."""
    return create_data_loaders(setup.splits["train"], setup.splits["validation"], setup.splits["test"],
                               setup.tokenizer, batch_size=setup.batch_size, max_length=max_length)


def sms_data_file(setup):
    """The chapter's SMSSpamCollection.tsv: downloaded, or offline from $SMS_SPAM_ZIP or an earlier download.

    With no real data at all, a TSV of the synthetic sample in the same format stands in (said loudly).
    """
    zip_path = setup.data_dir / "sms_spam_collection.zip"
    extracted_path = setup.data_dir / "sms_spam_collection"
    local = data_splits.find_local_sms_zip(setup.data_dir) if setup.offline else zip_path
    if local is None:
        return synthetic_data_file(setup)
    if local.suffix == ".tsv":
        return local
    if local.resolve() != zip_path.resolve():  # work on a copy: the extraction below may replace a bad zip
        setup.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, zip_path)
    try:
        return spam_dataset.download_and_unzip_spam_data(spam_dataset.SMS_URL, zip_path, extracted_path,
                                                         extracted_path / "SMSSpamCollection.tsv")
    except DOWNLOAD_ERRORS as err:
        print(f"Could not download the SMS Spam Collection ({type(err).__name__}): save {spam_dataset.SMS_URL} as "
              f"{zip_path.resolve()} and re-run; meanwhile the notebook continues with a synthetic sample.")
        return synthetic_data_file(setup)


def synthetic_data_file(setup):
    """The synthetic sample written as the chapter's TSV (label, tab, message), so every cell reads it alike."""
    print(synthetic_data.SYNTHETIC_NOTE)
    path = setup.data_dir / "synthetic" / "SMSSpamCollection.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_data.make_synthetic_spam_data().to_csv(path, sep="\t", header=False, index=False)
    return path


def gpt2_params(setup):
    """(settings, params) of OpenAI's GPT-2 as download_and_load_gpt2 returns them; (None, None) offline."""
    if setup.offline:
        print("offline: no download; the model keeps random weights, so its text below is gibberish.")
        return None, None
    size = setup.model_size.split(" ")[-1].strip("()")
    try:
        return gpt_download.download_and_load_gpt2(model_size=size, models_dir=setup.models_dir)
    except DOWNLOAD_ERRORS as err:
        print(f"Could not load GPT-2 {size} ({gpt_download.first_line(err)}); the model keeps RANDOM weights "
              "(see notebook 4 for fetching the files by hand).")
        return None, None


def pretrained_gpt2(setup):
    """(model, config, description, base): notebook 4's GPT-2 (random weights offline or when loading fails), in eval
    mode; base is the record save_classifier(base=) needs to store only what training changed."""
    weights = "pretrained"
    if setup.random_weights and not setup.test_mode:
        weights = "random"
    try:
        model, config, base = build_model_with_base(setup.model_size, weights, setup.models_dir, setup.test_mode,
                                                    seed=123)
        described = ("tiny random GPT (test mode)" if setup.test_mode else
                     f"RANDOM {setup.model_size}" if weights == "random" else f"OpenAI's {setup.model_size}")
    except DOWNLOAD_ERRORS as err:
        print(f"Could not load the pretrained GPT-2 ({gpt_download.first_line(err)}); carrying on with RANDOM "
              "weights, so the model learns little (notebook 4 shows how to fetch the files).")
        model, config, base = build_model_with_base(setup.model_size, "random", seed=123)
        described = f"RANDOM {setup.model_size} (the download failed)"
    model.to(setup.device).eval()
    return model, config, described, base


def classification_model(pretrained_model, device, trainable_layers="last_block"):
    """Notebook 5's three steps on a copy of pretrained_model: freeze, a new 2-class head (seed 123), unfreeze the top."""
    model = copy.deepcopy(pretrained_model)
    torch.manual_seed(123)
    replace_head_and_freeze(model, num_classes=2, trainable_layers=trainable_layers)
    return model.to(device)


def saved_or_quick_classifier(setup):
    """Notebook 6's saved classifier, or (when that file is missing) one trained here with the fast trainer."""
    if setup.classifier_path.exists():
        model, info = load_classifier(setup.classifier_path, device=setup.device)
        setup.config, setup.max_length = info["config"], info["max_length"]
        print(f"classifier: notebook 6's {setup.classifier_path}")
        return model.eval()
    epochs = 3 if setup.test_mode else 1
    print(f"No classifier at {setup.classifier_path.resolve()} (notebook 6 saves one): training a quick one, "
          f"{epochs} epoch(s) with the fast trainer.")
    pretrained, setup.config, _, _ = pretrained_gpt2(setup)
    model = classification_model(pretrained, setup.device)
    train_classifier_fast(model, setup.train_loader, setup.val_loader, make_optimizer(model, lr=setup.lr),
                          setup.device, num_epochs=epochs, eval_freq=50, eval_iter=5)
    return model.eval()


def notebook_6_test_accuracy(setup, epochs):
    """The test accuracy notebook 6 saved with its classifier, when it trained with the chapter's settings on this
    setup's data, model and weights for `epochs` epochs; None otherwise (notebook 8 then trains the run itself)."""
    if not setup.classifier_path.exists():
        return None
    info = torch.load(setup.classifier_path, map_location="cpu", weights_only=True)
    extra = info.get("extra", {})
    same = (info.get("config") == dict(setup.config) and info.get("max_length") == setup.max_length
            and info.get("trainable_layers") == "last_block" and not info.get("switches", {}).get("lora")
            and info.get("padded", True) and extra.get("weights") == setup.weights and extra.get("epochs") == epochs)
    return extra.get("test_accuracy") if same else None
