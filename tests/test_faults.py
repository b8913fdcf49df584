"""Faults found by probing the package as a tester would, reproduced one by one.

Each test sets up the fault the way a user meets it (mostly ``python -m minimipt train needle
--preset smoke`` in a subprocess) and asserts the behaviour now: the run refuses, stops or repairs
with a one-line message naming the file or the key and what to do, and never reports success on
lost or corrupt results.

1. two runs into one ``--out``;  2. an unwritable ``--out``;  3. corrupt prepared arrays and
checkpoints;  4. bad config values and a diverging run;  5. edges of the model API (token dtypes,
empty batches, devices). The scan's edges are tested with the scan (tests/ops/test_scan.py,
tests/ops/test_checks.py).
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import minimipt
from minimipt import data as D
from minimipt.__main__ import main
from minimipt.data import prepared as P
from minimipt.train import make_config, train
from minimipt.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sidecar_path
from minimipt.train.rundir import LOCK, RunFolder, RunFolderBusy, RunFolderError

pytestmark = pytest.mark.usefixtures("data_home")

ROOT = Path(__file__).resolve().parent.parent
# three steps of the needle smoke preset on small splits: a complete run in a few seconds
FAST = {"max_steps": 3, "eval_every": 1, "ckpt_every": 1, "n_train": 64, "n_val": 16, "n_test": 16}
FAST_ARGS = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m minimipt ARGS`` in a fresh process (the environment of the test)."""
    return subprocess.run([sys.executable, "-m", "minimipt", *map(str, args)], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def fast_run(out: Path, **kw) -> dict:
    return train(make_config("needle", "smoke", **FAST), out, progress=False, **kw)


# --------------------------------------------------------------------------------------------
# 1. two runs into one --out


def test_1_a_folder_holding_another_runs_results_is_refused(tmp_path):
    """Before: a folder with results.json but no checkpoint was overwritten silently, exit 0."""
    out = tmp_path / "run"
    fast_run(out)
    (out / "checkpoint.pt").unlink()
    sidecar_path(out / "checkpoint.pt").unlink()
    before = (out / "results.json").read_bytes()

    r = cli("train", "needle", "--out", out, "--quiet", *FAST_ARGS)
    msg = one_line(r.stderr)
    assert r.returncode == 1 and "holds another run" in msg and "--resume" in msg and "--overwrite" in msg
    assert (out / "results.json").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fast_run(out, resume=True)
    assert (out / "results.json").read_bytes() == before
    after = fast_run(out, overwrite=True)
    assert after["complete"] and after["finished"] != json.loads(before)["finished"]


def test_1_a_run_in_progress_holds_the_folder(tmp_path):
    """Before: two runs into one --out both exited 0, the later overwriting the other's results."""
    out = tmp_path / "run"
    with RunFolder(out):  # this process is the run in progress
        record = json.loads((out / LOCK).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        r = cli("train", "needle", "--out", out, "--quiet", *FAST_ARGS)
        msg = one_line(r.stderr)
        assert r.returncode == 1 and "in use by" in msg and f"pid {os.getpid()}" in msg
        with pytest.raises(RunFolderBusy):  # a second claim in the same process is refused too
            RunFolder(out).claim()
    assert (out / LOCK).read_text() == ""  # released: no owner recorded
    assert not (out / "results.json").exists()


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_1_a_stale_lock_is_reported_and_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    (out / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then",
                                        "command": "a killed run"}))
    assert fast_run(out)["complete"]
    err = capsys.readouterr().err
    assert "stale lock" in err and f"pid {pid}" in err and "process is gone" in err
    # a record from another machine cannot be checked from here: refused, with the way out
    (out / LOCK).write_text(json.dumps({"pid": pid, "host": "elsewhere", "started": "then"}))
    with pytest.raises(RunFolderBusy, match=f"delete {out / LOCK}"):
        RunFolder(out, overwrite=True).claim()


