"""The thread tuner picks the thread count that measures fastest, and keeps checking."""

from __future__ import annotations

from bendi.runtime.threads import ThreadTuner


def drive(tuner: ThreadTuner, cost: dict[int, float], steps: int, batch: int = 1) -> list[int]:
    chosen = []
    for _ in range(steps):
        n = tuner.choose(batch)
        tuner.record(n, batch, cost[n])
        chosen.append(n)
    return chosen


def test_prefers_all_threads_on_an_idle_machine() -> None:
    tuner = ThreadTuner(2, explore_every=32, explore_steps=2)
    chosen = drive(tuner, {2: 0.008, 1: 0.012}, 320)
    assert tuner.best(1) == 2
    assert chosen[-32:].count(2) >= 30  # only the exploration steps use 1 thread
    assert 1 in chosen[2:]  # and it does keep exploring


def test_drops_a_thread_when_another_process_takes_a_core() -> None:
    tuner = ThreadTuner(2, explore_every=32, explore_steps=2)
    drive(tuner, {2: 0.008, 1: 0.012}, 100)
    chosen = drive(tuner, {2: 0.250, 1: 0.016}, 60)  # a neighbour now stalls every 2-thread step
    assert tuner.best(1) == 1
    assert chosen[-20:].count(1) >= 18
    chosen = drive(tuner, {2: 0.008, 1: 0.012}, 400)  # the neighbour left
    assert tuner.best(1) == 2 and chosen[-20:].count(2) >= 18


def test_batch_sizes_are_measured_separately() -> None:
    tuner = ThreadTuner(4, explore_every=16, explore_steps=2)
    assert sorted(tuner.options) == [2, 3, 4]
    drive(tuner, {4: 0.01, 3: 0.02, 2: 0.03}, 100, batch=1)
    drive(tuner, {4: 0.09, 3: 0.05, 2: 0.06}, 100, batch=8)
    assert tuner.best(1) == 4 and tuner.best(8) == 3


def test_one_core_has_nothing_to_tune() -> None:
    tuner = ThreadTuner(1)
    assert drive(tuner, {1: 0.01}, 5) == [1] * 5


def test_an_idle_machine_rarely_pays_for_exploring() -> None:
    tuner = ThreadTuner(2, explore_every=256, explore_steps=2)
    chosen = drive(tuner, {2: 0.040, 1: 0.080}, 1024, batch=8)
    # Only the periodic checks run on one thread: 2 steps in every 256 (under 1% of the time).
    assert chosen.count(1) <= 2 * (1024 // 256)
    assert chosen[:2] == [2, 1]  # one trial of each count, then the fastest


def test_prompt_steps_follow_the_largest_decode_step() -> None:
    tuner = ThreadTuner(2, explore_every=4, explore_steps=2)
    assert tuner.for_large_steps() == 2  # nothing measured yet: all threads
    drive(tuner, {2: 0.008, 1: 0.012}, 40, batch=1)
    drive(tuner, {2: 0.250, 1: 0.030}, 40, batch=8)  # contended at 8 sequences
    assert tuner.for_large_steps() == 1


def test_a_figure_from_long_ago_is_replaced_not_averaged() -> None:
    tuner = ThreadTuner(2, explore_every=32, explore_steps=2)
    drive(tuner, {2: 0.250, 1: 0.016}, 40)  # contended from the start: one thread wins
    assert tuner.best(1) == 1
    # The neighbour leaves. One periodic check with two threads must be enough to switch back,
    # although the two-thread average was once 15x higher.
    chosen = drive(tuner, {2: 0.008, 1: 0.012}, 40)
    assert tuner.best(1) == 2 and chosen[-5:] == [2] * 5


def test_retries_back_off_while_the_neighbour_stays() -> None:
    tuner = ThreadTuner(2, explore_every=256, explore_steps=2)
    chosen = drive(tuner, {2: 0.250, 1: 0.016}, 2048)
    assert tuner.best(1) == 1
    # Retries with both threads start 16 steps apart and double up to 256: about 2 x 12 steps.
    assert chosen.count(2) <= 2 * 14
    assert chosen[:2] == [2, 1]
