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


SEEDS = 2


def base_models_trials():
    """8 configs x 2 seeds shaped like the base_models sweep, with known correlations."""
    rng = np.random.default_rng(7)
    out = []
    for fam, size, init, seed in [(f, sz, i, s) for f in ("llama", "gpt2")
                                  for sz, i in (("xs", "pretrained"), ("s", "pretrained"), ("m", "pretrained"),
                                                ("s", "random")) for s in range(SEEDS)]:
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
                      "train.epochs": 1, "seed": seed}
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
    def config_mean(metric):  # the trials come in seed pairs, config by config
        v = [m[metric] for _, m in trials]
        return [float(np.mean(v[i:i + SEEDS])) for i in range(0, len(v), SEEDS)]

    r = scipy.stats.pearsonr(config_mean("rb2/overall"), config_mean("bon/gain_16"))[0]
    assert f"pearson r = {r:.3f}" in text
    assert f"parent run {parent}, 16 finished trials" in text and "8 configs, replicates per config: [2]" in text
    rd = scipy.stats.pearsonr(config_mean("rb2/Math"), config_mean("bon/Math/gain_16"))[0]
    assert f"{rd:.3f}" in text  # per-domain table
    # the heatmap: RB2 domains x downstream outcomes over config means
    assert "heatmap: pearson r over 8 config means" in text and "Downstream average" not in text
    rf = scipy.stats.pearsonr(config_mean("rb2/Factuality"), config_mean("bon/gain_16"))[0]
    heat = text[text.index("heatmap:"):text.index("paper (RB2 Figure 3")]
    assert f"{rf:.3f}" in heat and "Factuality 0.94" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # scatter plots and the heatmap
    assert "ICC(1)" in text
    # the matching study ran: pretrained > random-init by construction, 2 pairs x 2 seeds (replicate-level)
    row = next(line for line in text.splitlines() if line.startswith("pretrained > random-init on RB2"))
    assert "agrees" in row