def test_1_without_fcntl_the_record_alone_guards_the_folder(tmp_path, monkeypatch):
    from minimipt.train import rundir

    monkeypatch.setattr(rundir, "fcntl", None)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
        RunFolder(out).claim()
    (out / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with RunFolder(out) as folder:
        assert folder.took_over is not None


@pytest.mark.slow
def test_1_two_live_processes_and_a_kill(tmp_path):
    """A real second process is refused while the first trains; after SIGKILL the lock is stale and
    --resume takes it over and finishes the run."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "minimipt", "train", "needle", "--out", str(out), "--quiet",
           "--set", "epochs=40", "--set", "ckpt_every=2"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "checkpoint.pt").exists():
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        r = cli("train", "needle", "--out", out, "--quiet", "--resume", "--set", "epochs=40", "--set", "ckpt_every=2")
        assert r.returncode == 1 and f"pid {first.pid}" in one_line(r.stderr)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    r = cli("train", "needle", "--out", out, "--quiet", "--resume", "--set", "epochs=40", "--set", "ckpt_every=2",
            timeout=300)
    assert r.returncode == 0, r.stderr
    assert "stale lock" in r.stderr and f"pid {first.pid}" in r.stderr
    assert json.loads((out / "results.json").read_text())["complete"]


# --------------------------------------------------------------------------------------------
# 2. an unwritable --out fails before the data is loaded and before the first step


def _no_data_prepared(tmp_path) -> bool:
    return not (tmp_path / "data" / "prepared").exists()


def test_2_out_is_a_file(tmp_path):
    """Before: the run trained to its first checkpoint (or to the end) and then failed."""
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    r = cli("train", "ag_news", "--out", out, "--quiet")
    assert r.returncode == 1 and "is a file" in one_line(r.stderr) and str(out) in r.stderr
    assert _no_data_prepared(tmp_path)
    r = cli("train", "ag_news", "--out", out, "--debug")  # the traceback only when asked for
    assert r.returncode == 1 and "Traceback" in r.stderr and "RunFolderError" in r.stderr


@pytest.mark.parametrize("make", ["under-a-file", "too-long"])
def test_2_out_cannot_be_created(tmp_path, make):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" / "run" if make == "under-a-file" else tmp_path / ("x" * 300)
    with pytest.raises(RunFolderError, match="cannot create the run folder"):
        train(make_config("ag_news", "smoke"), out, progress=False)
    assert _no_data_prepared(tmp_path)


def _read_only_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root writes through permission bits: a kernel filesystem that refuses new files is needed
    for cand in (Path("/sys/kernel"), Path("/proc/sys")):
        try:
            (cand / "minimipt-probe").open("w").close()
        except OSError:
            if cand.is_dir():
                return cand
    pytest.skip("no read-only folder available to this user")


def test_2_read_only_out(tmp_path):
    out = _read_only_folder(tmp_path)
    with pytest.raises(RunFolderError, match="cannot write in the run folder"):
        train(make_config("ag_news", "smoke"), out, progress=False)
    assert _no_data_prepared(tmp_path)


# --------------------------------------------------------------------------------------------
# 3. corruption is noticed


def _flip_label(path: Path, row: int = 0) -> None:
    """Change one int64 label inside a .npy file in place (same size, like a flipped bit)."""
    arr = np.load(path)
    offset = path.stat().st_size - arr.nbytes + row * arr.itemsize
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<q", (int(arr[row]) + 1) % 4))


def test_3_a_same_size_flip_in_prepared_labels_is_caught(tmp_path):
    """Before: checked by size only, so training ran (exit 0) on a corrupted label."""
    folder = D.prepare("ag_news-sample", progress=False)
    labels = folder / "sample-train.labels.npy"
    good = np.load(labels).copy()
    size = labels.stat().st_size
    _flip_label(labels)
    assert labels.stat().st_size == size and np.load(labels)[0] != good[0]
    with pytest.raises(D.ChecksumError, match=r"sample-train\.labels\.npy.*data prepare ag_news-sample"):
        D.load_prepared(folder.name, "sample-train")
    # prepare (which training calls first) sees the damage, says so, and writes the arrays again
    with pytest.warns(UserWarning, match=r"sample-train\.labels\.npy differ"):
        D.prepare("ag_news-sample", progress=False)
    np.testing.assert_array_equal(D.load_prepared(folder.name, "sample-train").labels, good)


def test_3_verification_is_remembered_by_size_and_mtime(tmp_path, monkeypatch):
    folder = D.prepare("ag_news-sample", progress=False)
    hashed = []
    real = P.sha256_file
    monkeypatch.setattr(P, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    D.load_prepared(folder.name, "sample-train")
    D.load_prepared(folder.name, "sample-train")
    assert hashed == []  # prepare recorded what it wrote: no load re-reads the arrays
    tokens = folder / "sample-train.tokens.npy"
    os.utime(tokens, ns=(tokens.stat().st_atime_ns, tokens.stat().st_mtime_ns + 10**9))  # "written again"
    D.load_prepared(folder.name, "sample-train")
    assert hashed == ["sample-train.tokens.npy"]
    D.load_prepared(folder.name, "sample-train")
    assert hashed == ["sample-train.tokens.npy"]


def _flip_tensor_byte(ckpt: Path) -> None:
    """Flip one bit in the middle of the largest tensor stored in a torch.save zip archive."""
    with zipfile.ZipFile(ckpt) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    with open(ckpt, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))  # the local header's own lengths
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 0x10]))


def test_3_a_flipped_weight_in_a_checkpoint_is_refused_on_resume(tmp_path):
    """Before: the run resumed silently from a checkpoint with a flipped weight."""
    out = tmp_path / "run"
    fast_run(out, stop_after_steps=1)
    _flip_tensor_byte(out / "checkpoint.pt")
    r = cli("train", "needle", "--out", out, "--quiet", "--resume", *FAST_ARGS)
    msg = one_line(r.stderr)
    assert r.returncode == 1 and "checkpoint.pt does not match the sha256" in msg and "--overwrite" in msg
    assert "weights_only" not in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "code"])
def test_3_unreadable_checkpoints_name_the_file_and_never_suggest_weights_only_false(tmp_path, damage):
    """Before: a bare EOFError, or torch's advice to load with weights_only=False."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    planted = tmp_path / "payload-ran"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:700])
    elif damage == "garbage":  # seeded: random bytes reach many code paths inside torch.load
        path.write_bytes(random.Random(2000).randbytes(2000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"x": _Payload(str(planted))}, path)
    with pytest.raises(CheckpointError, match="does not match the sha256") as recorded:
        load_checkpoint(path)
    sidecar_path(path).unlink()  # without a record (an older run): the reader's own diagnosis
    with pytest.warns(UserWarning, match="loaded unverified"), pytest.raises(CheckpointError) as unrecorded:
        load_checkpoint(path)
    for err in (recorded, unrecorded):
        assert str(path) in str(err.value) and "weights_only" not in str(err.value)
        assert "--overwrite" in str(err.value)
    assert {"truncated": "not a file written by torch.save", "garbage": "not a file written by torch.save",
            "empty": "empty", "code": "could run code"}[damage] in str(unrecorded.value)
    assert not planted.exists()


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_3_a_kill_between_checkpoint_and_record_leaves_a_loadable_pair(tmp_path, monkeypatch):
    """The record is written around the rename, so a kill at either point leaves a listed hash."""
    from minimipt import fileio
    from minimipt.train import checkpoint as C

    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)
    real_replace = os.replace

    def killed_before_rename(src, dst):
        if Path(dst) == path:  # the sidecar's own rename goes through
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert load_checkpoint(path)["step"] == 1 and len(C.recorded_hashes(path)) == 2

    real_sidecar, calls = C._write_sidecar, []

    def killed_after_rename(p, hashes):
        calls.append(hashes)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_sidecar(p, hashes)

    monkeypatch.setattr(C, "_write_sidecar", killed_after_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 3}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 3


