"""One progress-bar style for every long loop (rich; plain and quiet when stdout is not a terminal)."""

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress(show: bool = True) -> Progress:
    """show=False: a silent bar (ranks other than 0 under torchrun)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False, disable=not show)
