"""The output of a command run under ``torch.distributed.run``, as a failed test shows it."""


def why(run, head: int = 3000, tail: int = 1500) -> str:
    """A torchrun run's stderr, cut to its beginning -- where a rank prints its own error (a traceback, or an abort
    such as "terminate called without an active exception") -- and its end, the launcher's summary of which rank
    failed how; the launcher's traceback in between would push the rank's own words out of a tail alone."""
    err = run.stderr
    return err if len(err) <= head + tail else f"{err[:head]}\n[... {len(err) - head - tail} characters ...]\n{err[-tail:]}"