# --------------------------------------------------------------------------------------------
# 4. bad values are refused before anything runs; a diverging run is marked failed


BAD = [  # (option, value, text the one-line message must contain)
    ("--set", "epochs=0", "TrainConfig.epochs"), ("--set", "epochs=-1", "got -1"),
    ("--set", "max_steps=0", "TrainConfig.max_steps"), ("--set", "amp=maybe", "TrainConfig.amp"),
    ("--set", "grad_clip=NaN", "TrainConfig.grad_clip"), ("--set", "eval_every=0", "TrainConfig.eval_every"),
    ("--set", "extra.n_needle=2", "['n_needle']"), ("--set", 'extra={"n_needle": 2}', "valid keys"),
    ("--set", "d_model=abc", "TrainConfig.d_model='abc'"), ("--set", "lr=fast", "TrainConfig.lr"),
    ("--set", "widht=3", "unknown config keys ['widht']"), ("--device", "bogus", "'bogus'"),
    ("--cache-slots", "-2", "--cache-slots"), ("--max-minutes", "0", "--max-minutes"),
]


@pytest.mark.parametrize("option,value,text", BAD)
def test_4_bad_values_are_one_line_usage_errors(tmp_path, capsys, option, value, text):
    """Before: wrong runs marked complete (epochs <= 0, max_steps=0, misspelled extra keys, amp=maybe,
    grad_clip=NaN), ZeroDivisionError (eval_every=0), AttributeError (--device bogus)."""
    with pytest.raises(SystemExit) as exit_:
        sys.exit(main(["train", "needle", "--out", str(tmp_path / "run"), option, value]))
    assert exit_.value.code == 2
    assert text in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_4_usage_errors_in_a_real_process(tmp_path):
    r = cli("train", "needle", "--out", tmp_path / "run", "--device", "bogus")
    assert r.returncode == 2 and one_line(r.stderr).startswith("python -m minimipt train: error: TrainConfig.device")
    r = cli("train", "needle", "--out", tmp_path / "run", "--model", "foo", "--debug")
    assert r.returncode == 2 and "usage:" in r.stderr  # --debug shows the whole usage


