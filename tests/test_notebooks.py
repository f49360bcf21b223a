"""Execute notebooks/analysis.ipynb with nbclient against a private SQLite MLflow store built here.

The kernel is this interpreter (sys.executable), through a kernelspec written into a temporary JUPYTER_PATH, so
the test works from a clean ``pip install -e '.[dev]'`` venv whatever kernelspecs the machine has installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from .test_study import make_sweep

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
KERNEL = "rmexp-test-python"
DOMAINS = ["Factuality", "Math"]


def base_models_trials():
    """8 trials shaped like the base_models sweep, with known correlations."""
    rng = np.random.default_rng(7)
    out = []
    for fam in ("llama", "gpt2"):
        for size, init in (("xs", "pretrained"), ("s", "pretrained"), ("m", "pretrained"), ("s", "random")):
            name = f"{'random' if init == 'random' else 'toy'}_{fam}_{size}"
            skill = {"xs": 0.55, "s": 0.65, "m": 0.72}[size] if init == "pretrained" else 0.35
            skill += 0.02 * rng.normal()
            metrics = {"rb2/overall": skill, "eval/acc": 0.4 + 0.5 * skill, "rb1/overall": 0.5 + 0.3 * skill,
                       "bon/gain_16": 0.3 * skill + 0.02 * rng.normal(), "bon/gold_16": 0.5 + 0.3 * skill}
            for d in DOMAINS:
                s = skill + 0.05 * rng.normal()
                metrics[f"rb2/{d}"] = s
                metrics[f"bon/{d}/gain_16"] = 0.2 * s + 0.02 * rng.normal()
            params = {"model": name, "model.family": fam, "model.size": size, "model.init": init,
                      "train.epochs": 1}
            out.append((params, metrics))
    return out


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rmexp test (this interpreter)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_notebook_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and code[0] is params[0]
    assert 'EXPERIMENT = "base_models"' in params[0].source and "TRACKING_URI = None" in params[0].source


def test_analysis_notebook_executes(tmp_path, kernel):
    trials = base_models_trials()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = make_sweep(uri, "base_models", trials, tmp_path / "artifacts")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f'EXPERIMENT = "base_models"\nTRACKING_URI = {uri!r}\nPARENT_RUN_ID = None\nN_BOOT = 200\nSEED = 0\n'
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name=kernel,
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(
        o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    x = [m["rb2/overall"] for _, m in trials]
    y = [m["bon/gain_16"] for _, m in trials]
    r = scipy.stats.pearsonr(x, y)[0]
    assert f"pearson r = {r:.3f}" in text
    assert f"parent run {parent}, 8 finished trials" in text
    rd = scipy.stats.pearsonr([m["rb2/Math"] for _, m in trials], [m["bon/Math/gain_16"] for _, m in trials])[0]
    assert f"{rd:.3f}" in text  # per-domain table
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the scatter plots
    # the matching study ran: pretrained > random-init by construction
    assert "pretrained > random-init on RB2" in text and "agrees" in text
