import pytest

from kerasbert import progress
from kerasbert.progress import TimeEstimate


class FakeClock:
    def __init__(self, step_seconds):
        self.now, self.step_seconds = 100.0, step_seconds

    def __call__(self):
        return self.now


def estimates_after_steps(estimate, clock, seconds_of_step, steps):
    """Run `steps` steps of `seconds_of_step(step)` each through `estimate`; its estimate after each."""
    seen = []
    for step in range(steps):
        estimate.on_train_batch_begin(step)
        clock.now += seconds_of_step(step)
        estimate.on_train_batch_end(step)
        seen.append(estimate.estimate)
    return seen


def test_estimate_times_steps_after_warm_up_and_projects_the_run(monkeypatch, capsys):
    clock = FakeClock(2.0)
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    estimate = TimeEstimate(remaining_steps=1000, batch_size=16, evaluated_sequences=4800, run_started=40.0,
                            warmup_steps=3, measured_steps=10)
    # Tracing makes the warm-up steps slow.
    seen = estimates_after_steps(estimate, clock, lambda step: 30.0 if step < 3 else 2.0, 20)
    assert seen[:12] == [None] * 12
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


def test_a_length_warmup_is_estimated_at_full_length_then_timed_again(monkeypatch, capsys):
    clock = FakeClock(1.0)
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    # 100 steps: the first 40 short ones at 1 s, a full-length one estimated at 2 of them, taking 2.5 s.
    estimate = TimeEstimate(remaining_steps=100, batch_size=16, evaluated_sequences=480, run_started=100.0,
                            short_steps=40, full_step_cost=2.0)
    first = estimates_after_steps(estimate, clock, lambda step: 1.0 if step < 40 else 2.5, 60)[12]
    assert first["train_seconds"] == pytest.approx(27 * 1.0 + 60 * 2.0)
    assert first["evaluation_seconds"] == pytest.approx(480 / 16 * 2.0 / 3.0)
    again = estimate.estimate
    assert again["remaining_steps"] == 47 and again["train_seconds"] == pytest.approx(47 * 2.5)
    assert again["evaluation_seconds"] == pytest.approx(480 / 16 * 2.5 / 3.0)
    printed = capsys.readouterr().out
    assert printed.count("fine-tuning 2.5 min more (87 steps at 1.00 s while 27 are short, then about 2.00 s)") == 1
    assert printed.count("estimated time on this machine, again at full length: fine-tuning 2.0 min more") == 1
