import pytest

from kerasbert import progress
from kerasbert.progress import TimeEstimate


class FakeClock:
    def __init__(self, step_seconds):
        self.now, self.step_seconds = 100.0, step_seconds

    def __call__(self):
        return self.now


def test_estimate_times_steps_after_warm_up_and_projects_the_run(monkeypatch, capsys):
    clock = FakeClock(2.0)
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    estimate = TimeEstimate(remaining_steps=1000, batch_size=16, evaluated_sequences=4800, run_started=40.0,
                            warmup_steps=3, measured_steps=10)
    for step in range(20):
        estimate.on_train_batch_begin(step)
        clock.now += 30.0 if step < 3 else 2.0  # tracing makes the warm-up steps slow
        estimate.on_train_batch_end(step)
        if step < 12:
            assert estimate.estimate is None
    result = estimate.estimate
    assert result["step_seconds"] == pytest.approx(2.0)
    assert result["remaining_steps"] == 1000 - 13
    assert result["train_seconds"] == pytest.approx(987 * 2.0)
    # 4800 sequences at 16 per 2 s step, evaluated 3 times faster than trained in float32
    assert result["evaluation_seconds"] == pytest.approx(4800 / 16 * 2.0 / 3.0)
    elapsed = 60.0 + 3 * 30.0 + 10 * 2.0
    assert result["elapsed_seconds"] == pytest.approx(elapsed)
    assert result["total_seconds"] == pytest.approx(elapsed + 987 * 2.0 + 200.0)
    printed = capsys.readouterr().out
    assert printed.count("estimated time on this machine") == 1
    assert "fine-tuning 32.9 min more (987 steps at 2.00 s), evaluation 3.3 min" in printed


@pytest.mark.parametrize("policy, speedup", [("mixed_bfloat16", 4.5), ("float32", 3.0), ("mixed_float16", 3.0)])
def test_evaluation_is_estimated_faster_in_bf16(policy, speedup):
    estimate = TimeEstimate(remaining_steps=100, batch_size=16, evaluated_sequences=4800, policy=policy)
    assert estimate.from_step_seconds(1.0)["evaluation_seconds"] == pytest.approx(300 / speedup)


def test_a_run_of_warm_up_steps_only_gets_no_estimate():
    estimate = TimeEstimate(remaining_steps=3, batch_size=8, evaluated_sequences=10)
    for step in range(3):
        estimate.on_train_batch_begin(step)
        estimate.on_train_batch_end(step)
    assert estimate.estimate is None
