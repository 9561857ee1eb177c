"""`tailor run`: the whole flow on a small world, and the orchestration (retries, a failed
step recorded and resumed, --from, --only) with stand-in steps that fail on demand."""

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import run
from pipelines.config import load_config
from pipelines.synthetic import generator
from tests.settings import SPARK_TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]


class Script:
    """Stand-in steps: each records that it ran and fails as often as told, with an exit
    code, or by raising what it is given (an exception instance)."""

    def __init__(self, names, failures=None, outcome=3):
        self.failures = dict(failures or {})
        self.outcome = outcome
        self.ran: list[str] = []
        self.steps = [run.Step(name, self._runner(name)) for name in names]

    def _runner(self, name):
        def step(_args, _config, _common):
            self.ran.append(name)
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                if isinstance(self.outcome, BaseException):
                    raise self.outcome
                return self.outcome
            return 0

        return step


@pytest.fixture
def script(monkeypatch):
    def install(failures=None, outcome=3):
        made = Script(["first", "second", "third"], failures, outcome)
        monkeypatch.setattr(run, "STEPS", made.steps)
        monkeypatch.setattr(run, "STEP_NAMES", [step.name for step in made.steps])
        monkeypatch.setattr(run, "landed_summary", lambda _config: "summary")
        monkeypatch.setattr(run, "RETRY_PAUSE_S", 0)
        return made

    return install


def _state(tmp_path):
    return json.loads((tmp_path / run.STATE_FILE).read_text())


def test_a_failing_step_is_retried_then_the_run_goes_on(script, tmp_path):
    made = script({"second": 1})
    assert run.main(["--set", f"storage.root={tmp_path}"]) == 0
    assert made.ran == ["first", "second", "second", "third"]
    state = _state(tmp_path)
    assert state["failed_step"] is None
    assert {name: (step["status"], step["attempts"]) for name, step in state["steps"].items()} == {
        "first": ("succeeded", 1), "second": ("succeeded", 2), "third": ("succeeded", 1)}


def test_a_run_stops_at_a_step_that_keeps_failing_and_resume_starts_there(script, tmp_path, capsys):
    made = script({"second": 2})
    assert run.main(["--set", f"storage.root={tmp_path}", "--retries", "1"]) == 3
    assert made.ran == ["first", "second", "second"]
    state = _state(tmp_path)
    assert state["failed_step"] == "second"
    assert state["steps"]["second"] == {"status": "failed", "exit_code": 3, "attempts": 2,
                                        "seconds": state["steps"]["second"]["seconds"]}
    assert "third" not in state["steps"]
    assert "tailor run --resume" in capsys.readouterr().out

    made.ran.clear()
    assert run.main(["--set", f"storage.root={tmp_path}", "--resume"]) == 0
    assert made.ran == ["second", "third"]
    assert _state(tmp_path)["failed_step"] is None
    # Nothing failed last time: nothing to resume, said in one line.
    assert run.main(["--set", f"storage.root={tmp_path}", "--resume"]) == 2
    said = capsys.readouterr().err.strip()
    assert said == f"tailor: nothing to resume: no failed or interrupted step is recorded in {run.STATE_FILE}"


def test_resume_goes_on_with_the_world_the_run_started_and_says_how(script, tmp_path, capsys):
    made = script({"second": 2})
    root = tmp_path / "retail world"
    assert run.main(["--set", f"storage.root={root}", "--data", "online-retail", "--retries", "1"]) == 3
    assert _state(root)["data"] == "online-retail"
    assert f"`tailor run --resume --set 'storage.root={root}'` starts again there" in capsys.readouterr().out
    made.ran.clear()
    assert run.main(["--set", f"storage.root={root}", "--resume"]) == 0  # no --data: the record's
    assert made.ran == ["second", "third"] and _state(root)["data"] == "online-retail"
    assert run.main(["--set", f"storage.root={root}"]) == 0  # a whole run: synthetic unless asked
    assert _state(root)["data"] == "synthetic"


