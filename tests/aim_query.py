"""What a fresh `aim.Repo` sees, as JSON: `python aim_query.py REPO [QUERY]` prints the runs
once. `python aim_query.py --serve` answers each line `[repo, query]` on stdin with one line
`{"runs": [...]}` (or `{"error": ...}`), each from a child forked for that query: this process
imports Aim but never opens a repo, so every child starts with nothing cached, as a new process
would, without paying Aim's import (~1 s CPU) again."""

import json
import os
import sys
import traceback

from aim import Repo
from aim.storage.context import Context

TEXTS = ("probe_text", "choices_text", "decision_text", "justification")
PARAMS = ("adm", "adm_config", "llm_backbone", "alignment_target_id", "kdma", "run_variant",
          "scenario_id", "scene_id", "scene_index", "experiment_path", "partition_key",
          "start_time_source",
          "probe_text", "choices_text", "decision_text", "justification", "overrides",
          "incomplete")


def runs_seen(repo_path: str, query: str) -> list[dict]:
    repo = Repo.from_path(repo_path)
    runs = []
    for item in repo.query_runs(query, report_mode=0).iter_runs():
        run = item.run
        runs.append({
            "hash": run.hash, "name": run.name, "experiment": run.experiment,
            "creation_time": run.creation_time, "end_time": run.end_time,  # the UI's date, duration
            "params": {k: run.get(k) for k in PARAMS},
            "metrics": {m.name: m.values.values_list()[-1] for m in run.metrics()},
            "texts": {name: [t.data for t in seq.values.values_list()]
                      for name in TEXTS if (seq := run.get_text_sequence(name, Context({})))},
        })
    return runs


def _answer_in_a_child(repo_path: str, query: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            line = json.dumps({"runs": runs_seen(repo_path, query)})
        except BaseException:
            line = json.dumps({"error": traceback.format_exc()})
        _write_line(line)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        _write_line(json.dumps({"error": f"the query process ended with status {status}"}))


def _write_line(line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def serve() -> None:
    for line in sys.stdin:
        _answer_in_a_child(*json.loads(line))


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        print(json.dumps(runs_seen(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
