"""MLflow: metric histories, the config as parameters, the prompt table and evaluated prompt as artifacts.

By default a local store in `<run>/mlflow/` (an SQLite database, MLflow's supported local
backend, and an `artifacts/` folder); browse it with

    mlflow ui --backend-store-uri sqlite:///runs/<...>/mlflow/mlflow.db

`MLFLOW_TRACKING_URI` points it at a server instead, `MLFLOW_EXPERIMENT_NAME` names the
experiment. The MLflow run id is kept in `<run>/mlflow/espl-run-id`, so a resumed run continues
the same MLflow run (MLflow keeps every point, so an iteration redone after a kill shows twice
in a metric's history, with the same step). MLflow's metric names allow letters, digits and `_ - . / : space` only;
other characters become `_` (`eval/pass@1` is `eval/pass_1`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from espl.tracking.protocol import TrackerContext

FOLDER = "mlflow"
DATABASE = "mlflow.db"
ARTIFACTS = "artifacts"
RUN_ID_FILE = "espl-run-id"
DEFAULT_EXPERIMENT = "espl-bench"
BATCH = 500
"""Entries per `log_batch` call (MLflow takes at most 1000 metrics, 100 params)."""
PARAM_BATCH = 100
MAX_PARAM_CHARS = 6000
_NOT_ALLOWED = re.compile(r"[^\w\-./ :]")


def mlflow_key(name: str) -> str:
    return _NOT_ALLOWED.sub("_", name)


class MlflowTracker:
    def __init__(self, context: TrackerContext) -> None:
        from mlflow.tracking import MlflowClient

        # the local store's table creation is logged at INFO, into the run's live progress
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        folder = context.folder(FOLDER)
        server = os.environ.get("MLFLOW_TRACKING_URI")
        self.client = MlflowClient(tracking_uri=server or f"sqlite:///{(folder / DATABASE).resolve()}")
        id_file = folder / RUN_ID_FILE
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self._experiment(None if server else (folder / ARTIFACTS).resolve().as_uri())
            self.run_id = self.client.create_run(experiment, run_name=context.name).info.run_id
            id_file.write_text(self.run_id + "\n")
            self._log_params(flat_params(context.config))

    def _experiment(self, artifact_location: str | None) -> str:
        """The experiment's id (created on first use; a local store keeps artifacts beside its database)."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location)

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), v[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + PARAM_BATCH])

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(mlflow_key(name), value, now, step) for name, value in metrics.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + BATCH])

    def log_prompts(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = {"columns": list(columns), "data": [list(row) for row in rows]}
        self.client.log_dict(self.run_id, table, f"prompts/population/step-{step:05d}.json")

    def log_text(self, step: int, name: str, text: str) -> None:
        self.client.log_text(self.run_id, text, f"prompts/{name}/step-{step:05d}.txt")

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow parameters: dotted keys, values as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value, default=str) if not isinstance(value, str) else value
    return out
