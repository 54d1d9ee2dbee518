"""Test mode, the device, and building GPT-2 with pretrained, random or test-mode weights."""


import pytest
import torch

import gpt_model
from beyond import model_setup


def test_is_test_mode_reads_flag_and_environment(monkeypatch):
    monkeypatch.delenv("TUTORIAL_TEST_MODE", raising=False)
    assert model_setup.is_test_mode() is False
    assert model_setup.is_test_mode(True) is True
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "1")
    assert model_setup.is_test_mode() is True
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "0")
    assert model_setup.is_test_mode() is False


def test_resolve_device():
    assert model_setup.resolve_device("cpu") == torch.device("cpu")
    assert model_setup.resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            model_setup.resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        model_setup.resolve_device("tpu")


def test_build_model_test_mode_is_tiny_and_offline(monkeypatch):
    import gpt_download

    def no_download(*args, **kwargs):
        raise AssertionError("test mode must not download")

    monkeypatch.setattr(gpt_download, "download_and_load_gpt2", no_download)
    model, cfg = model_setup.build_model("gpt2-small (124M)", "pretrained", test_mode=True)
    assert cfg == gpt_model.TINY_CONFIG
    assert model.tok_emb.weight.shape == (50257, gpt_model.TINY_CONFIG["emb_dim"])


def test_build_model_pretrained_asks_for_the_download_name(monkeypatch, tmp_path):
    import gpt_download
    from beyond import weight_sources

    calls = []

    def failing_download(model_size, models_dir):
        calls.append((model_size, models_dir))
        raise gpt_download.DownloadError("no network")

    monkeypatch.delenv("TUTORIAL_TEST_MODE", raising=False)
    monkeypatch.setattr(gpt_download, "download_and_load_gpt2", failing_download)
    monkeypatch.setattr(weight_sources, "tensorflow_import_error", lambda: None)  # as if TensorFlow imported
    with pytest.raises(gpt_download.DownloadError):
        model_setup.build_model("gpt2-medium (355M)", "pretrained", models_dir=str(tmp_path))
    assert calls == [("355M", str(tmp_path))]
    with pytest.raises(ValueError, match="weights"):
        model_setup.build_model(weights="imagenet")


def test_weights_format_picks_the_loader_and_falls_back_without_tensorflow(monkeypatch, tmp_path, capsys):
    import gpt_download
    from beyond import weight_sources

    calls = []

    def loader(name):
        def load(model_size, models_dir):
            calls.append((name, model_size, models_dir))
            raise gpt_download.DownloadError("no network")
        return load

    monkeypatch.delenv("TUTORIAL_TEST_MODE", raising=False)
    monkeypatch.setattr(gpt_download, "download_and_load_gpt2", loader("openai"))
    monkeypatch.setattr(weight_sources, "download_and_load_gpt2_safetensors", loader("safetensors"))
    monkeypatch.setattr(weight_sources, "tensorflow_import_error", lambda: None)
    for weights_format in ("safetensors", "openai"):
        with pytest.raises(gpt_download.DownloadError):
            model_setup.build_model("124M", models_dir=str(tmp_path), weights_format=weights_format)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(weight_sources, "tensorflow_import_error",
                        lambda: "ModuleNotFoundError: No module named 'tensorflow'")
    with pytest.raises(gpt_download.DownloadError):
        model_setup.build_model("124M", models_dir=str(tmp_path))  # openai by default
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "TensorFlow does not import (ModuleNotFoundError" in out
    assert "safetensors" in out
    assert calls == [("safetensors", "124M", str(tmp_path)), ("openai", "124M", str(tmp_path)),
                     ("safetensors", "124M", str(tmp_path))]
    with pytest.raises(ValueError, match="weights-format"):
        model_setup.build_model(weights_format="tensorflow2")


def test_build_model_with_a_seed_gives_the_same_tiny_model():
    first, _ = model_setup.build_model(test_mode=True, seed=7)
    torch.rand(5)  # whatever ran in between does not matter
    again, _ = model_setup.build_model(test_mode=True, seed=7)
    other, _ = model_setup.build_model(test_mode=True, seed=8)
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert not torch.equal(first.tok_emb.weight, other.tok_emb.weight)
    torch.manual_seed(7)  # seed=None (the default): the caller's seed decides, as the CLI and notebooks do
    seeded_by_caller, _ = model_setup.build_model(test_mode=True)
    assert torch.equal(first.trf_blocks[0].att.W_query.weight, seeded_by_caller.trf_blocks[0].att.W_query.weight)


def test_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    from beyond.model_setup import cpu_has_bf16_units

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu avx512f avx512bw\n")
    assert not cpu_has_bf16_units(cpuinfo)
    cpuinfo.write_text("flags\t: fpu avx512f amx_bf16 amx_tile\n")
    assert cpu_has_bf16_units(cpuinfo)
    assert not cpu_has_bf16_units(tmp_path / "missing")
