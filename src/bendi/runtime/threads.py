"""Choose llama.cpp's thread count from measured step times.

llama.cpp's CPU threads spin-wait at every operation of a step, so when another process takes a
core, one descheduled thread stalls the whole step: on a 2-core machine with one busy core,
decode fell from ~110 to ~8 tokens/s with 2 threads, while 1 thread kept ~60. The fastest count
depends on what else runs right now, so it is measured, not guessed.

Trying a smaller count is not free: one 8-sequence step on one thread of two takes twice as long,
and a prompt chunk of a few hundred tokens takes half a second more. So the tuner measures each
count once per step size, then runs on the fastest; it tries the others again when the steps get
slower than they were (another process has arrived) and otherwise only rarely. While on fewer
threads it retries all of them sooner (the other process may have gone), backing off while that
keeps losing. Prompt steps, whose size varies from one token to hundreds, are not measured: they
use the count that is best for the largest decode step.
"""

from __future__ import annotations

from collections.abc import Hashable


class ThreadTuner:
    """Picks a thread count per step; `record` feeds back how long the step took.

    Steps are grouped by a caller's key (the number of sequences in a decode step), since a
    step's cost, and which count is fastest, depend on its size.
    """

    def __init__(
        self,
        max_threads: int,
        *,
        explore_every: int = 256,
        explore_steps: int = 2,
        alpha: float = 0.25,
        slowdown: float = 2.0,
    ) -> None:
        options = {max_threads, max(1, max_threads - 1)}
        if max_threads >= 4:
            options.add(max_threads // 2)
        self.options = sorted(options, reverse=True)
        self.explore_every = explore_every
        self.explore_steps = explore_steps
        self.alpha = alpha
        self.slowdown = slowdown
        self._cost: dict[tuple[int, Hashable], float] = {}  # moving average, seconds per step
        self._floor: dict[tuple[int, Hashable], float] = {}  # the lowest that average has been
        self._updated: dict[tuple[int, Hashable], int] = {}  # step of the last measurement
        self._step = 0
        self._last_explore = 0
        self._explore_left = 0
        self._explore_with = self.options[0]
        self._rotation = 0
        self.first_retry = max(1, explore_every // 16)
        self._backoff = self.first_retry

    def choose(self, key: Hashable) -> int:
        """Thread count for the next step under `key`."""
        if len(self.options) == 1:
            return self.options[0]
        self._step += 1
        if self._explore_left > 0:
            self._explore_left -= 1
            return self._explore_with
        untried = [n for n in self.options if (n, key) not in self._cost]
        if untried:
            # One step with each count per key, once: cheap next to guessing wrong for long.
            return untried[0]
        best = self.best(key)
        # On all threads, check the others rarely; on fewer, retry all threads sooner, backing
        # off while the other process stays.
        every = self.explore_every if best == self.options[0] else self._backoff
        if self._step - self._last_explore >= every:
            self._start_exploring(best)
            self._explore_left -= 1
            return self._explore_with
        return best

    def for_large_steps(self) -> int:
        """The count for steps too costly to measure alternatives on (long prompt chunks): the
        best one for the largest decode step measured, which is the nearest in kind."""
        keys = [k for (_, k) in self._cost if isinstance(k, int)]
        return self.best(max(keys)) if keys else self.options[0]

    def best(self, key: Hashable) -> int:
        """The fastest known count for `key`; all threads until something else has been measured."""
        known = [(self._cost[(n, key)], n) for n in self.options if (n, key) in self._cost]
        return min(known)[1] if known else self.options[0]

    def record(self, threads: int, key: Hashable, seconds: float) -> None:
        """A step under `key` with `threads` threads took `seconds`."""
        slot = (threads, key)
        cost = seconds
        old = self._cost.get(slot)
        # A figure measured long ago says nothing about the machine now: start again from this one.
        stale = old is None or self._step - self._updated.get(slot, 0) > 2 * self.explore_steps + 8
        new = cost if stale or old is None else old + self.alpha * (cost - old)
        self._cost[slot] = new
        self._updated[slot] = self._step
        self._floor[slot] = min(self._floor.get(slot, new), new)
        if (
            self._explore_left == 0
            and threads == self.best(key)
            and new > self.slowdown * self._floor[slot]
            and self._step - self._last_explore >= 4 * self.explore_steps
        ):
            # Steps got slower than they have been on this count: another process has probably
            # taken a core. Measure the alternatives now instead of at the next round.
            self._start_exploring(threads)

    def _start_exploring(self, current: int) -> None:
        if current == self.options[0]:
            self._backoff = self.first_retry
        else:  # the last retry of all threads lost: wait longer before the next one
            self._backoff = min(2 * self._backoff, self.explore_every)
        others = [n for n in self.options if n != current]
        self._explore_with = others[self._rotation % len(others)]
        self._rotation += 1
        self._explore_left = self.explore_steps
        self._last_explore = self._step
