"""FAST mode, device choice, seeding and thread policy."""

import importlib

import pytest
import torch

import course_lib
from course_lib import _runtime


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, False), ({"CI": "true"}, True), ({"COURSE_FAST": "1"}, True), ({"COURSE_FAST": "0", "CI": "true"}, False),
     ({"COURSE_FAST": "yes"}, True), ({"CI": ""}, False)],
)
def test_fast_mode_reads_the_environment(monkeypatch, env, expected):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("COURSE_FAST", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _runtime.fast_mode() is expected


def test_fast_flag_is_exported_and_set_at_import(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert importlib.reload(_runtime).FAST is True
    monkeypatch.setenv("COURSE_FAST", "0")
    assert importlib.reload(_runtime).FAST is False
    assert isinstance(course_lib.FAST, bool)


def test_device_falls_back_to_cpu_and_honours_a_forced_choice(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert course_lib.device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert course_lib.device().type == "cuda"
    assert course_lib.device("cpu") == torch.device("cpu")


def test_device_refuses_cuda_when_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: asked for 'cuda'"):
        course_lib.device("cuda")


def test_seed_makes_draws_repeatable():
    g = course_lib.seed(123)
    a = (torch.randn(3), torch.randn(3, generator=g))
    g = course_lib.seed(123)
    b = (torch.randn(3), torch.randn(3, generator=g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], torch.randn(3))


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        course_lib.seed(bad)


def test_thread_policy_one_for_mlps_all_cores_for_conv_nets(monkeypatch):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    assert course_lib.recommended_threads(mlp) == 1
    assert course_lib.recommended_threads(conv) == (__import__("os").cpu_count() or 1)
    monkeypatch.setenv("COURSE_THREADS", "3")
    assert course_lib.recommended_threads(mlp) == 3


def test_threads_for_restores_the_previous_setting(monkeypatch):
    monkeypatch.setenv("COURSE_THREADS", "2")
    before = torch.get_num_threads()
    with course_lib.threads_for(torch.nn.Linear(2, 2)):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_set_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="threads"):
        course_lib.set_threads(0)


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "a"))
    assert course_lib.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("COURSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert course_lib.cache_dir() == tmp_path / "x" / "course_lib"
