"""Where each dataset is read from: its stable contract name apart from the physical relation.

The contract (``contract.py``) names each dataset and its columns once; which PostgreSQL relation
holds them is configuration:

- default: the reference tables of ``contract.py`` (``ops.operation_runs``, ...), with the source
  column names declared there (``Column.source``: ``entities.entity_snapshots.id`` is read as
  ``snapshot_id``);
- ``EXPORT_SOURCE_SCHEMA=export``: ``export.dx_operation_runs_v1``, ... one relation per dataset
  named exactly as the dataset, exposing the contract's own column names (typically the views a
  producer's DBA installs, ``export-pipeline source views``), so no column is renamed;
- ``EXPORT_SOURCE_RELATION_<DATASET>=schema.name`` for one dataset (wins over the schema): a
  contract-shaped relation with another name.

Every source query (window, keys, scope and org filters, max cursor, counts, reconciliation,
status, ``source check``) is built from the dataset :func:`source_dataset` returns, so filters
and projections use the columns of the relation actually read. The mapped dataset keeps its
contract name, columns, keys and checks: only where it is read from changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from export_pipeline.config import Settings
from export_pipeline.contract import Dataset


@dataclass(frozen=True)
class SourceRelation:
    """The relation a dataset is read from, and how it was chosen."""

    dataset: str
    relation: str
    #: True when the relation exposes the contract's column names (a configured relation).
    contract_shaped: bool
    #: ``reference`` (contract.py), ``schema`` (EXPORT_SOURCE_SCHEMA) or ``override``.
    origin: str


def source_relation(ds: Dataset, settings: Settings) -> SourceRelation:
    """Which relation ``ds`` is read from under ``settings``."""
    overrides = dict(settings.source_relations)
    if ds.name in overrides:
        return SourceRelation(ds.name, overrides[ds.name], True, "override")
    if settings.source_schema:
        return SourceRelation(ds.name, f"{settings.source_schema}.{ds.name}", True, "schema")
    return SourceRelation(ds.name, ds.source_table, False, "reference")


def source_dataset(ds: Dataset, settings: Settings) -> Dataset:
    """``ds`` as read under ``settings``: ``source_table`` is the configured relation, and when
    that relation is contract-shaped every column is read by its contract name.

    Idempotent (a mapped dataset maps to itself), so layers may apply it without coordinating.
    """
    rel = source_relation(ds, settings)
    if not rel.contract_shaped:
        return ds
    if ds.source_table == rel.relation and all(c.source is None for c in ds.columns):
        return ds
    return replace(
        ds,
        source_table=rel.relation,
        columns=tuple(replace(c, source=None) for c in ds.columns),
    )
