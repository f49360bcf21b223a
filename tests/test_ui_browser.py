"""The MLflow UI shows a sweep's results, checked in a real browser: a smoke sweep (the fake trial: its metrics
are functions of the config) recorded into SQLite, ``mlflow server`` on a free loopback port, headless Chromium
(Debian's package, over the DevTools protocol) opening the link the sweep prints. Screenshots are kept in
``tests/artifacts/`` (git-ignored)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cdp import Browser, chromium_path, start_mlflow_server, stop
from tests.conftest import compose_config
from tests.fake_trial import fake_trial

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    """A finished ``+sweep=smoke`` (4 trials) in a SQLite store; its printed output."""
    import io
    import os

    import ray

    from rmexp import sweep as S

    tmp = tmp_path_factory.mktemp("ui")
    old = os.getcwd()
    started = not ray.is_initialized()
    if started:  # before the chdir: workers start in the driver's directory, the repo root, where `tests` imports
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    os.chdir(tmp)
    try:
        ovs = ["+sweep=smoke", f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
        out = io.StringIO()
        result = S.run_sweep(compose_config(ovs), trial_fn=fake_trial, overrides=ovs, n_boot=200, file=out)
    finally:
        if started:
            ray.shutdown()
        os.chdir(old)
    assert result.ok
    return tmp, result, out.getvalue()


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_experiment_opens_on_runs_with_nested_readable_children_and_results(smoke_store):
    from rmexp import tracking as T

    tmp, result, printed = smoke_store
    server, port = start_mlflow_server(result.tracking_uri, tmp)
    browser = Browser()
    try:
        # The page the sweep's hint names, served by this test's server instead of port 5000.
        [page] = re.findall(r"then open http://127\.0\.0\.1:5000(\S+)", T.ui_hint(result.tracking_uri,
                                                                                 result.experiment_id))
        assert f"then open http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}" \
               f"?workflowType=machine_learning" in printed
        browser.goto(f"http://127.0.0.1:{port}{page}")
        parent_name = next(t for t in [r.info.run_name for r in _runs(result)] if t.startswith("smoke "))
        text = browser.wait_for_text(parent_name, "Run Name", timeout=120)
        href = browser.js("location.href")
        assert "/runs" in href and "traces" not in href.lower() and "overview" not in href, href
        assert "No data available" not in text                      # not the GenAI traces overview
        children = sorted(t.spec.name for t in result.trials)
        assert children[0] == "model=toy_gpt2_xs,train.epochs=1"
        assert not any(c in text for c in children)                 # nested: hidden until the parent is opened
        browser.js(_CLOSE_ASSISTANT)                                # the assistant side panel, for the screenshots
        assert browser.js(_EXPAND_PARENT % repr(parent_name)), "no expander on the parent run's row"
        text = browser.wait_for_text(*children, timeout=60)
        rows = browser.js(_ROW_INDEX)
        assert rows[parent_name] < min(rows[c] for c in children), rows   # the children sit under the parent
        assert "preferences" in text                                # the Dataset column names the trial's data
        browser.screenshot(ARTIFACTS / "mlflow_experiment_runs.png")

        browser.goto(f"http://127.0.0.1:{port}/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
                     f"?workflowType=machine_learning")
        text = browser.wait_for_text("corr/pearson/rb2_overall__bon_gain_16", "sweep.axes.model", timeout=120)
        value = result.correlations.query("bench == 'rb2/overall' and downstream == 'bon/gain_16'")["pearson"].item()
        assert _shown(text, "corr/pearson/rb2_overall__bon_gain_16") == pytest.approx(value, abs=1e-3)
        browser.screenshot(ARTIFACTS / "mlflow_parent_run.png")

        child = next(t for t in result.trials if t.spec.name == children[0])
        browser.goto(f"http://127.0.0.1:{port}/#/experiments/{result.experiment_id}/runs/{child.run_id}"
                     f"?workflowType=machine_learning")
        text = browser.wait_for_text("rb2/overall", children[0], timeout=120)
        assert _shown(text, "rb2/overall") == pytest.approx(child.metrics["rb2/overall"], abs=1e-3)
        assert "preferences" in text                                # the run's dataset
        browser.screenshot(ARTIFACTS / "mlflow_child_run.png")
    finally:
        browser.close()
        stop(server)


def _shown(text: str, metric: str) -> float:
    """The value the page shows next to ``metric`` (its row in the run's metrics table)."""
    m = re.search(re.escape(metric) + r"\s+(-?[0-9][0-9.e-]*)", text)
    assert m, f"no value next to {metric} on the page"
    return float(m.group(1))


def _runs(result):
    from mlflow import MlflowClient

    client = MlflowClient(result.tracking_uri)
    return client.search_runs([result.experiment_id])


_CLOSE_ASSISTANT = "(() => { const b = document.querySelector('button[aria-label=Close]'); if (b) b.click(); })()"

# Click the expand button in the row of the run named %s (the first button of its name cell).
_EXPAND_PARENT = """(() => {
  const want = %s;
  const link = [...document.querySelectorAll('a')].find(a => a.innerText.trim() === want);
  if (!link) return false;
  const cell = link.closest('.ag-cell-wrapper') || link.parentElement.parentElement;
  const button = cell.querySelector('button');
  if (!button) return false;
  button.click();
  return true;
})()"""

# Row position (ag-grid's row-index) of every run-name link in the runs table.
_ROW_INDEX = """(() => {
  const out = {};
  for (const a of document.querySelectorAll('a')) {
    const row = a.closest('[row-index]');
    if (row) out[a.innerText.trim()] = Number(row.getAttribute('row-index'));
  }
  return out;
})()"""