def test_a_run_cut_short_mid_step_is_resumed_at_that_step(script, tmp_path):
    """Ctrl-C (or a kill) while a step runs: the record says it was running; resume starts there."""
    made = script({"second": 1}, outcome=KeyboardInterrupt())
    assert run.main(["--set", f"storage.root={tmp_path}"]) == run.INTERRUPTED
    assert made.ran == ["first", "second"]
    state = _state(tmp_path)
    assert state["failed_step"] == "second" and state["steps"]["second"]["exit_code"] == run.INTERRUPTED
    # A kill leaves the step `running`: the same.
    state["steps"]["second"] = {"status": "running", "attempts": 1}
    (tmp_path / run.STATE_FILE).write_text(json.dumps(state))
    made.ran.clear()
    assert run.main(["--set", f"storage.root={tmp_path}", "--resume"]) == 0
    assert made.ran == ["second", "third"]
    assert {name: step["status"] for name, step in _state(tmp_path)["steps"].items()} == {
        "first": "succeeded", "second": "succeeded", "third": "succeeded"}


@pytest.mark.parametrize("outcome", [run.INTERRUPTED, SystemExit(2)])
def test_an_interrupted_step_or_a_usage_error_is_not_retried(script, tmp_path, outcome):
    made = script({"second": 5}, outcome=outcome)
    assert run.main(["--set", f"storage.root={tmp_path}", "--retries", "3"]) in (run.INTERRUPTED, 2)
    assert made.ran == ["first", "second"]
    assert _state(tmp_path)["steps"]["second"]["status"] == "failed"


def test_an_unexpected_error_in_a_step_is_its_failure_and_retried(script, tmp_path):
    made = script({"first": 1}, outcome=RuntimeError("boom"))
    assert run.main(["--set", f"storage.root={tmp_path}"]) == 0
    assert made.ran == ["first", "first", "second", "third"]


def test_from_and_only_choose_the_steps(script, tmp_path):
    made = script()
    assert run.main(["--set", f"storage.root={tmp_path}", "--from", "second"]) == 0
    assert made.ran == ["second", "third"]
    made.ran.clear()
    assert run.main(["--set", f"storage.root={tmp_path}", "--only", "third", "--only", "first"]) == 0
    assert made.ran == ["first", "third"]
    with pytest.raises(SystemExit):
        run.main(["--set", f"storage.root={tmp_path}", "--only", "fourth"])


def test_online_retail_data_replays_it_with_consent_and_dates_every_step_by_its_history(tmp_path, monkeypatch):
    """`--data online-retail`: what each job is asked (the jobs themselves are tested on
    their own; this is the wiring, with each job's entry point recording its argv)."""
    asked: dict[str, list[str]] = {}
    for module in (run.generate, run.load_catalog, run.ingest_events, run.merge_profiles, run.build_features,
                   run.validate, run.train_recommender, run.report):
        monkeypatch.setattr(module, "main", lambda argv, name=module.__name__: asked.setdefault(name, argv) and 0)
    monkeypatch.setattr(run, "landed_summary", lambda _config: "summary")
    steps = ["generate", "load-catalog", "ingest", "merge-profiles", "build-features", "validate", "train", "report"]
    argv = ["--set", f"storage.root={tmp_path}", "--data", "online-retail", *[a for s in steps for a in ("--only", s)]]
    assert run.main(argv) == 0
    assert asked["jobs.generate"][-3:] == ["--from", "online-retail", "--grant-consent"]
    for job in ("jobs.build_features", "jobs.validate", "jobs.report"):
        assert asked[job][-2:] == ["--as-of", "2011-12-10T00:00:00+00:00"], job
    # Every step: the guest checkouts (quarantined by design) within the quarantine limits; train's defaults.
    assert asked["jobs.train_recommender"] == ["--env", "local", "--set", f"storage.root={tmp_path}",
                                               "--set", "quality.max_quarantine_rate=0.15",
                                               "--set", "monitoring.max_quarantine_rate=0.15"]
    # The synthetic world (the default) gets the faults, its own end, and test and
    # validation periods of a fifth of its 14 days; a period the caller set is kept.
    asked.clear()
    assert run.main(["--set", f"storage.root={tmp_path}", "--set", "recommend.train.test_days=4", "--data", "synthetic",
                     *[a for s in ("generate", "validate", "train") for a in ("--only", s)]]) == 0
    assert "--faults" in asked["jobs.generate"] and "online-retail" not in asked["jobs.generate"]
    assert asked["jobs.validate"][-2:] == ["--as-of", run._world_end(load_config("local"))]
    assert asked["jobs.train_recommender"] == ["--env", "local", "--set", f"storage.root={tmp_path}",
                                               "--set", "recommend.train.test_days=4",
                                               "--set", "recommend.blend.validation_days=2"]


