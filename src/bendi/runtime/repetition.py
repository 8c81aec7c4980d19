"""Stopping degenerate repetition: a small model asked for a title with no token limit may write
the same phrase until the context is full (minutes on a CPU). A generation whose latest tokens
are one block repeated over and over is ended.

For each period p up to `max_period`, `_run[p]` counts how many tokens in a row equal the token p
positions earlier; the tail is then one p-token block repeated `_run[p] / p + 1` times. A loop is
declared when that tail spans at least `min_span` tokens and holds at least `min_repeats` copies:
long enough that real text (a table rule, a list of similar lines) does not trigger it.
"""

from __future__ import annotations

import collections


class RepetitionGuard:
    """Feed generated token ids; `feed` returns True once the output is looping."""

    def __init__(self, max_period: int = 96, min_span: int = 96, min_repeats: int = 4) -> None:
        self.max_period = max_period
        self.min_span = min_span
        self.min_repeats = min_repeats
        self._tokens: collections.deque[int] = collections.deque(maxlen=max_period + 1)
        self._run = [0] * (max_period + 1)
        #: (period, span) of the loop found, for the log
        self.found: tuple[int, int] | None = None

    def feed(self, token: int) -> bool:
        tokens = self._tokens
        tokens.append(token)
        n = len(tokens)
        run = self._run
        for p in range(1, min(self.max_period, n - 1) + 1):
            if tokens[n - 1] == tokens[n - 1 - p]:
                run[p] += 1
                span = run[p] + p
                if span >= self.min_span and span >= self.min_repeats * p:
                    self.found = (p, span)
                    return True
            else:
                run[p] = 0
        return False
