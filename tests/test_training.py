"""The training loop: it minimises, yields its state, records logs, and checks its arguments."""

import pytest
import torch

from course_lib.training import minibatches, train, training_loop


def _regression(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5]])
    return x, x @ w + 0.3


def _mse(model, batch):
    x, y = batch
    loss = (model(x) - y).pow(2).mean()
    return loss, {"half": 0.5 * loss}


def test_loop_recovers_a_linear_map_and_yields_every_step():
    torch.manual_seed(0)
    x, y = _regression()
    model = torch.nn.Linear(3, 1)
    states = list(training_loop(model, _mse, (x, y), steps=400, batch_size=64, lr=0.05,
                                generator=torch.Generator().manual_seed(1)))
    assert [s.step for s in states] == list(range(1, 401))
    assert states[-1].loss < 1e-3 < states[0].loss
    assert torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=0.02)
    assert states[-1].logs["half"] == pytest.approx(0.5 * states[-1].loss)


def test_train_returns_history_with_logs():
    x, y = _regression()
    hist = train(torch.nn.Linear(3, 1), _mse, (x, y), steps=50, progress=False, log_every=10, lr=0.05)
    assert hist["step"] == [10, 20, 30, 40, 50]
    assert len(hist["loss"]) == len(hist["half"]) == 5 and hist["seconds"] > 0


def test_minibatches_cover_each_example_once_per_epoch():
    data = torch.arange(10)
    it = minibatches(data, 5, generator=torch.Generator().manual_seed(0))
    epoch = torch.cat([next(it), next(it)])
    assert sorted(epoch.tolist()) == list(range(10))


def test_callable_data_is_sampled_on_the_fly():
    calls = []

    def sample(batch_size, generator):
        calls.append(batch_size)
        return torch.randn(batch_size, 2, generator=generator)

    it = minibatches(sample, 7)
    assert next(it).shape == (7, 2) and calls == [7]


def test_nan_loss_stops_with_a_message():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(FloatingPointError, match="NaN at step 1"):
        list(training_loop(model, lambda m, b: m(b).sum() * float("nan"), torch.ones(4, 1), steps=3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 0}, "steps"), ({"steps": 2, "batch_size": 0}, "batch_size"),
     ({"steps": 2, "lr_schedule": "warm"}, "lr_schedule")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        list(training_loop(torch.nn.Linear(1, 1), lambda m, b: m(b).mean(), torch.ones(4, 1), **kwargs))


def test_loss_must_be_scalar():
    with pytest.raises(ValueError, match="loss_fn: expected a scalar"):
        list(training_loop(torch.nn.Linear(1, 1), lambda m, b: m(b), torch.ones(4, 1), steps=1))


def test_mismatched_data():
    with pytest.raises(ValueError, match="data"):
        next(minibatches((torch.ones(3), torch.ones(4)), 2))


def test_an_infinite_loss_stops_before_the_step():
    """The guard runs before opt.step(): the weights are those of the last good step, finite (inf is caught too)."""
    model = torch.nn.Linear(1, 1)
    seen = []

    def loss_fn(m, b):
        seen.append(m.weight.detach().clone())
        return m(b).sum() * (float("inf") if len(seen) == 3 else 1.0)

    with pytest.raises(FloatingPointError, match="inf.*at step 3"):
        list(training_loop(model, loss_fn, torch.ones(4, 1), steps=5))
    assert torch.isfinite(model.weight).all() and torch.equal(model.weight.detach(), seen[-1])


@pytest.mark.parametrize(("forced", "precision", "expect_bf16"),
                         [("1", "bf16", True), ("0", "bf16", False), ("1", "float32", False)])
def test_fast_inference_runs_bf16_only_where_native_and_asked(monkeypatch, forced, precision, expect_bf16):
    from course_lib._runtime import recommended_threads
    from course_lib.training import fast_inference

    monkeypatch.setenv("COURSE_BF16", forced)  # stands in for the CPU's bf16 units (present / absent)
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    conv = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 8, 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with fast_inference(conv, precision) as on:
            assert on is expect_bf16
            assert torch.get_num_threads() == recommended_threads(conv)
            y = conv(x)
            assert y.dtype == (torch.bfloat16 if expect_bf16 else torch.float32)
            assert (x * 2.0).dtype == torch.float32  # elementwise arithmetic keeps its dtype
        assert torch.get_num_threads() == 1 and not torch.is_autocast_enabled("cpu")
    finally:
        torch.set_num_threads(before)


def test_fast_inference_rejects_an_unknown_precision():
    from course_lib.training import fast_inference

    with pytest.raises(ValueError, match="^precision: .*'fp16'"), fast_inference(torch.nn.Linear(2, 2), "fp16"):
        pass
