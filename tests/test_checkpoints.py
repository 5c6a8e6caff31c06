"""Checkpoint cache: atomic save, weights-only load, keyed by config, shipped weights, retrain."""

import os

import pytest
import torch

from course_lib import checkpoints
from course_lib.checkpoints import cached_model, checkpoint_path, config_key, load_checkpoint, save_checkpoint


def _build(config):
    torch.manual_seed(0)
    return torch.nn.Linear(config["d"], 1)


def _trainer(calls):
    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(2.5)
        return {"seconds": 0.1, "note": "trained"}
    return train


def test_config_key_ignores_key_order_and_sees_values():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert config_key({"a": 1}) != config_key({"a": 1.0001})


def test_config_key_rejects_objects():
    with pytest.raises(TypeError, match=r"config\['f'\]"):
        config_key({"f": torch.zeros(1)})
    # a str subclass looks plain but would not load with weights_only=True
    with pytest.raises(TypeError, match=r"config\['v'\]"):
        config_key({"v": torch.__version__})


def test_cached_model_trains_once_then_loads(tmp_path):
    calls = []
    m1, info1 = cached_model("toy", {"d": 3}, _build, _trainer(calls), directory=tmp_path)
    assert info1.source == "trained" and calls == [1] and info1.path.is_file()
    m2, info2 = cached_model("toy", {"d": 3}, _build, _trainer(calls), directory=tmp_path)
    assert info2.source == "cache" and calls == [1]
    assert torch.equal(m2.weight, torch.full_like(m2.weight, 2.5))
    assert info2.meta["note"] == "trained"
    # another config is another model
    _, info3 = cached_model("toy", {"d": 4}, _build, _trainer(calls), directory=tmp_path)
    assert info3.source == "trained" and calls == [1, 1] and info3.path != info1.path
    _, info4 = cached_model("toy", {"d": 3}, _build, _trainer(calls), directory=tmp_path, retrain=True)
    assert info4.source == "trained" and len(calls) == 3


def test_shipped_weights_are_used_when_the_cache_is_empty(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", shipped)
    model = _build({"d": 2})
    with torch.no_grad():
        model.weight.fill_(-1.0)
    save_checkpoint(checkpoint_path("toy", {"d": 2}, shipped), model, name="toy", config={"d": 2})
    calls = []
    m, info = cached_model("toy", {"d": 2}, _build, _trainer(calls), directory=tmp_path / "cache")
    assert info.source == "pretrained" and calls == []
    assert torch.equal(m.weight, torch.full_like(m.weight, -1.0))
    _, info = cached_model("toy", {"d": 2}, _build, _trainer(calls), directory=tmp_path / "cache", pretrained=False)
    assert info.source == "trained"


def test_load_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        load_checkpoint(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _build({"d": 2}), config={"d": 2})
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _build({"d": 5}), config={"d": 5})
    assert path.read_bytes() == good  # the old checkpoint survives a failed save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a course_lib checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["", "a/b", "with space"])
def test_bad_names(name):
    with pytest.raises(ValueError, match="name"):
        checkpoint_path(name, {})


def test_initial_weights_depend_on_the_config_only(tmp_path):
    def build(config):
        return torch.nn.Linear(4, 4)

    weights = []
    for noise in (1, 5):
        torch.randn(noise)  # whatever ran before must not matter
        m, _ = cached_model("init", {"seed": 3}, build, lambda m: None, directory=tmp_path / str(noise))
        weights.append(m.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    m, _ = cached_model("init", {"seed": 4}, build, lambda m: None, directory=tmp_path / "other")
    assert not torch.equal(m.weight, weights[0])


def test_a_read_only_cache_keeps_the_trained_model(tmp_path, monkeypatch):
    """In the grading sandbox the cache is read-only: a model trained there is used, with a warning, not lost."""
    from course_lib import checkpoints

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(checkpoints, "save_checkpoint", read_only)
    trained = []
    with pytest.warns(RuntimeWarning, match="could not be cached"):
        model, info = checkpoints.cached_model("tiny", {"seed": 0}, lambda c: torch.nn.Linear(2, 1),
                                               lambda m: trained.append(m), directory=tmp_path, pretrained=False)
    assert info.source == "trained" and trained == [model] and not any(tmp_path.iterdir())


def test_a_checkpoint_that_no_longer_fits_is_named_and_retrained(tmp_path):
    """Same config, a model whose shapes changed since: a warning naming the file, then training, not a raw error."""
    config = {"d": 2, "seed": 0}
    cached_model("m", config, lambda c: torch.nn.Linear(c["d"], 1), lambda m: None, directory=tmp_path,
                 pretrained=False)
    calls = []
    with pytest.warns(RuntimeWarning, match=r"m-.*\.pt does not fit"):
        model, info = cached_model("m", config, lambda c: torch.nn.Linear(3, 1), _trainer(calls),
                                   directory=tmp_path, pretrained=False)
    assert info.source == "trained" and calls == [1] and model.weight.shape == (1, 3)
