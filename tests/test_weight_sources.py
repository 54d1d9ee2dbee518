"""beyond.weight_sources: Hugging Face's model.safetensors and the book's .pth, downloaded from 127.0.0.1, no TensorFlow."""

import json

import numpy as np
import pytest

from beyond import weight_sources
from beyond.weight_sources import download_and_load_gpt2_safetensors, load_gpt2_params_from_safetensors
from gpt_download import CheckpointError, DownloadError

from tiny import TINY_SETTINGS, assert_same_params, hf_tensors, tiny_params


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_safetensors_loads_to_the_same_params(tmp_path, prefix):
    from safetensors.numpy import save_file

    want = tiny_params()
    path = tmp_path / "model.safetensors"
    save_file(hf_tensors(want, prefix), str(path))
    settings, params = load_gpt2_params_from_safetensors(path, n_head=2)
    assert settings == TINY_SETTINGS
    assert_same_params(params, want)


def test_safetensors_n_head_from_config_json_or_clear_error(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(hf_tensors(tiny_params()), str(path))
    with pytest.raises(CheckpointError, match="pass n_head"):
        load_gpt2_params_from_safetensors(path)
    (tmp_path / "config.json").write_text(json.dumps({"n_head": 2}))
    assert load_gpt2_params_from_safetensors(path)[0]["n_head"] == 2


def test_safetensors_bad_files_give_one_clear_error(tmp_path):
    from safetensors.numpy import save_file

    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gpt2_params_from_safetensors(missing)
    path = tmp_path / "model.safetensors"
    save_file(hf_tensors(tiny_params()), str(path))
    path.write_bytes(path.read_bytes()[:200])  # truncated download from an older run
    with pytest.raises(CheckpointError, match="delete it and download it again"):
        load_gpt2_params_from_safetensors(path, n_head=2)
    tensors = hf_tensors(tiny_params())
    del tensors["h.1.mlp.c_fc.weight"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"lacks the tensor h.1.mlp.c_fc.weight"):
        load_gpt2_params_from_safetensors(path, n_head=2)
    save_file({"embed.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="not a GPT-2 safetensors file"):
        load_gpt2_params_from_safetensors(path, n_head=2)


def test_download_and_load_gpt2_safetensors(http_server, tmp_path):
    from safetensors.numpy import save_file

    want = tiny_params()
    src = tmp_path / "src.safetensors"
    save_file(hf_tensors(want, "transformer."), str(src))
    (tmp_path / "models" / "124M").mkdir(parents=True)
    (tmp_path / "models" / "124M" / "config.json").write_text(json.dumps({"n_head": 2}))
    url = http_server.serve("/gpt2/model.safetensors", src.read_bytes())
    settings, params = download_and_load_gpt2_safetensors("124M", tmp_path / "models", url=url)
    assert settings == TINY_SETTINGS
    assert_same_params(params, want)
    assert (tmp_path / "models" / "124M" / "model.safetensors").read_bytes() == src.read_bytes()


def test_hf_url_default_and_the_one_model_size_parser(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(weight_sources, "download_file", lambda url, dest, *a, **k: seen.append(url) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        download_and_load_gpt2_safetensors("gpt2-medium (355M)", tmp_path)  # the chapter's name, as gpt_model reads it
    assert seen == ["https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors"]
    for call in (download_and_load_gpt2_safetensors, weight_sources.download_and_load_gpt2_pytorch):
        with pytest.raises(ValueError, match=r"unknown model size '125M'"):
            call("125M", tmp_path)
    assert len(seen) == 1 and list(tmp_path.iterdir()) == []


# --- the book's PyTorch state dicts (rasbt/gpt2-from-scratch-pytorch) ---

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pytorch_weights_download_and_load(http_server, tmp_path, suffix, monkeypatch):
    import io

    import torch

    import gpt_model
    from beyond import model_setup

    torch.manual_seed(0)
    source = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    state = source.state_dict()
    if suffix == ".pth":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        body = buffer.getvalue()
    else:
        from safetensors.torch import save

        body = save({k: v.contiguous() for k, v in state.items()})
    name = weight_sources.PYTORCH_FILES["124M"] + suffix
    http_server.serve(f"/{name}", body, drop_after=len(body) // 2, times=1)  # drops once: the download resumes
    monkeypatch.setattr(weight_sources, "PYTORCH_WEIGHTS_URL", http_server.base_url + "/{file}")
    with pytest.raises(DownloadError, match="resume"):
        weight_sources.download_and_load_gpt2_pytorch("124M", tmp_path, suffix=suffix)
    assert not (tmp_path / "124M" / name).exists()  # nothing half-written under the real name
    loaded = weight_sources.download_and_load_gpt2_pytorch("124M", tmp_path, suffix=suffix)
    assert http_server.requests_for(f"/{name}")[-1]["Range"] == f"bytes={len(body) // 2}-"
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert (tmp_path / "124M" / name).is_file()

    # build_model --weights-format pytorch: the same file, no TensorFlow (GPT-2 small's config made tiny here)
    monkeypatch.setattr(gpt_model, "get_model_config", lambda size: dict(gpt_model.TINY_CONFIG))
    monkeypatch.delenv("TUTORIAL_TEST_MODE", raising=False)
    model, _, base = model_setup.build_model_with_base("124M", "pretrained", tmp_path, weights_format="pytorch")
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert base["weights_format"] == "pytorch" and name in base["files"]


def test_pytorch_weights_that_are_not_a_state_dict_are_one_line(tmp_path):
    bad = tmp_path / "gpt2-small-124M.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError) as error:
        weight_sources.load_gpt2_state_dict(bad)
    assert "\n" not in str(error.value) and str(bad) in str(error.value)