def test_4_a_diverging_run_stops_marked_failed(tmp_path):
    """Before: grad_clip=NaN (and any divergence after the last loss check) trained a NaN model and
    marked it complete."""
    out = tmp_path / "run"
    r = cli("train", "needle", "--out", out, "--quiet", *FAST_ARGS, "--set", "lr=1e30")
    msg = one_line(r.stderr)
    assert r.returncode == 1 and "loss is nan" in msg and "marked failed" in msg
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is False and "nan" in res["failed"] and res["metrics"] == {}
    if (out / "checkpoint.pt").exists():  # only finite models are ever checkpointed
        assert all(torch.isfinite(v).all() for v in load_checkpoint(out / "checkpoint.pt")["model"].values())


# --------------------------------------------------------------------------------------------
# 5. edges of the model API


def _models():
    return [minimipt.MIPTLM(16, 8, 1), minimipt.MIPTClassifier(16, 3, 8, 1, cache_slots=2),
            minimipt.TransformerLM(16, 8, 1, n_heads=2), minimipt.TransformerClassifier(16, 3, 8, 1, n_heads=2)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.float32, torch.bool])
def test_5_token_ids_of_other_dtypes_are_refused_by_name(dtype):
    """Before: uint8 token ids crashed inside the embedding."""
    tokens = torch.ones(2, 5, dtype=dtype)
    for model in _models():
        with pytest.raises(ValueError, match=f"got dtype {dtype}"):
            model(tokens)


def test_5_int32_token_ids_equal_int64():
    tokens = torch.randint(1, 16, (2, 5))
    for model in _models():
        model.eval()
        torch.testing.assert_close(model(tokens.int()), model(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 5), (2, 0), (0, 0)])
def test_5_empty_batches_are_value_errors(shape):
    for model in _models():
        with pytest.raises(ValueError, match="empty"):
            model(torch.zeros(shape, dtype=torch.long))


def test_5_devices_are_checked_by_name():
    for bad in ("bogus", "meta", 3):
        with pytest.raises(ValueError, match="device"):
            minimipt.get_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            minimipt.get_device("cuda:1")
