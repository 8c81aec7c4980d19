"""Choose llama.cpp's thread count from measured step times.

llama.cpp's CPU threads spin-wait at every operation of a step, so when another process takes a
core, one descheduled thread stalls the whole step: on a 2-core machine with one busy core,
decode fell from ~110 to ~8 tokens/s with 2 threads, while 1 thread kept ~60. The fastest count
depends on what else runs right now, so it is measured, not guessed: steps mostly run with the
count that has been fastest for that batch size, and now and then try the other.
"""

from __future__ import annotations


class ThreadTuner:
    """Picks a thread count per step; `record` feeds back how long the step took."""

    def __init__(
        self,
        max_threads: int,
        *,
        explore_every: int = 128,
        explore_steps: int = 4,
        alpha: float = 0.25,
    ) -> None:
        options = {max_threads, max(1, max_threads - 1)}
        if max_threads >= 4:
            options.add(max_threads // 2)
        self.options = sorted(options, reverse=True)
        self.explore_every = explore_every
        self.explore_steps = explore_steps
        self.alpha = alpha
        self._cost: dict[tuple[int, int], float] = {}  # (threads, batch size) -> seconds per step
        self._step = 0
        self._explore_left = 0
        self._explore_with = self.options[0]

    def choose(self, batch: int) -> int:
        """Thread count for the next step of `batch` tokens (decode-only steps)."""
        if len(self.options) == 1:
            return self.options[0]
        self._step += 1
        untried = [n for n in self.options if (n, batch) not in self._cost]
        if untried:
            return untried[0]
        best = self.best(batch)
        if self._explore_left > 0:
            self._explore_left -= 1
            return self._explore_with
        if self._step % self.explore_every == 0:
            others = [n for n in self.options if n != best]
            self._explore_with = others[(self._step // self.explore_every) % len(others)]
            self._explore_left = self.explore_steps - 1
            return self._explore_with
        return best

    def best(self, batch: int) -> int:
        known = [(self._cost[(n, batch)], n) for n in self.options if (n, batch) in self._cost]
        return min(known)[1] if known else self.options[0]

    def record(self, threads: int, batch: int, seconds: float) -> None:
        """How long a step of `batch` tokens took with `threads` threads."""
        key = (threads, batch)
        old = self._cost.get(key)
        self._cost[key] = seconds if old is None else old + self.alpha * (seconds - old)
        if old is not None and seconds > 3 * old and self._explore_left == 0:
            # A sudden slowdown (another process took a core): look at the alternatives now.
            self._step = self.explore_every - 1
