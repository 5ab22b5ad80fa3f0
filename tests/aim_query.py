"""Run as a separate process: what a fresh `aim.Repo` sees (JSON on stdout)."""

import json
import sys

from aim import Repo
from aim.storage.context import Context

TEXTS = ("probe_text", "choices_text", "decision_text", "justification")

repo = Repo.from_path(sys.argv[1])
runs = []
for item in repo.query_runs(sys.argv[2] if len(sys.argv) > 2 else "", report_mode=0).iter_runs():
    run = item.run
    runs.append({
        "hash": run.hash, "name": run.name, "experiment": run.experiment,
        "creation_time": run.creation_time, "end_time": run.end_time,  # the UI's date, duration
        "params": {k: run.get(k) for k in (
            "adm", "llm_backbone", "alignment_target_id", "kdma", "run_variant", "scenario_id",
            "scene_id", "scene_index", "experiment_path", "partition_key", "start_time_source",
            "probe_text", "choices_text", "decision_text", "justification")},
        "metrics": {m.name: m.values.values_list()[-1] for m in run.metrics()},
        "texts": {name: [t.data for t in seq.values.values_list()]
                  for name in TEXTS if (seq := run.get_text_sequence(name, Context({})))},
    })
print(json.dumps(runs))
