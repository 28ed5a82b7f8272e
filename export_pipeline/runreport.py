"""A run's report on the terminal: one line per dataset, then one verdict line.

The dataset lines come from the ledger (``_export_batches``: a micro-batch's batch and its
dead-letter retry merge into one line) and, for a dataset that failed before writing a batch, from
the run's Dagster step failures. The verdict names each failed dataset with its one-line error.
Stack traces go to the log file (:mod:`export_pipeline.terminal`), never to the terminal unless
``--verbose``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from export_pipeline import terminal
from export_pipeline.batch import COUNT_FIELDS
from export_pipeline.contract import DATASETS


@dataclass
class DatasetLine:
    dataset: str
    status: str = "succeeded"
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))
    #: Dead letters re-read in this run (their rows are in the counts too).
    retried: int = 0
    exhausted: int = 0
    error: str | None = None


@dataclass
class RunReport:
    label: str
    run_id: str
    lines: list[DatasetLine]
    #: A failure of the run not tied to a dataset (a resource, the instance), one line.
    run_error: str | None = None

    @property
    def failed(self) -> list[DatasetLine]:
        return [line for line in self.lines if line.status == "failed"]

    @property
    def exhausted(self) -> int:
        return sum(line.exhausted for line in self.lines)


def dataset_lines(ledger: list[dict[str, Any]]) -> list[DatasetLine]:
    """One line per dataset over a run's ledger rows, in contract order."""
    out: dict[str, DatasetLine] = {}
    for row in ledger:
        line = out.setdefault(row["dataset"], DatasetLine(row["dataset"]))
        for name in COUNT_FIELDS:
            line.counts[name] += int(row[name])
        if row.get("mode") == "retry":
            line.retried += int(row["extracted"])
        if row["status"] == "failed":
            line.status = "failed"
            line.error = line.error or row["error"]
    order = {ds.name: i for i, ds in enumerate(DATASETS)}
    return sorted(out.values(), key=lambda line: order.get(line.dataset, len(order)))


def _dataset_of_step(step_key: str | None) -> str | None:
    if not step_key:
        return None
    for ds in sorted(DATASETS, key=lambda d: -len(d.name)):
        if ds.name in step_key:
            return ds.name
    return None


def _root_error(error: Any) -> Any:
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def dagster_failures(run_id: str) -> tuple[dict[str, str], str | None]:
    """The run's failed steps, as dataset -> one-line error, and its run-level error if any.

    Each failure's full stack goes to the log file. A step skipped because its upstream failed is
    not a failure of its own.
    """
    import dagster as dg

    from export_pipeline.launcher import dagster_instance

    by_dataset: dict[str, str] = {}
    run_error: str | None = None
    with dagster_instance() as instance:
        records = instance.get_records_for_run(
            run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
        ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        error = getattr(data, "error", None)
        root = _root_error(error) if error is not None else None
        message = terminal.one_line(
            terminal.scrub(root.message if root else event.message or "failed"), 300
        )
        stack = error.to_string() if error is not None else (event.message or "")
        terminal.log_error(f"run {run_id} step {event.step_key or '(run)'}: {message}", stack)
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            run_error = run_error or (message if error is not None else None)
            continue
        name = _dataset_of_step(event.step_key) or event.step_key or "(run)"
        by_dataset.setdefault(name, message)
    return by_dataset, run_error


def exhausted_by_dataset(warehouse_path: Any) -> dict[str, int]:
    from export_pipeline.warehouse import open_warehouse, run_sql

    if not warehouse_path.exists():
        return {}
    with open_warehouse(warehouse_path, read_only=True, lock_timeout_seconds=30) as con:
        rows = run_sql(
            con,
            "SELECT dataset, count(*) FROM dx_dead_letter WHERE status = 'exhausted' "
            "GROUP BY dataset",
        )
    return {name: int(n) for name, n in rows}


def build(
    label: str,
    run_id: str,
    success: bool,
    ledger: list[dict[str, Any]],
    warehouse_path: Any,
) -> RunReport:
    lines = dataset_lines(ledger)
    report = RunReport(label, run_id, lines)
    if not success:
        failures, report.run_error = dagster_failures(run_id)
        known = {line.dataset: line for line in lines}
        for name, message in failures.items():
            line = known.get(name)
            if line is None:
                line = DatasetLine(name, status="failed", error=message)
                lines.append(line)
                known[name] = line
            elif line.status != "failed":
                line.status, line.error = "failed", message
    for name, n in exhausted_by_dataset(warehouse_path).items():
        for line in lines:
            if line.dataset == name:
                line.exhausted = n
    return report


def print_lines(report: RunReport) -> None:
    print(
        f"  {'dataset':<24} {'status':<9} {'extracted':>9} {'inserted':>9} {'updated':>8} "
        f"{'unchanged':>9} {'stale':>6} {'dead':>6} {'retried':>7} {'exhausted':>9}"
    )
    for line in report.lines:
        c = line.counts
        print(
            f"  {line.dataset:<24} {line.status:<9} {c['extracted']:>9,} {c['inserted']:>9,} "
            f"{c['updated']:>8,} {c['unchanged']:>9,} {c['stale']:>6,} {c['dead_lettered']:>6,} "
            f"{line.retried:>7,} {line.exhausted:>9,}"
        )


def _error_of(line: DatasetLine) -> str:
    """The line's error, one line, without the dataset name the verdict already gives."""
    error = terminal.one_line(line.error or "failed", 300)
    kind, sep, rest = error.partition(": ")
    if sep and rest.startswith(f"{line.dataset}: "):  # "SchemaMismatchError: <dataset>: ..."
        error = f"{kind}: {rest.removeprefix(f'{line.dataset}: ')}"
    return error.removeprefix(f"{line.dataset}: ")


def verdict(report: RunReport, success: bool) -> tuple[int, str]:
    """The exit code and the verdict line (its last line of output)."""
    failed = report.failed
    if failed or not success:
        if failed:
            named = "; ".join(f"{line.dataset}: {_error_of(line)}" for line in failed)
            text = f"{report.label} FAILED for {len(failed)} of {len(report.lines)} datasets: "
            text += named
        else:
            text = f"{report.label} FAILED: {report.run_error or 'the run did not complete'}"
        where = terminal.log_path()
        text += f" (run {report.run_id}; stack traces in {where or 'the Dagster run'})"
        return terminal.ExitCode.FAILED, text
    totals = {name: sum(line.counts[name] for line in report.lines) for name in COUNT_FIELDS}
    summary = (
        f"{report.label} succeeded for {len(report.lines)} datasets (run {report.run_id}): "
        f"{totals['extracted']:,} extracted, {totals['inserted']:,} inserted, "
        f"{totals['updated']:,} updated, {totals['dead_lettered']:,} dead-lettered"
    )
    if report.exhausted:
        which = ", ".join(f"{x.dataset} {x.exhausted:,}" for x in report.lines if x.exhausted)
        return terminal.ExitCode.ATTENTION, (
            f"{summary}; but {report.exhausted:,} dead letters are exhausted ({which}): "
            "see `export-pipeline dead-letter list --status exhausted`"
        )
    return terminal.ExitCode.OK, summary
