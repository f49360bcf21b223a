"""rmexp.report on a private fake MLflow store, and rmexp.overopt's KL formula and figure."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from rmexp import overopt, report

from .test_study import SWEEPS, make_sweep


def base_models_replicated(seeds: int = 2):
    """8 bases x ``seeds`` seeds; pretrained beats random init; BoN gain follows RB2 with seed noise."""
    rng = np.random.default_rng(11)
    out = []
    for fam in ("llama", "gpt2"):
        for size, init in (("xs", "pretrained"), ("s", "pretrained"), ("m", "pretrained"), ("s", "random")):
            skill = {"xs": 0.45, "s": 0.55, "m": 0.6}[size] if init == "pretrained" else 0.3
            for s in range(seeds):
                rb2 = skill + 0.01 * rng.normal()
                params = {"model": f"{'random' if init == 'random' else 'toy'}_{fam}_{size}", "model.family": fam,
                          "model.size": size, "model.init": init, "seed": s}
                out.append((params, {"rb2/overall": rb2, "rb2/overall_se": 0.02, "eval/acc": 0.5 + 0.4 * rb2,
                                     "bon/gain_16": 0.4 * rb2 + 0.01 * rng.normal(), "bon/gold_16": 0.4 + rb2,
                                     "rb2/Factuality": 0.25 + 0.1 * s + (0.2 if init == "pretrained" else 0.0)}))
    return out


def overopt_trials():
    out = []
    for noise in (0.0, 0.3, 0.45):
        q = 1.0 - 2 * noise  # RM quality
        for kl_coef, kl in ((0.02, 6.0), (0.2, 3.0), (1.0, 1.0)):
            m = {f"bon/gain_{n}": q * 0.05 * math.log(n) for n in (1, 2, 4, 8, 16, 32, 64)}
            m |= {f"bon/proxy_gain_{n}": 0.3 * math.log(n) for n in (1, 2, 4, 8, 16, 32, 64)}
            m |= {"ppo/kl": kl, "ppo/gold_delta": q * 0.1 * kl - (1 - q) * 0.05 * kl ** 2, "ppo/proxy_delta": 0.4 * kl,
                  "rb2/overall": 0.3 + 0.3 * q}
            out.append(({"data.label_noise": noise, "downstream.ppo.kl_coef": kl_coef, "seed": 0}, m))
    return out


def test_bon_kl_formula_hand_worked_and_against_a_fine_discrete_policy():
    assert overopt.bon_kl(1) == 0.0
    assert overopt.bon_kl(2) == pytest.approx(math.log(2) - 0.5)        # 0.193147
    assert overopt.bon_kl(16) == pytest.approx(2.772589 - 0.9375, abs=1e-6)
    # a policy uniform over M distinct-reward samples; best-of-n picks rank i with prob (i/M)^n - ((i-1)/M)^n
    m = 200_000
    for n in (2, 4, 16, 64):
        i = np.arange(1, m + 1)
        p = (i / m) ** n - ((i - 1) / m) ** n
        kl = float(np.sum(p[p > 0] * np.log(p[p > 0] * m)))
        assert kl == pytest.approx(overopt.bon_kl(n), abs=2e-3)
    with pytest.raises(ValueError):
        overopt.bon_kl(0)


def test_bon_points_and_figure(tmp_path):
    import pandas as pd

    trials = pd.DataFrame([{**{f"param:{k}": str(v) for k, v in p.items()}, **m} for p, m in overopt_trials()])
    pts = overopt.bon_points(trials.iloc[0].to_dict())
    assert [p[0] for p in pts] == [1, 2, 4, 8, 16, 32, 64]
    assert pts[-1][1] == pytest.approx(math.log(64) - 63 / 64) and pts[-1][3] == pytest.approx(0.3 * math.log(64))
    path = overopt.plot_overoptimization(trials, tmp_path / "f" / "over.png",
                                         {"x": {"ppo/kl": [(0, 0.0), (1, 1.0)], "ppo/gold": [(0, 0.1), (1, 0.2)]}})
    assert path.exists() and path.stat().st_size > 10_000


def test_report_on_a_fake_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trials = base_models_replicated()
    parent = make_sweep(uri, "base_models", trials, tmp_path / "artifacts")
    from mlflow import MlflowClient

    from rmexp.tracking import COMMAND_TAG
    # the sweep's own command line, as the driver tags its parent run (the store's uri is in the header)
    MlflowClient(tracking_uri=uri).set_tag(parent, COMMAND_TAG, "python -m rmexp +sweep=base_models "
                                           f"sweep.replicates=2 tracking.uri={uri}")
    over = make_sweep(uri, "overoptimization", overopt_trials(), tmp_path / "artifacts")
    out = tmp_path / "docs" / "results.md"
    rc = report.main(["--studies", "base_models", "overoptimization", "epochs", "--out", str(out),
                      "--tracking-uri", uri, "--n-boot", "200"])
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# Results") and "python -m rmexp.report --studies base_models" in text
    assert f"`python -m rmexp +sweep=base_models sweep.replicates=2` — parent run `{parent}`, 16 finished trials, " \
           "8 configs" in text
    # untagged: the study file's command (sweeps/overoptimization.yaml names its 3 seed replicates)
    assert f"`python -m rmexp +sweep=overoptimization sweep.replicates=3` — parent run `{over}`" in text
    # the per-domain RB2 table: toy_llama_m's Factuality is 0.45 and 0.55 over its 2 seeds -> 0.500 ± 0.050
    domains = text.split("RewardBench 2 per domain (mean ± SE; chance 0.25 except Ties):")[1].split("\n\n")[1]
    assert domains.splitlines()[0].endswith("| seeds | rb2/Factuality |")
    assert any(li.startswith("| toy_llama_m |") and li.endswith("| 2 | 0.500 ± 0.050 |") for li in domains.splitlines())
    # pretrained > random init: 2 pairs x 2 seeds, a replicate-level interval
    row = next(line for line in text.splitlines() if line.startswith("| pretrained > random-init on RB2"))
    assert "two-stage bootstrap (pairs, seeds)" in row and "**agrees**" in row
    # the headline correlation over config means, computed here independently
    by_model = {}
    for p, m in trials:
        by_model.setdefault(p["model"], []).append((m["rb2/overall"], m["bon/gain_16"]))
    x = [np.mean([a for a, _ in v]) for v in by_model.values()]
    y = [np.mean([b for _, b in v]) for v in by_model.values()]
    r = scipy.stats.pearsonr(x, y)[0]
    line = next(li for li in text.splitlines() if li.startswith("| rb2/overall | bon/gain_16 | pearson |"))
    assert f"| {r:.3f} |" in line and "| 8 | 16 |" in line
    lo, hi = [float(v) for v in line.split("|")[6].strip(" []").split(",")]
    assert (lo, hi) == pytest.approx(__import__("rmexp.stats", fromlist=["x"]).fisher_z_ci(r, 8), abs=1e-3)
    assert "ICC(1)" in text and "| rb2/overall | 8 | 16 |" in text
    # a config's mean ± SE across its two seeds
    v = [m["rb2/overall"] for p, m in trials if p["model"] == "toy_llama_m"]
    assert f"{np.mean(v):.3f} ± {np.std(v, ddof=1) / math.sqrt(2):.3f}" in text
    assert "`epochs`: not run" in text and "python -m rmexp +sweep=epochs" in text
    assert "## overoptimization" in text and "better RM -> larger best-of-64 gold gain" in text
    assert (out.parent / "figures" / "overoptimization.png").exists()
    assert (out.parent / "figures" / "base_models__rb2_overall__bon_gain_16.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_report_refuses_a_bad_study_before_reading(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: x\n")
    nodb = tmp_path / "none" / "mlflow.db"
    assert report.main(["--studies", str(bad), "--tracking-uri", f"sqlite:///{nodb}", "--out",
                        str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rmexp.report: error:") and "missing field" in err and not nodb.parent.exists()


def test_every_study_file_quotes_a_paper_number():
    import yaml

    for path in SWEEPS.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        numbers = {k: v for k, v in data["paper_numbers"].items() if k != "source"}
        assert numbers, f"{path.name}: paper_numbers quotes no number"


@pytest.mark.slow
def test_overoptimization_sweep_composes_and_runs_on_the_tiny_preset(zoo_cache, tmp_path):
    """Two corners of the over-optimisation grid (good and near-chance RM), real trials on the tiny preset."""
    import pandas as pd

    from rmexp.config import validate
    from rmexp.trial import run_trial

    from .conftest import compose_config

    rows, histories = [], {}
    for noise in (0.0, 0.45):
        cfg = compose_config(["+sweep=overoptimization", "preset=tiny", f"cache_dir={zoo_cache}",
                              f"data.label_noise={noise}", "downstream.ppo.kl_coef=0.02"])
        validate(cfg)
        assert cfg.sweep.axes["data.label_noise"] == [0.0, 0.3, 0.45] and cfg.downstream.bon.n_samples == 64
        res = run_trial(cfg, tmp_path / f"n{noise}", progress=lambda msg: None)
        for key in ("bon/gain_64", "bon/proxy_gain_64", "bon/gain_16_se", "rb2/overall_se", "ppo/kl",
                    "ppo/gold_delta", "ppo/proxy_delta"):
            assert math.isfinite(res.metrics[key]), key
        assert res.metrics["bon/proxy_gain_64"] > res.metrics["bon/proxy_gain_2"] > 0  # the RM likes its picks
        rows.append({"run_id": f"n{noise}", "param:data.label_noise": str(noise), **res.metrics})
        histories[f"n{noise}"] = res.history
    path = overopt.plot_overoptimization(pd.DataFrame(rows), tmp_path / "overopt.png", histories)
    assert path.stat().st_size > 10_000


def test_analyze_experiment_correlates_config_means_and_reports_reliability(tmp_path, capsys):
    from rmexp.analyze import analyze_experiment

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trials = base_models_replicated()
    make_sweep(uri, "base_models", trials, tmp_path / "artifacts")
    df = analyze_experiment("base_models", uri, n_boot=200, log_to_parent=False)
    out = capsys.readouterr().out
    assert "16 finished trials, 8 configs" in out and "reliability (ICC(1)" in out and "Fisher z" in out
    row = df[(df["bench"] == "rb2/overall") & (df["downstream"] == "bon/gain_16")].iloc[0]
    assert row["n"] == 8  # config means, not the 16 trials
