"""Benchmarks of selfsup-zoo: one runner, ``python -m benchmarks run`` (see :mod:`benchmarks.cli`).

Scripts that print figures, not timed tests. Each case (a training step, a view pipeline, a zoo
backbone's load or inference) runs in its own subprocess so that its peak memory (``maxrss``) is its
own, and the runner interleaves the subprocesses of the compared implementations round by round so
that drift of a shared machine's load hits both alike.
"""