def _execute_notebooks(notebooks: list[Path]) -> None:
    """Run each notebook top to bottom; a failing cell, or one running past the timeout,
    raises. One kernel of this Python runs them in turn (a kernel and a JVM for each cost
    more than the notebooks' own work). Its names are cleared before each notebook (`%reset -f`), so
    one that leans on another's variables or imports still fails. What the kernel keeps
    from one to the next: its working folder (all three sit in notebooks/), os.environ,
    imported modules, matplotlib's settings, and the Spark session with its settings (each
    builds the same one from config)."""
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    # The async manager nbclient expects: with the blocking one, a cell's timeout is not enforced.
    kernel = AsyncKernelManager(kernel_name="python3")
    try:
        for notebook in notebooks:
            book = nbformat.read(notebook, as_version=4)
            book.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
            client = NotebookClient(book, km=kernel, timeout=600,
                                    resources={"metadata": {"path": str(notebook.parent)}})
            try:
                client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()
    finally:
        if kernel.has_kernel:
            run_sync(kernel.shutdown_kernel)(now=True)


@pytest.mark.spark
def test_the_demo_runs_every_step_and_fetches_rows_over_http(tmp_path, monkeypatch):
    """`make demo`'s command and world (200 users: a smaller one leaves train nobody to
    evaluate), in a subprocess as a user runs it."""
    command = [sys.executable, "-m", "jobs.cli", "run", "--set", f"storage.root={tmp_path}", "--retries", "0"]
    # A smaller ALS, as the recommender's own tests use: ten iterations of a rank-32 model
    # under the suite's interpreted expressions overflow a task's stack.
    for setting in (*SPARK_TEST_SETTINGS, "recommend.als.max_iter=4", "recommend.als.rank=4", "recommend.als.blocks=2"):
        command += ["--set", setting]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    out = finished.stdout
    state = json.loads((tmp_path / run.STATE_FILE).read_text())
    assert [name for name, step in state["steps"].items() if step["status"] == "succeeded"] == run.STEP_NAMES
    # Each step that writes a table says its rows as it ends.
    assert re.search(r"\] ingest ok in [\d.]+ s, bronze\.events \d+ rows \(total", out), out[:3000]
    assert state["steps"]["publish"]["rows"]["gold.email_content"] > 0
    fetched = [line for line in out.splitlines() if line.startswith("GET /v1/content/")]
    assert len(fetched) == run.FETCHED_USERS and all(line.endswith("-> 200") for line in fetched)
    assert '"content_version"' in out and "gold.recommendations:" in out
    # Names merge-profiles stored encrypted reach the greetings decrypted, and only there.
    config = load_config("local", [f"storage.root={tmp_path}"])
    with sqlite3.connect(config.under_root(config.serving.sqlite.path)) as store:
        bodies = [json.loads(body) for (body,) in store.execute("SELECT body FROM records WHERE kind = 'content'")]
    names = {body["greeting"]["first_name"] for body in bodies if body.get("greeting")} - {None}
    assert names and names <= set(generator._FIRST_NAMES), sorted(names)[:5]
    assert re.search(r"\(champion\), test ndcg@10: .*blend \d\.\d{3}.*popular \d\.\d{3}", out), out[-2000:]
    page = (tmp_path / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert f"dashboard: {tmp_path / 'dashboard' / 'index.html'}" in out
    # The fetch's requests reached the dashboard through the API's /metrics.
    assert '<figure class="plot" id="api">' in page and '<figure class="plot" id="throughput">' in page
    # The audit report renders with the demo's tables: every section drew from them.
    report = (tmp_path / "quality" / "report.html").read_text(encoding="utf-8")
    assert f"quality report: {tmp_path / 'quality' / 'report.html'}" in out
    for plot in ("completeness", "idle", "quarantine", "segments"):
        assert f'<figure class="plot" id="{plot}">' in report, plot
    assert '<p id="duplicates">no email is shared by two profiles' in report  # the generator's emails are unique
    assert not re.search(r"u-\d+", report), "a user id on the report"
    # The notebooks run top to bottom on the demo's tables (each asserts it found data).
    monkeypatch.setenv("TAILOR_STORAGE_ROOT", str(tmp_path))
    _execute_notebooks(sorted((ROOT / "notebooks").glob("*.ipynb")))
    key = (tmp_path / "secrets" / "demo-api-key").read_text()
    assert key not in out and key not in finished.stderr
