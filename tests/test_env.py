import pytest
import torch

from minimipt import env


def test_smoke_switch(monkeypatch):
    monkeypatch.setenv(env.SMOKE_VAR, "1")
    assert env.smoke_mode()
    monkeypatch.setenv(env.SMOKE_VAR, "0")
    assert not env.smoke_mode()
    monkeypatch.setenv(env.SMOKE_VAR, "maybe")
    with pytest.raises(ValueError, match="MINIMIPT_SMOKE"):
        env.smoke_mode()


def test_device_falls_back_to_cpu_and_rejects_missing_cuda(monkeypatch):
    monkeypatch.delenv(env.DEVICE_VAR, raising=False)
    assert env.get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert env.get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            env.get_device("cuda")


def test_setup_checks_version_and_seeds():
    with pytest.raises(RuntimeError, match="expects minimipt"):
        env.setup(expect_version="0.0.0-not-this", verbose=False)
    cfg = env.setup(seed=3, plots=False, verbose=False)
    a = torch.rand(3)
    env.setup(seed=3, plots=False, verbose=False)
    assert torch.equal(a, torch.rand(3)) and cfg.seed == 3


def test_environment_report_has_ok_core():
    report = env.environment_report()
    assert report["torch"].startswith("ok") and report["complex autograd"] == "ok"
