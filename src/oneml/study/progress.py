"""The live view of a study: runs done / running / failed / pruned, and the time left."""

from __future__ import annotations

from collections import Counter

from oneml.study.expand import Trial
from oneml.study.state import state
from oneml.tracking import tags as tag


class StudyProgress:
    """A rich progress bar over trials; already-finished or pruned trials count as done from the start.

    Where the output is no terminal (a log file, nohup, a batch scheduler) a live bar draws nothing until the
    end, which for a study means hours of silence: there it prints one timestamped line per trial started and
    ended instead. It also keeps each run's state for the Prometheus endpoint (`oneml.monitoring`), when one is
    served."""

    def __init__(self, trials: list[Trial], console, enabled: bool = True):
        from oneml.monitoring import current_folder, register_study

        self.enabled, self.console = enabled, console
        self.lines = enabled and console is not None and not console.is_terminal
        initial = {t.run_id: state(t) for t in trials}
        self.counts: Counter[str] = Counter(s for s in initial.values() if s in ("finished", "pruned"))
        self.total = len(trials)
        self.running: set[str] = set()
        self.bar, self.task = None, None
        self.trials = {t.label: t for t in trials}
        self.states = {run_id: s if s in ("finished", "pruned") else "queued" for run_id, s in initial.items()}
        if trials and current_folder() is not None:  # a Prometheus endpoint is served
            methods = {t.run_id: t.config.method.name for t in trials}
            snapshot = lambda: [(run_id, methods[run_id], s) for run_id, s in list(self.states.items())]  # noqa: E731
            register_study(trials[0].config.tracking.tags.get(tag.STUDY, ""), snapshot)

    def __enter__(self):
        if self.lines:
            self._line(f"{self.total} trials, {self._done()} already done")
        elif self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = [TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
            self.bar = Progress(*columns, TimeRemainingColumn(), console=self.console)
            self.bar.__enter__()
            self.task = self.bar.add_task("study", total=self.total, completed=self._done(), info=self._info())
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _done(self) -> int:
        return self.counts["finished"] + self.counts["failed"] + self.counts["pruned"]

    def _info(self) -> str:
        c = self.counts
        return f"done {c['finished']}  running {len(self.running)}  failed {c['failed']}  pruned {c['pruned']}"

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self._done(), info=self._info())

    def _mark(self, label: str, status: str) -> None:
        if label in self.trials:
            self.states[self.trials[label].run_id] = status

    def _line(self, text: str) -> None:
        import time

        self.console.print(f"{time.strftime('%H:%M:%S')} study {text}", markup=False, highlight=False, soft_wrap=True)

    def started(self, label: str) -> None:
        self.running.add(label)
        self._mark(label, "running")
        self._refresh()
        if self.lines:
            self._line(f"started {label}")

    def finished(self, label: str, status: str) -> None:
        self.running.discard(label)
        self._mark(label, status)
        if status != "paused":  # a paused run comes back at the next rung
            self.counts[status] += 1
        self._refresh()
        if self.lines:
            self._line(f"{status} {label} [{self._done()}/{self.total}: {self._info()}]")
