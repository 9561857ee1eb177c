"""Memoising what a job builds from its settings (no pyspark import).

Column expressions depend only on configuration, yet building them is hundreds of calls
from Python into the JVM; a streaming job used to pay that every micro-batch. Config
objects hold dicts and lists, so they do not hash: these memos key by identity, and keep
each object they saw (a job keeps one config for its life)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

Built = TypeVar("Built")


def per_object(build: Callable[[Any], Built]) -> Callable[[Any], Built]:
    """build(settings), built once per settings object."""
    memo: dict[int, tuple[object, Built]] = {}

    @functools.wraps(build)
    def cached(settings: Any) -> Built:
        hit = memo.get(id(settings))
        if hit is None or hit[0] is not settings:
            hit = memo[id(settings)] = (settings, build(settings))
        return hit[1]

    return cached
