"""gpt_download: robust downloads against a local 127.0.0.1 server and OpenAI's TF checkpoint."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

import gpt_download
from beyond import gpt2_tokenizer
from gpt_download import (
    GPT2_FILES,
    CheckpointError,
    DownloadError,
    download_and_load_gpt2,
    download_file,
    load_gpt2_params_from_tf_ckpt,
)

from tiny import TINY_SETTINGS as CFG
from tiny import assert_same_params, tiny_params

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


# --------------------------------------------------------------------------------------------- model sizes

@pytest.mark.parametrize("bad", ["125M", "gpt2-small (124M)", "small"])
def test_download_and_load_gpt2_takes_the_books_size_names_only(bad, tmp_path, refused_url):
    with pytest.raises(ValueError, match=r"choose one of 124M, 355M, 774M, 1558M.*model_size_to_download_name"):
        download_and_load_gpt2(bad, tmp_path, base_url=refused_url, backup_base_url=None)
    assert leftovers(tmp_path) == []  # nothing fetched, nothing made


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
    bpe = Path(gpt2_tokenizer._bpe_dirs(None)[-1])
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
    copy = tmp_path / "124M"
    shutil.copytree(folder, copy)
    data = copy / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="delete the folder") as info:
        load_gpt2_params_from_tf_ckpt(str(copy / "model.ckpt"), CFG)
    assert str(copy / "model.ckpt") in str(info.value)
    (copy / "hparams.json").write_text('{"n_vocab": 10,')
    with pytest.raises(CheckpointError, match=r"hparams.json is not readable JSON \(JSONDecodeError\)"):
        gpt_download.load_gpt2_settings(copy / "hparams.json")
    (copy / "hparams.json").write_text('{"n_vocab": 10}')
    with pytest.raises(CheckpointError, match="hparams.json lacks n_ctx, n_embd, n_head, n_layer"):
        gpt_download.load_gpt2_settings(copy / "hparams.json")
    (copy / "hparams.json").unlink()
    with pytest.raises(CheckpointError, match=r"hparams.json is not readable JSON \(FileNotFoundError\)"):
        gpt_download.load_gpt2_settings(copy / "hparams.json")


# --------------------------------------------------------------------------------------------- errors in one line

def test_first_line_of_an_error_message():
    from gpt_download import first_line

    assert first_line(RuntimeError("size mismatch\n  details follow")) == "size mismatch"
    assert first_line(RuntimeError("  \n"), "RuntimeError") == "RuntimeError"  # an empty message, not an IndexError
    assert first_line(EOFError()) == ""
