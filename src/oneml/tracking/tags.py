"""The MLflow tag names that training, studies and the analysis agree on: the contract between them, written once.

Training writes the run's identity and setup; a study adds its own and marks pruned or failed trials; the analysis
reads them all back to group, label and judge runs. A tag named anywhere else is a tag only its writer knows.
"""

from __future__ import annotations

RUN_ID = "oneml.run_id"
"""Hash of the resolved config and seed: one run id, one MLflow record."""
CONFIG_ID = "oneml.config_id"
"""The config hash without the seed: the runs of one configuration share it."""
SEED = "oneml.seed"
METHOD = "oneml.method"
MODEL = "oneml.model"
OBJECTIVE = "oneml.objective"
DATASET = "oneml.dataset"
DEVICE = "oneml.device"
TEST_SPLIT = "oneml.test_split"
"""'true' when the run scored its final model on test rows (test_* metrics)."""
COMPLEXITY = "oneml.method.complexity"
"""The method's rank in the guide's simplicity ranking (1 = simplest), as its method file declares it."""
COMPLEXITY_WHY = "oneml.method.complexity_why"
FAILURE = "oneml.failure"
"""Why a run failed: '<exception class>: <reason>'."""
RUN_DIR = "oneml.run_dir"

STUDY = "oneml.study"
STUDY_PARENT = "oneml.study_parent"
"""'true' on a study's own record (it holds settings, not results)."""
TRACK = "oneml.track"
GRID_PREFIX = "oneml.grid."
"""oneml.grid.<dotted key> = the value a trial took from its track's grid."""
TUNING = "oneml.tuning"
"""'true' on a tuning run: it chose a configuration's value on validation rows and is never compared."""
PRUNED = "oneml.pruned"
PRUNED_REASON = "oneml.pruned_reason"
