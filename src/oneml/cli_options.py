"""Options that several commands share, defined once so that they are spelled, documented and resolved alike.

Every command that reads or writes runs takes ``--tracking-uri``. The store it reaches is, in this order: the
option, then the config's ``tracking.uri`` (a run's or a study's, where the command has one), then
``$MLFLOW_TRACKING_URI``, then the SQLite file under ``--root`` (``tracking.root``).
"""

from __future__ import annotations

from pathlib import Path

import typer

ROOT_HELP = "Run directory holding the default SQLite MLflow store."
TRACKING_URI_HELP = (
    "MLflow tracking URI: a server (http://host:5000) or a database (sqlite:///file.db). Order: this option, then "
    "the config's tracking.uri, then $MLFLOW_TRACKING_URI, then sqlite under the run root."
)

ROOT = typer.Option(Path("oneml-runs"), "--root", help=ROOT_HELP)
TRACKING_URI = typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP)
