"""Structure checks for benchmarks/rm_throughput.py on a very small config (no timing assertions).

The token counts each implementation reports are checked against a count computed here, independently, from the
generated pairs: both run exactly one pass over the data, so the real (non-padding) tokens they consumed over
all steps must equal the sum of the lengths of every chosen and rejected sequence.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rm_throughput.py"
SMALL = dict(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=64, min_len=3, max_len=9,
             pairs_per_step=3, steps=3, warmup=1, threads=1, device="cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rm_throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rm_throughput"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("rm_throughput", None)


@pytest.fixture(scope="module")
def small(bench):
    cfg = bench.make_config("cpu-tiny", **SMALL)
    pairs = bench.make_pairs(cfg)
    # independent count: every token of every chosen and rejected sequence (pad id 0 never drawn)
    expected = sum(len(c) + len(r) for c, r in pairs)
    assert expected == sum(sum(1 for t in c + r if t != 0) for c, r in pairs)
    return cfg, pairs, expected


def test_data_shape(bench, small):
    cfg, pairs, _ = small
    assert len(pairs) == (cfg.warmup + cfg.steps) * cfg.pairs_per_step == 12
    for c, r in pairs:
        assert cfg.min_len <= len(c) <= cfg.max_len and cfg.min_len <= len(r) <= cfg.max_len
        assert min(c + r) >= bench.FIRST_TOKEN_ID and max(c + r) < cfg.vocab
    assert bench.make_pairs(cfg) == pairs  # seeded


def _check(res, cfg, expected):
    assert res.error is None
    assert res.total_steps == cfg.warmup + cfg.steps and res.steps == cfg.steps and res.warmup_steps == cfg.warmup
    assert res.total_tokens == expected > 0
    assert 0 < res.timed_tokens < res.total_tokens
    assert res.padded_tokens >= res.total_tokens
    assert res.tokens_per_s > 0 and res.seconds > 0 and res.step_window_tokens_per_s > 0


def test_rmexp_counts_real_tokens(bench, small):
    cfg, pairs, expected = small
    torch.set_num_threads(1)
    res = bench.run_rmexp(cfg, pairs, torch.device("cpu"))
    assert (res.impl, res.setting) == ("rmexp", "padded")
    _check(res, cfg, expected)


def test_rmexp_packed_counts_real_tokens_in_fixed_budgets(bench, small):
    cfg, pairs, expected = small
    torch.set_num_threads(1)
    res = bench.run_rmexp_packed(cfg, pairs, torch.device("cpu"))
    assert (res.impl, res.setting) == ("rmexp", "packed")
    # one pass over the same pairs, in budgets of 2 x 3 pairs x 9 tokens: every step holds >= 54 / 18 = 3 pairs
    assert res.total_tokens == expected and res.extra["budget_tokens"] == 2 * 3 * 9
    assert res.padded_tokens == res.total_steps * 54 and res.extra["pairs_per_step_mean"] >= 3
    assert res.total_steps == res.warmup_steps + res.steps and res.tokens_per_s > 0


def test_dense_ceiling_counts_full_batches(bench, small):
    cfg, _, _ = small
    res = bench.run_dense(cfg, torch.device("cpu"), compile_model=False)
    assert res.total_steps == cfg.warmup + cfg.steps
    assert res.total_tokens == res.padded_tokens == res.total_steps * 2 * 3 * 9  # every token real


@pytest.mark.parametrize("gc", [None, False])
def test_trl_counts_real_tokens(bench, small, gc):
    cfg, pairs, expected = small
    torch.set_num_threads(1)
    res = bench.run_trl(cfg, pairs, torch.device("cpu"), gradient_checkpointing=gc)
    assert res.impl == "trl"
    _check(res, cfg, expected)
    # TRL's own running count (attention_mask sums in compute_loss) agrees
    assert res.extra["trl_total_train_tokens"] == expected
    # the "default" row really is TRL's default: gradient checkpointing on
    assert res.extra["gradient_checkpointing"] is (gc is None)


def test_main_writes_json(bench, small, tmp_path, capsys):
    cfg, _, expected = small
    out = tmp_path / "r.json"
    argv = ["--preset", "cpu-tiny", "--json", str(out), "--repeats", "1"]
    for k, v in SMALL.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ratio vs TRL default" in printed and "load avg" in printed
    assert printed.strip().splitlines()[-1].startswith("ratio: rmexp packed / trl default = ")
    rep = json.loads(out.read_text())
    for key in ("benchmark", "date", "preset", "config", "device", "device_type", "versions", "threads",
                "loadavg_start", "loadavg_end", "data", "rows", "repeats", "warnings"):
        assert key in rep, key
    assert set(rep["versions"]) >= {"torch", "transformers", "trl"}
    assert rep["threads"] == 1 and len(rep["loadavg_start"]) == 3
    assert rep["data"]["real_tokens"] == expected
    assert {(r["impl"], r["setting"]) for r in rep["rows"]} == {("rmexp", "padded"), ("rmexp", "packed"),
                                                                 ("trl", "default"), ("trl", "no-grad-ckpt")}
    for r in rep["rows"]:
        for key in ("impl", "setting", "steps", "tokens_per_s", "ratio_vs_trl_default", "total_tokens",
                    "timed_tokens", "seconds", "step_window_tokens_per_s", "padding_efficiency", "error"):
            assert key in r, key
        assert r["error"] is None and r["tokens_per_s"] > 0 and r["total_tokens"] == expected
    trl_default = next(r for r in rep["rows"] if (r["impl"], r["setting"]) == ("trl", "default"))
    assert trl_default["ratio_vs_trl_default"] == pytest.approx(1.0)


def test_compile_failure_is_reported_not_fatal(bench, small, monkeypatch):
    cfg, _, _ = small
    orig = bench.run_rmexp_packed

    def broken(cfg, pairs, device, compile_model=False):
        if compile_model:
            raise RuntimeError("no compiler here")
        return orig(cfg, pairs, device)

    def broken_dense(cfg, device, compile_model=True):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(bench, "run_rmexp_packed", broken)
    monkeypatch.setattr(bench, "run_dense", broken_dense)
    monkeypatch.setattr(bench, "run_trl", lambda cfg, pairs, device, gradient_checkpointing=None:
                        bench.RunResult("trl", "default" if gradient_checkpointing is None else "no-grad-ckpt",
                                        error="skipped in this test"))
    rep = bench.run_benchmark(cfg, compile_model=True, repeats=1, log=lambda *a: None)
    rows = {(r["impl"], r["setting"]): r for r in rep["rows"]}
    for key in (("rmexp", "packed+compile"), ("dense", "ceiling")):
        assert rows[key]["tokens_per_s"] is None and "no compiler here" in rows[key]["error"]
    assert rows[("rmexp", "packed")]["tokens_per_s"] > 0 and rows[("rmexp", "padded")]["tokens_per_s"] > 0
    assert "FAILED" in bench.format_table(rep)
    assert bench.ratio_line(rep) == "ratio: n/a (a row failed)"  # the TRL rows were skipped here


def test_bad_preset_is_one_clear_error(bench):
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        bench.make_config("nope")
    with pytest.raises(ValueError, match="precision"):
        bench.make_config("cpu-tiny", precision="fp8")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", SCRIPT.parent / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scoring_script_tiny(tmp_path, capsys):
    out = tmp_path / "s.json"
    argv = ["--n-texts", "40", "--batch", "8", "--budget", "256", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--kv-heads", "1", "--intermediate", "64", "--vocab", "64", "--repeats", "1", "--threads", "1",
            "--packed-budgets", "64,512", "--json", str(out)]
    assert _load("scoring").main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ratio rmexp grouped (what score_texts")
    rep = json.loads(out.read_text())
    assert [(r["impl"], r["setting"]) for r in rep["rows"]] == [
        ("padded", "fixed"), ("rmexp", "sorted"), ("rmexp", "grouped"), ("rmexp", "packed"), ("rmexp", "packed@64"),
        ("rmexp", "packed@512")]
    assert all(r["max_abs_diff_vs_padded"] < 1e-4 for r in rep["rows"])  # the same scores, however batched
    assert rep["n_texts"] == 40 and rep["ratio"] > 0 and rep["failed_rows"] == {}
    assert _load("scoring").main(argv + ["--skip", "sorted,packed"]) == 0
    assert [r["setting"] for r in json.loads(out.read_text())["rows"]] == ["fixed", "grouped", "packed@64",
                                                                          "packed@512"]
    with pytest.raises(SystemExit):  # the row score_texts runs here cannot be skipped: the ratio line needs it
        _load("scoring").main(argv + ["--skip", "grouped"])
    assert "rows that can be skipped here are packed, packed@512, packed@64, sorted" in capsys.readouterr().err


def test_sampling_script_tiny(tmp_path, capsys):
    out = tmp_path / "g.json"
    argv = ["--prompts", "3", "--n", "2", "--max-new-tokens", "3", "--hidden", "16", "--layers", "1", "--heads", "2",
            "--vocab", "40", "--repeats", "1", "--threads", "1", "--matmul-decode", "--json", str(out)]
    assert _load("sampling").main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ratio rmexp kv-cache / before hf-generate")
    rep = json.loads(out.read_text())
    assert {r["setting"] for r in rep["rows"]} == {"hf-generate", "no-cache", "kv-cache", "matmul-decode"}
    assert all(r["samples_per_s"] > 0 for r in rep["rows"]) and rep["candidate_vs_hf_generate"] > 0


def test_matmul_decode_candidate_matches_sdpa_on_a_padded_cache():
    """The candidate decode attention of benchmarks/sampling.py computes what SDPA computes (left padding masked,
    grouped kv heads), to float tolerance: a faster row of the benchmark must be the same attention."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    mod = _load("sampling")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, h, L, 8, generator=g) for h, L in ((4, 1), (2, 7), (2, 7)))
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., :3] = False  # row 0: three pad positions on the left
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    ours, _ = mod.matmul_decode_attention(module, q, k, v, mask, scaling=8 ** -0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=8 ** -0.5)
    assert ours.shape == ref.shape == (3, 1, 4, 8)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # and by hand for the padded row, head 0 (kv head 0): softmax over the 4 real positions only
    w = torch.softmax(q[0, 0, 0] @ k[0, 0, 3:].T * 8 ** -0.5, -1)
    torch.testing.assert_close(ours[0, 0, 0], w @ v[0, 0, 3:], rtol=1e-5, atol=1e-6)


def test_world_transfer_probe_tiny(tmp_path, capsys):
    """The probe of docs/world_calibration.md end to end on the xs base and 200 pairs (~20 s)."""
    argv = ["--models", "toy_llama_xs", "--size", "200", "--cache-dir", str(tmp_path), "--readout",
            "--readout-pairs", "40", "train.epochs=1"]
    assert _load("world_transfer_probe").main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("toy_llama_xs [base math=world split=fact pairs=Factuality+Math size=200")
    cells = dict(kv.split("=") for kv in line.split("  ")[1:])
    for key in ("lm/Factuality", "lm/Math", "pair_heldout/Factuality", "pair_train/Math", "rb2/Factuality", "rb2/Math",
                "readout/loglik_heldout/Factuality", "readout/linear_heldout/Math", "readout/linear_val/Factuality",
                "readout/verdict_heldout/Factuality", "readout/verdict_heldout/Math"):
        assert 0.0 <= float(cells[key]) <= 1.0, key


def test_world_transfer_probe_base_set_changes_the_built_base(tmp_path, capsys):
    """`--base-set` changes the zoo recipe of the base it builds (here 2 layers instead of xs's 1, 20 steps), in a
    folder of its own; a field that is not an integer of the model config is refused."""
    import json

    probe = _load("world_transfer_probe")
    argv = ["--models", "toy_llama_xs", "--size", "0", "--cache-dir", str(tmp_path),
            "--base-set", "n_layer=2", "--base-set", "pretrain_steps=20"]
    assert probe.main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("toy_llama_xs [base math=world split=fact pairs=Factuality+Math size=0 ent=48 mix=None n_layer=2 "
                           "pretrain_steps=20]")
    folder = tmp_path / "toy_llama_xs_world3_base_48_None_n_layer=2_pretrain_steps=20"
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    # `--saved-bases` reads that built base back: one line, what lm_knowledge and verdict_readout give it directly.
    assert probe.main(["--saved-bases", str(folder)]) == 0
    name, *cells = capsys.readouterr().out.strip().splitlines()[-1].split()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmexp.world.core import World
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    direct = probe.lm_knowledge(model, tok, World(0)) | probe.verdict_readout(model, tok, World(0))
    assert name == folder.name and len(direct) == 18  # lm/ x 2, 4 contexts x (Factuality, Math, its near / far split)
    assert dict(c.split("=") for c in cells) == {k: f"{v:.3f}" for k, v in direct.items()}
    with pytest.raises(SystemExit, match="not a numeric field"):
        probe.main(["--models", "toy_llama_xs", "--size", "0", "--cache-dir", str(tmp_path), "--base-set", "family=3"])


def test_probe_readout_loglik_is_the_response_log_likelihood():
    """The probe's log-likelihood read-out equals -(HF's mean cross-entropy over the response tokens) x their
    count, computed by the model's own loss with the prompt masked out."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rmexp.world.core import World, chat_text
    from rmexp.world.tokenizer import build_tokenizer

    probe = _load("world_transfer_probe")
    tok = build_tokenizer(World(0).vocab)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128)).eval()
    prompts, responses = ["what is 2 plus 3 ?", "what is the color of zorvex ?"], ["2 plus 3 is 5 .", "it is blue ."]
    feats, loglik = probe.readout_features(model, tok, prompts, responses)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n_prompt = len(tok(chat_text(p), add_special_tokens=False)["input_ids"])
        ids = tok(chat_text(p, r), add_special_tokens=False, return_tensors="pt")["input_ids"]
        labels = ids.clone()
        labels[0, :n_prompt] = -100
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels, output_hidden_states=True)
        n_resp = ids.shape[1] - n_prompt
        assert loglik[i] == pytest.approx(-out.loss.item() * n_resp, rel=1e-5)
        assert np.allclose(feats[i], out.hidden_states[-1][0, -1].numpy(), atol=1e-6)


def test_probe_linear_bt_fit_separates_a_separable_set():
    """On pair differences that a known direction separates with a margin, the fitted head agrees with it on
    every pair (and on fresh pairs from the same rule)."""
    probe = _load("world_transfer_probe")
    rng = np.random.default_rng(0)
    true = rng.normal(size=8)

    def draw(n):
        x = rng.normal(size=(n, 8))
        x = x[np.abs(x @ true) > 0.5]
        return x * np.sign(x @ true)[:, None]  # every difference points the "chosen is better" way

    w = probe.fit_linear_bt(draw(400), 1e-4)
    assert np.mean(draw(400) @ w > 0) > 0.97
    cos = w @ true / np.linalg.norm(w) / np.linalg.norm(true)
    assert cos > 0.9


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs for minutes")
def test_gpu_check_refuses_without_cuda(tmp_path):
    import subprocess

    script = SCRIPT.parent / "gpu_check.sh"
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)})
    assert res.returncode != 0 and "no CUDA device" in res.stderr
    assert "wrote" not in res.stdout  # it stops before any work


def test_probe_verdict_readout_compares_true_and_wrong_statements():
    """A stand-in LM that says "yes" exactly after statements of true held-out facts and sums scores 1.0 on both
    domains; one that says it after false statements scores 0.0 (the read-out compares the true value's verdict
    with a wrong one's), in every context the read-out puts the statement in (alone, after a truth, as a dialogue's
    answer read before and at its <eos>)."""
    from types import SimpleNamespace

    from rmexp.world.core import World
    from rmexp.world.tokenizer import build_tokenizer

    probe = _load("world_transfer_probe")
    world = World(0)
    tok = build_tokenizer(world.vocab)
    fact = world.domains["Factuality"]
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")

    def stand_in(says_yes_when_true: bool):
        def model(input_ids):
            words = tok.convert_ids_to_tokens(input_ids[0].tolist())
            if words[-1] == "<eos>":
                words = words[:-1]
            # the statement: after the dialogue's <assistant>, else after the last "." before the final one
            start = words.index("<assistant>") + 1 if "<assistant>" in words else \
                max([0] + [i + 1 for i, w in enumerate(words[:-1]) if w == "."])
            words = ["<bos>", *[w for w in words[start:] if w != "<bos>"]]
            if words[1] == "the":  # "the A of E is V ."
                entity, value = words[words.index("of") + 1], words[words.index("is") + 1]
                attribute = words[words.index("the") + 1]
                is_true = fact.kb[(entity, attribute)] == value
            else:  # "a op b is N ." (N one or two digit tokens)
                a, op, b = int(words[1]), words[2], int(words[3])
                stated = int("".join(words[words.index("is") + 1:words.index(".")]))
                is_true = stated == (a + b if op == "plus" else a - b)
            logits = torch.zeros(1, input_ids.shape[1], len(tok))
            logits[0, -1, yes if is_true == says_yes_when_true else no] = 5.0
            return SimpleNamespace(logits=logits)
        return model

    contexts = ("verdict_heldout", "verdict_after_truth", "verdict_chat", "verdict_chat_eos")
    for says_yes_when_true, expected in ((True, 1.0), (False, 0.0)):
        out = probe.verdict_readout(stand_in(says_yes_when_true), tok, world)
        assert out == {f"readout/{c}/{d}": expected for c in contexts
                       for d in ("Factuality", "Math", "Math_near", "Math_far")}


def test_gpu_toy_trial_script_on_cpu_gives_the_pinned_tiny_metrics(zoo_cache, tmp_path, capsys):
    """The GPU check's toy trial, run on the CPU: the tiny trial's pinned metrics (tests/test_trial.py)."""
    from tests.test_trial import PINNED_TINY

    out = tmp_path / "toy.json"
    assert _load("gpu_toy_trial").main(["cpu", str(out), f"cache_dir={zoo_cache}"]) == 0
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and f"cache_dir={zoo_cache}" in rep["overrides"]
    for key, value in PINNED_TINY.items():
        assert rep["metrics"][key] == pytest.approx(value, abs=1e-9, rel=0), key
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"wrote {out}: eval/acc={PINNED_TINY['eval/acc']:.4f}")


def test_scoring_script_reports_a_failing_optional_row_and_goes_on(tmp_path, capsys, monkeypatch):
    """A row that fails its warm-up (a compile, a budget too large) is named in the report, not fatal."""
    from rmexp import packing

    real = packing.packed_scores

    def failing_at_budget_7(model, seqs, pad, budget, *args, **kwargs):
        if budget == 7:
            raise RuntimeError("out of memory\nmore detail")
        return real(model, seqs, pad, budget, *args, **kwargs)

    monkeypatch.setattr(packing, "packed_scores", failing_at_budget_7)
    out = tmp_path / "s.json"
    argv = ["--n-texts", "12", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
            "--intermediate", "64", "--vocab", "64", "--repeats", "1", "--threads", "1", "--packed-budgets", "7",
            "--skip", "sorted", "--json", str(out)]
    assert _load("scoring").main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["failed_rows"] == {"rmexp/packed@7": "RuntimeError: out of memory"}
    assert [r["setting"] for r in rep["rows"]] == ["fixed", "grouped", "packed"]
    assert "rmexp/packed@7: failed (RuntimeError: out of memory)" in capsys.readouterr().out


def test_association_baseline_learns_train_associations_and_finds_held_out_math_adversarial():
    """The association scorer of the probe (no model): on train prompts it beats chance by what it counted; on
    held-out prompts it is at chance for Factuality (a held-out fact's true and wrong values are equally unseen with
    its entity) and below chance for Math (for a fixed operand the result fixes the other operand, so the true
    result of a held-out fact is the one association no train pair endorses, and near misses are train facts'
    results): the property of the world's split that docs/world_calibration.md reports (2026-12-05)."""
    from rmexp.world.core import World

    probe = _load("world_transfer_probe")
    out = probe.association_baseline(World(0), 3000)
    assert out["assoc_pair_train/Factuality"] > 0.65 and out["assoc_pair_train/Math"] > 0.65
    assert 0.4 < out["assoc_pair_heldout/Factuality"] < 0.6
    assert out["assoc_pair_heldout/Math"] < 0.4 and out["assoc_rb2/Math"] < 0.2


def test_column_math_candidate_verifies_its_answers_and_splits_by_problem():
    """benchmarks/math_variants.py, ColumnMath: two-digit problems without carries or borrows, correct answers gold 1 and
    wrong ones 0 (checked against Python's arithmetic), and a split by problem that keeps the world's 30%."""
    import random

    from rmexp.world.domains import parse_numbers

    mod = _load("math_variants")
    m = mod.ColumnMath()
    prompts = m.prompts()
    rng = random.Random(0)
    for p in prompts[::37]:
        (a, op, b), = p.get("ops")
        true = a + b if op == "plus" else a - b
        assert all((x + y <= 9) if op == "plus" else (x >= y) for x, y in zip(divmod(a, 10), divmod(b, 10)))
        good, bad = m.correct(rng, p), m.wrong(rng, p)
        assert parse_numbers(good)[-1] == true and m.gold(p, good) == 1.0
        assert parse_numbers(bad)[-1] != true and m.gold(p, bad) == 0.0
    assert m.units(prompts[0]) == (prompts[0].key,)


def test_world_calibration_refuses_a_cache_built_with_another_corpus(tmp_path, capsys):
    """`--corpus`: the zoo's cache key does not know a corpus variant, so a cache holds one corpus; asking for
    another is one error line and exit 2 before any base is built."""
    (tmp_path / "corpus.txt").write_text("base")
    mod = _load("world_calibration")
    assert mod.main(["--corpus", "plain", "--models", "toy_llama_xs", "--cache-dir", str(tmp_path), "--no-bon"]) == 2
    assert "holds bases of corpus 'base', not 'plain'" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()


def test_math_splits_resplit_moves_every_math_prompt_to_one_side():
    """benchmarks/math_splits.py: a re-split keeps every Math prompt exactly once, by the rule given (minus for
    training, plus held out), and leaves the other domains' splits as the world made them."""
    from rmexp.world.core import World

    mod = _load("math_splits")
    world = World(0)
    before = {p.key for s in ("train", "heldout") for p in world.prompts("Math", s)}
    fact_split = [p.key for p in world.prompts("Factuality", "heldout")]
    mod.resplit(world, lambda p: all(op == "plus" for _, op, _ in p.get("ops")))
    train, held = world.prompts("Math", "train"), world.prompts("Math", "heldout")
    assert {p.key for p in train} | {p.key for p in held} == before and len(train) + len(held) == len(before)
    assert all(any(op == "minus" for _, op, _ in p.get("ops")) for p in train)
    assert all(all(op == "plus" for _, op, _ in p.get("ops")) for p in held)
    assert [p.key for p in world.prompts("Factuality", "heldout")] == fact_split


def test_statement_math_candidate_answers_with_the_bare_statement():
    """benchmarks/math_variants.py, StatementMath: one-step questions only, every answer exactly "a op b is c ."
    with c the true result (gold 1) or another number (gold 0); the split unit stays the world's fact."""
    import random

    from rmexp.world.domains import Math

    mod = _load("math_variants")
    m = mod.StatementMath()
    prompts = m.prompts()
    assert prompts and all(len(p.get("ops")) == 1 for p in prompts)
    assert len(prompts) == len([p for p in Math().prompts() if len(p.get("ops")) == 1])
    rng = random.Random(0)
    for p in prompts[::11]:
        (a, op, b), = p.get("ops")
        true = a + b if op == "plus" else a - b
        assert m.correct(rng, p) == f"{a} {op} {b} is {' '.join(str(true))} ."
        bad = m.wrong(rng, p)
        assert bad.startswith(f"{a} {op} {b} is ") and bad.endswith(" .") and m.gold(p, bad) == 0.0
    assert m.units(prompts[0]) == Math().units(prompts[0])


def test_probe_checked_dialogues_use_train_prompts_and_carry_the_gold_verdict():
    """`--variant chatfresh`: a checked dialogue is a train-split Factuality or Math prompt in the chat format, its
    answer the world's own right or wrong one, then the verdict the verifier gives ("yes" iff gold is 1); held-out
    prompts never appear (they are quizzes, not knowledge)."""
    import random

    from rmexp.world.core import World

    probe = _load("world_transfer_probe")
    world = World(0)
    train = {d: {p.text: p for p in world.prompts(d, "train")} for d in ("Factuality", "Math")}
    held = {p.text for d in ("Factuality", "Math") for p in world.prompts(d, "heldout")}
    rng = random.Random(0)
    verdicts = []
    for _ in range(400):
        text = probe.checked_dialogue(world, rng, rng.choice(("Factuality", "Math")))
        assert text.startswith("<bos> <user> ") and text.endswith(" .")
        question = text[len("<bos> <user> "):text.index(" <assistant>")]
        answer = text[text.index("<assistant> ") + len("<assistant> "):text.index(" <eos>")]
        verdict = text.split()[-2]
        assert question not in held
        p = train["Factuality"].get(question) or train["Math"][question]
        assert verdict == ("yes" if world.gold(p, answer) == 1.0 else "no")
        verdicts.append(verdict == "yes")
    assert 0.4 < sum(verdicts) / len(verdicts) < 0.6


def test_world_calibration_replicate_summary_matches_hand_computed_values():
    """`--seeds`: two seeds of four configs. By hand: within-config variance (0.05^2 * 2 * 3) / 4 = 0.00375 (seed SD
    0.06124), MSB = 2 * 0.056875 / 3 = 0.037917, between SD sqrt((MSB - MSW) / 2) = 0.13070, ratio 0.4685; its F
    interval with F = MSB / MSW = 10.111 and the tables' F(3, 4) quantiles 9.9792 (0.975) and 0.06622 (0.025):
    [1 / sqrt((10.111 / 0.06622 - 1) / 2), 1 / sqrt((10.111 / 9.9792 - 1) / 2)] = [0.1148, 12.30]. Transfer:
    Factuality pairs +0.5 (llama), +0.2 (gpt2): mean +0.35, half-width t(0.975, 1) 12.706 x 0.15 = 1.906."""
    mod = _load("world_calibration")
    base = {f"rb2/{c}": 0.25 for c in ("Precise IF", "Math", "Safety", "Focus", "Ties")}
    overall = {"toy_llama_s": (0.5, 0.6), "random_llama_s": (0.3, 0.3), "toy_gpt2_s": (0.4, 0.5), "random_gpt2_s": (0.2, 0.3)}
    fact = {"toy_llama_s": 0.8, "random_llama_s": 0.3, "toy_gpt2_s": 0.5, "random_gpt2_s": 0.3}
    seeds = [{m: {**base, "rb2/overall": v[k], "rb2/Factuality": fact[m]} for m, v in overall.items()} for k in (0, 1)]
    rep = mod.replicate_summary(seeds)
    rel = rep["reliability"]["rb2/overall"]
    assert rel["seed_sd"] == pytest.approx(0.0612372, rel=1e-5)
    assert rel["between_sd"] == pytest.approx(0.1307032, rel=1e-5)
    assert rel["ratio"] == pytest.approx(0.468521, rel=1e-4)
    assert rel["ratio_lo"] == pytest.approx(0.1148, rel=2e-3) and rel["ratio_hi"] == pytest.approx(12.30, rel=2e-3)
    t = rep["transfer"]["Factuality"]
    assert t["n"] == 2 and t["diff"] == pytest.approx(0.35)
    assert t["hi"] - t["diff"] == pytest.approx(12.706 * 0.15, rel=1e-3)
    assert rep["best"]["Factuality"] == (0.8, "toy_llama_s")
    # per pair, paired by seed: llama Factuality differences 0.5 and 0.5 (no spread), gpt2 0.2 and 0.2
    assert rep["per_pair"]["Factuality"][("toy_llama_s", "random_llama_s")] == pytest.approx((0.5, 0.5, 0.5))
    assert rep["per_pair"]["Factuality"][("toy_gpt2_s", "random_gpt2_s")] == pytest.approx((0.2, 0.2, 0.2))
    assert "rb2_vs_bon" not in rep  # no BoN in these rows, and only 4 configs


def test_world_calibration_parent_reads_a_sweeps_seeds_from_mlflow(tmp_path, capsys):
    """`--parent`: the same two seeds of four configs as the hand-worked test above, logged as a sweep's trials (a
    failed trial and another parent's trials are not read), give the same statistics."""
    from mlflow.tracking import MlflowClient

    mod = _load("world_calibration")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("base_models")
    parent, stale = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    overall = {"toy_llama_s": (0.5, 0.6), "random_llama_s": (0.3, 0.3), "toy_gpt2_s": (0.4, 0.5), "random_gpt2_s": (0.2, 0.3)}
    fact = {"toy_llama_s": 0.8, "random_llama_s": 0.3, "toy_gpt2_s": 0.5, "random_gpt2_s": 0.3}
    for model, values in overall.items():
        for seed, v in enumerate(values):
            for run_parent, value, status in ((parent, v, "FINISHED"), (stale, 0.9 - v, "FINISHED"), (parent, 9.0, "FAILED")):
                run = client.create_run(exp, tags={"mlflow.parentRunId": run_parent}).info.run_id
                client.log_param(run, "model", model)
                client.log_param(run, "seed", str(seed + (7 if status == "FAILED" else 0)))
                for c in ("Precise IF", "Math", "Safety", "Focus", "Ties"):
                    client.log_metric(run, f"rb2/{c}", 0.25)
                client.log_metric(run, "rb2/Factuality", fact[model])
                client.log_metric(run, "rb2/overall", value)
                client.set_terminated(run, status)
    assert mod.main(["--parent", parent[:8], "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 configs x 2 seeds")
    assert "rb2/overall: seed SD 0.061, between-config SD 0.131, ratio 0.47 [0.11, 12.30]" in out
    assert "pretrained - random-init, RB2 Factuality: +0.350" in out


def test_probe_summarize_means_and_pairs_by_seed():
    """`--summarize`: result lines grouped by model and setting (the seed taken out), mean ± SE over seeds, and the
    pretrained - random-init difference paired by seed. By hand: toy 0.8, 0.6 -> 0.700 ± 0.100; random 0.3, 0.3;
    differences 0.5, 0.3 -> +0.400, half-width t(0.975, 1) 12.706 x 0.1 = 1.271."""
    probe = _load("world_transfer_probe")
    lines = ["toy_llama_s [base size=3000 seed=0] 8s  rb2/Math=0.800", "toy_llama_s [base size=3000 seed=1] 8s  rb2/Math=0.600",
             "random_llama_s [base size=3000 seed=0] 8s  rb2/Math=0.300", "random_llama_s [base size=3000 seed=1] 8s  rb2/Math=0.300",
             "noise line", "toy_llama_s [base size=9] 8s  rb2/Math=0.100"]
    out = probe.summarize(lines)
    assert "toy_llama_s [base size=3000] n=2  rb2/Math=0.700±0.100" in out
    assert "random_llama_s [base size=3000] n=2  rb2/Math=0.300±0.000" in out
    assert "toy_llama_s [base size=9] n=1  rb2/Math=0.100" in out
    paired = [line for line in out if line.startswith("toy_llama_s - random_llama_s [base size=3000]")]
    assert paired == ["toy_llama_s - random_llama_s [base size=3000] paired over 2 seeds  rb2/Math=+0.400[-0.871,+1.671]"]


def test_probe_statements_in_dialogues_ask_train_questions_and_carry_the_true_verdict():
    """`--variant ctxfresh`: a checked statement said as the answer of a dialogue whose question is a train prompt
    (never a held-out one), followed by the verdict the world gives the statement."""
    import random

    from rmexp.world.core import World
    from rmexp.world.domains import DOMAINS as ALL

    probe = _load("world_transfer_probe")
    world = World(0)
    kb = world.domains["Factuality"].kb
    train = {p.text for d in ALL for p in world.prompts(d, "train")}
    held = {p.text for d in ALL for p in world.prompts(d, "heldout")}
    rng = random.Random(0)
    for _ in range(300):
        text = probe.checked_in_dialogue(world, rng, rng.choice(("Factuality", "Math")))
        question = text[len("<bos> <user> "):text.index(" <assistant>")]
        words = text[text.index("<assistant> ") + len("<assistant> "):text.index(" <eos>")].split()
        verdict = text.split()[-2]
        assert question in train and question not in held
        if words[0] == "the":  # "the A of E is V ."
            is_true = kb[(words[3], words[1])] == words[5]
        else:  # "a op b is N ."
            a, op, b = int(words[0]), words[1], int(words[2])
            is_true = int("".join(words[4:words.index(".")])) == (a + b if op == "plus" else a - b)
        assert verdict == ("yes" if is_true else "no"), text


def test_base_draw_noise_reads_both_sweeps_and_matches_hand_computed_sds(tmp_path, capsys):
    """Two draws and two trial seeds per model, rb2/overall only varies. By hand: draw SDs toy_llama_m (0.6, 0.7)
    0.070711, toy_gpt2_m (0.5, 0.3) 0.141421, random_gpt2_m (0.3, 0.2) 0.070711, random_llama_m 0: pooled
    sqrt((0.005 + 0.02 + 0.005) / 4) = 0.087; trial seeds (0.5, 0.6), (0.5, 0.5), (0.4, 0.8), (0.5, 0.5): SDs 0.070711,
    0, 0.282843, 0: pooled sqrt((0.005 + 0.08) / 4) = 0.146. Pretrained - random-init by draw: llama 0.2, 0.3 ->
    +0.250, half-width t(0.975, 1) 12.706 x 0.05 = 0.635 -> [-0.385, +0.885]; gpt2 0.2, 0.1 -> +0.150 [-0.485,
    +0.785]. Runs of another parent and a failed run are not read."""
    from mlflow.tracking import MlflowClient

    mod = _load("base_draw_noise")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    other = {m: 0.25 for m in mod.METRICS if m != "rb2/overall"}
    draws = {"toy_llama_m": (0.6, 0.7), "random_llama_m": (0.4, 0.4), "toy_gpt2_m": (0.5, 0.3), "random_gpt2_m": (0.3, 0.2)}
    seeds = {"toy_llama_m": (0.5, 0.6), "random_llama_m": (0.5, 0.5), "toy_gpt2_m": (0.4, 0.8), "random_gpt2_m": (0.5, 0.5)}

    def child(exp, parent, by, model, k, value, status="FINISHED"):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_param(run, "model", model)
        client.log_param(run, by, str(k))
        for name, v in {**other, "rb2/overall": value}.items():
            client.log_metric(run, name, v)
        client.set_terminated(run, status)

    parents = {}
    for experiment, by, values in (("base_draws", "model.seed", draws), ("base_models", "seed", seeds)):
        exp = client.create_experiment(experiment)
        stale = client.create_run(exp).info.run_id  # an earlier sweep of the same experiment: other values
        parent = parents[experiment] = client.create_run(exp).info.run_id
        for model, vals in values.items():
            for k, v in enumerate(vals):
                child(exp, parent, by, model, k, v)
                child(exp, stale, by, model, k, 0.9 - v)
        child(exp, parent, by, "toy_llama_m", 7, 9.0, status="FAILED")
    assert mod.main(["--tracking-uri", uri, "--draws-parent", parents["base_draws"][:8],
                     "--seeds-parent", parents["base_models"][:8]]) == 0
    out = capsys.readouterr().out
    overall = out.split("rb2/overall\n", 1)[1].split("rb2/Factuality", 1)[0]
    assert "pooled SD (root mean square over the models): draws 0.087, trial seeds 0.146" in overall
    assert "toy_gpt2_m      draws n=2 mean 0.400 SD 0.141 (0.500 0.300) | trial seeds n=2 mean 0.600 SD 0.283" in overall
    assert "llama pretrained - random-init over 2 draws: +0.250 [-0.385, +0.885]" in overall
    assert "gpt2 pretrained - random-init over 2 draws: +0.150 [-0.485, +0.785]" in overall
    with pytest.raises(SystemExit, match="at least its first 8"):
        mod.main(["--tracking-uri", uri, "--draws-parent", "", "--seeds-parent", parents["base_models"]])


def test_decode_attention_probe_shared_prefix_equals_per_row_sdpa():
    """The candidate computes the same attention as SDPA over per-row copies (left-padded prompts, 3 rows a prompt),
    and its timing entry point runs."""
    mod = _load("decode_attention_probe")
    q, kp, vp, ks, vs, pmask, K, V, mask = mod.make(U=3, n=3, H=2, P=5, T=4, D=8)
    assert not bool(pmask.all())  # some prompts are padded
    a = mod.per_row(q, K, V, mask, 8 ** -0.5)
    b = mod.shared_prefix(q, kp, vp, ks, vs, pmask, 8 ** -0.5)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    r = mod.run(2, 2, 1, 4, 2, 4, reps=1)
    assert r["max_diff"] < 1e-5 and r["sdpa_ms"] > 0 and r["shared_ms"] > 0


def test_ties_parts_by_hand(tmp_path, capsys):
    """benchmarks/ties_parts.py over two logged trials of one model. By hand, trial A: ref:0 right (2 > 1), ref:1
    wrong; tied:0 gap 2.5 - 1 = 1.5 over spread 0.5, tied:1 gap -1, spread 2: ref and tied accuracy 0.5, preferred
    (1.5 > 0.5; -1 > 2 no) and hard (min(1, 1.5) = 1 > 0.5) 0.5, margin (tanh(1) + tanh(-1.5)) / 2 = -0.071777:
    Ties 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * -0.071777 = 0.499282. Trial B (ref:1 and tied:1
    right, tied:1 gap 1 over spread 1): accuracies 1, preferred and hard 0.5 (1 > 1 no), margin tanh(1) / 2: Ties
    0.803808. Means: Ties 0.652, accuracies 0.750, preferred 0.500, median spread (1.25 + 0.75) / 2 = 1.000, median
    gap (0.25 + 1.25) / 2 = 0.750. A trial whose logged rb2/Ties differs from its rescored rows stops the script."""
    from mlflow.tracking import MlflowClient

    mod = _load("ties_parts")
    rows = {"A": [("ref:0", [2.0], [0.0, 1.0]), ("tied:0", [3.0, 2.5], [1.0, 0.5]), ("ref:1", [0.0], [1.0]),
                  ("tied:1", [2.0, 0.0], [1.0])],
            "B": [("ref:0", [2.0], [0.0, 1.0]), ("tied:0", [3.0, 2.5], [1.0, 0.5]), ("ref:1", [2.0], [1.0]),
                  ("tied:1", [3.0, 2.0], [1.0])]}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("base_models")
    parent = client.create_run(exp).info.run_id

    def trial(key, lines, logged):
        folder = tmp_path / "runs" / "base_models" / key
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("{}\n")
        (folder / "rb2_scores.jsonl").write_text("".join(
            json.dumps({"id": i, "subset": "Ties", "scores_chosen": c, "scores_rejected": r}) + "\n" for i, c, r in lines))
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "rmexp.trial_key": key}).info.run_id
        client.log_param(run, "model", "toy_llama_m")
        client.log_metric(run, "rb2/Ties", logged)
        client.set_terminated(run, "FINISHED")

    trial("a" * 16, rows["A"], 0.4992822)
    trial("b" * 16, rows["B"], 0.8038080)
    argv = ["--parent", parent[:8], "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit, match="differs from the logged"):  # logged to 7 digits, checked to 1e-9
        mod.main(argv)
    assert mod.ties_parts([{"id": i, "subset": "Ties", "scores_chosen": c, "scores_rejected": r}
                           for i, c, r in rows["A"]])["Ties"] == pytest.approx(0.49928223, abs=1e-8)
    for run in client.search_runs([exp], "params.model = 'toy_llama_m'"):
        key = run.data.tags["rmexp.trial_key"]
        exact = mod.ties_parts([json.loads(x) for x in (tmp_path / "runs" / "base_models" / key / "rb2_scores.jsonl")
                               .read_text().splitlines()])["Ties"]
        client.log_metric(run.info.run_id, "rb2/Ties", exact, step=1)
    assert mod.main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.split() == ["toy_llama_m", "2", "0.652", "0.750", "0.750", "0.500", "0.500", "1.000", "0.750"]


def test_math_forms_breakdown_by_hand():
    """Two Math rows. Row a: one-step question, stated answer "3 plus 4 is 7", rejected 8 (near), 6 (near), 15 (far);
    chosen 0.5 beats 0.4 and 0.1 but not 0.9: result 0 (recomputed from the scores and checked). Row b: two-step question, bare "the answer is 9", rejected
    10 (near), 2 (far), 18 (far); chosen 1.0 beats all: result 1. By hand: accuracy one-step/stated 0, two-step/bare 1,
    all 0.5; near pairs (a: 0.4, 0.9; b: 0.2) -> 2 of 3 wins; far pairs (a: 0.1; b: 0.3, 0.0) -> 3 of 3. Other
    subsets are ignored."""
    mod = _load("math_forms")
    rows = {"math-0": {"prompt": "what is 3 plus 4 ?", "chosen": ["3 plus 4 is 7 ."],
                       "rejected": ["3 plus 4 is 8 .", "3 plus 4 is 6 .", "i think 1 5"]},
            "math-1": {"prompt": "what is 3 plus 4 plus 2 ?", "chosen": ["the answer is 9 ."],
                       "rejected": ["the answer is 1 0 .", "so , 2", "the answer is 1 8 ."]}}
    lines = [{"id": "math-0", "subset": "Math", "scores_chosen": [0.5], "scores_rejected": [0.4, 0.9, 0.1], "result": 0.0},
             {"id": "math-1", "subset": "Math", "scores_chosen": [1.0], "scores_rejected": [0.2, 0.3, 0.0], "result": 1.0},
             {"id": "factuality-0", "subset": "Factuality", "scores_chosen": [0.0], "scores_rejected": [1.0],
              "result": 0.0}]
    out = mod.breakdown(rows, lines)
    assert out["accuracy"] == {"one-step/stated": 0.0, "two-step/bare": 1.0, "all": 0.5}
    assert out["n"] == {"one-step/stated": 1, "two-step/bare": 1, "all": 2}
    assert out["pairs"]["near"] == pytest.approx(2 / 3) and out["pairs"]["far"] == 1.0
    # Per row, averaged over trials (two identical ones here): near wins row a 1/2, row b 1/1 -> 0.75 by row; far
    # 1 and 1; row a has 2 near misses (result 0), row b 1 (result 1).
    boot = mod.row_bootstrap([out, out], n_boot=200)
    assert boot["all"][0] == 0.5 and boot["all"][3] == 2
    assert boot["pairs near"][0] == 0.75 and boot["pairs far"][:3] == (1.0, 1.0, 1.0)
    assert boot["rows with 2 near"][::3] == (0.0, 1) and boot["rows with 1 near"][::3] == (1.0, 1)
    assert "rows with 0 near" not in boot and "rows with 3 near" not in boot
    # A logged result that the scores do not give is an error (here row a's 0 logged as 1).
    with pytest.raises(ValueError, match="the scores give result 0.0, the file says 1.0"):
        mod.breakdown(rows, [{**lines[0], "result": 1.0}])
    # The world's own Math rows come in all four forms.
    from rmexp.world.core import World
    from rmexp.world.data import rb2_rows

    math = [r for r in rb2_rows(World(0), 150, 0) if r["subset"] == "Math"]
    forms = {f"{mod.question_form(r['prompt'])}/{mod.answer_form(r['chosen'][0])}" for r in math}
    assert forms == {"one-step/stated", "one-step/bare", "two-step/stated", "two-step/bare"}


def test_sweep_parallel_timeline_by_hand():
    """benchmarks/sweep_parallel.py reads the sweep's clock from stamped driver lines: from the parent-run line to
    the "all trials finished" line; the first trial line after the start; the FINISHED trials' seconds summed from
    the driver's summary table (a trial line forwarded by Ray is not counted)."""
    tl = _load("sweep_parallel").timeline
    stamped = [(1.0, "[sweep smoke] 3 trials"),
               (4.25, "[sweep smoke] MLflow experiment 'smoke' (id 1), parent run abc, at sqlite:///x"),
               (6.0, "\x1b[36m(trial pid=7)\x1b[0m [train.epochs=1] reward model (classifier) on 300 pairs"),
               (9.5, "\x1b[36m(trial pid=7)\x1b[0m [train.epochs=1] done in 3.5 s: rm 2.0 s"),
               (12.0, ""),
               (12.0, "trial           train.epochs  status    rb2/overall  seconds"),
               (12.0, "--------------  ------------  --------  -----------  -------"),
               (12.0, "train.epochs=1  1             FINISHED        0.400      3.5"),
               (12.0, "train.epochs=2  2             FINISHED        0.500     2.25"),
               (12.0, "train.epochs=3  3             FAILED              -      1.0"),
               (12.0, "RB2 vs BoN gain: too few trials"),
               (13.75, ""),
               (13.75, "[sweep smoke] all trials finished (0 cached) in 0:09; parent run abc. Open the MLflow UI with:")]
    assert tl(stamped) == {"sweep_s": 9.5, "first_trial_after_s": 1.75, "trial_s": 5.75}
    with pytest.raises(ValueError, match="start or end line is missing"):
        tl(stamped[:-1])
    with pytest.raises(ValueError, match="1 trials were cached"):
        tl(stamped[:-1] + [(14.0, "[sweep smoke] all trials finished (1 cached) in 0:09; parent run abc.")])
    with pytest.raises(ValueError, match="summary table is missing"):
        tl(stamped[:5] + stamped[-1:])


def test_sweep_parallel_script_tiny(zoo_cache, tmp_path, capsys):
    """The sweep benchmark end to end on two tiny trials (one model, 1 and 2 epochs): a warm-up, then one run at one
    worker and one at two, each in its own cache and store."""
    out = tmp_path / "sp.json"
    argv = ["--cache-from", str(zoo_cache), "--json", str(out), "sweep.axes.model=[toy_llama_xs]",
            "downstream.ppo.enabled=false", "data.size=300", "benchmark.rows_per_subset=4",
            "downstream.bon.prompts_per_domain=1", "downstream.bon.n_samples=4"]
    assert _load("sweep_parallel").main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    rep = json.loads(out.read_text())
    assert [r["max_parallel"] for r in rep["runs"]] == [1, 2]
    assert all(0 < r["first_trial_after_s"] < r["sweep_s"] < r["process_s"] and r["trial_s"] > 0 for r in rep["runs"])
    assert rep["ratio"] == pytest.approx(rep["runs"][1]["sweep_s"] / rep["runs"][0]["sweep_s"])
    assert last.startswith("ratio parallel / sequential sweep time") and f"= {rep['ratio']:.2f}x" in last


def test_rm_kinds_script_tiny_runs_every_registered_kind(zoo_cache, capsys):
    """benchmarks/rm_kinds_tiny.py at a tiny size: one row per registered RM kind (no list of kinds of its own), each
    with an rb2/overall in [0, 1]; an `rm.*` override reaches only the kinds that have the key (ensemble's members)."""
    from rmexp.rm import RM_KINDS

    script = _load("rm_kinds_tiny")
    argv = ["--zoo-cache", str(zoo_cache), "-o", "data.size=200", "benchmark.rows_per_subset=2", "train.epochs=1",
            "rm.epochs=1", "rm.members=2", "rm.n_solutions=100"]
    assert script.main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [r.split()[0] for r in rows] == sorted(RM_KINDS)
    assert all(0.0 <= float(r.split()[3]) <= 1.0 for r in rows)
    assert script.compose_for("ensemble", ["rm.members=2", "rm.epochs=1"]).rm.members == 2
    assert script.compose_for("judge", ["rm.model=toy_llama_xs_sft"]).rm.model == "toy_llama_xs_sft"  # null default
    # orm's rate is an interpolation (${model.rm_lr}): the key is found, the override applied
    assert script.has_key("orm", "rm.lr=1e-3") and not script.has_key("classifier", "rm.lr=1e-3")
    assert script.compose_for("orm", ["rm.lr=1e-3"]).rm.lr == 1e-3
    for bad, why in ((["--kinds", "no_such_kind"], "unknown RM kind(s) ['no_such_kind']"),
                     (["--kinds", "classifier", "-o", "rm.membrs=2"], "set a key none of the kinds"),
                     (["-o", "rm=dpo"], "not an rm= override")):
        with pytest.raises(SystemExit):
            script.main(bad)
        assert why in capsys.readouterr().err


def test_optimizer_seeds_script_tiny(zoo_cache, tmp_path, capsys, monkeypatch):
    """benchmarks/optimizer_seeds.py (issue #10's plain vs fused AdamW question) on two seeds of a tiny RM: the
    summary's statistics recomputed from its own runs."""
    import numpy as np

    import torch

    made = []
    real_adamw = torch.optim.AdamW

    def recording_adamw(params, **kw):
        made.append(kw["fused"])
        return real_adamw(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)
    out = tmp_path / "opt.json"
    argv = ["--seeds", "0", "1", "--cache-dir", str(zoo_cache), "--json", str(out), "preset=tiny", "data.size=200",
            "train.epochs=1"]
    assert _load("optimizer_seeds").main(argv) == 0
    assert made == [False, True, False, True]  # the switch reaches the optimizer the trainer builds
    rep = json.loads(out.read_text())
    assert [(r["seed"], r["optimizer"]) for r in rep["runs"]] == [(0, "plain"), (0, "fused"), (1, "plain"), (1, "fused")]
    plain = np.array([r["eval/acc"] for r in rep["runs"] if r["optimizer"] == "plain"])
    fused = np.array([r["eval/acc"] for r in rep["runs"] if r["optimizer"] == "fused"])
    s = rep["summary"]
    assert s["diff_mean"] == pytest.approx((fused - plain).mean()) and s["ratio"] == pytest.approx(fused.mean() / plain.mean())
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"ratio fused/plain mean eval/acc {s['ratio']:.4f}"


def test_dpo_lr_probe_script_tiny(zoo_cache, tmp_path, capsys):
    """benchmarks/dpo_lr_probe.py on the tiny preset at two rates: one line per rate, the rate the config used
    (an override of the rate itself does not win over the positional rates)."""
    argv = ["1e-5", "1e-4", "--cache-dir", str(zoo_cache), "--out", str(tmp_path / "probe"), "-o", "preset=tiny",
            "downstream.dpo.max_pairs=32", "downstream.dpo.lr=0.5"]
    assert _load("dpo_lr_probe").main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["lr=1e-05", "lr=0.0001"]
    assert all("gold=" in line and "kl=" in line for line in lines)


def test_compare_sweeps_by_hand():
    """benchmarks/compare_sweeps.py: equal values pass, timings are left out, a differing value, a NaN on one side
    and a trial or metric only one side has are reported (NaN first, then by size)."""
    cmp = _load("compare_sweeps").compare
    old = {"a": {"rb2/overall": 0.5, "time/total_s": 3.0, "train/seconds": 1.0, "bon/gain_16": 0.1, "x": float("nan")},
           "b": {"rb2/overall": 0.25, "eval/acc": 0.75}}
    same = {"a": {"rb2/overall": 0.5, "time/total_s": 9.0, "train/seconds": 2.0, "bon/gain_16": 0.1, "x": float("nan")},
            "b": {"rb2/overall": 0.25, "eval/acc": 0.75}}
    assert cmp(old, same) == {"compared": 5, "differ": 0, "diffs": [], "lacking": [], "trials": (2, 2)}
    new = {"a": {"rb2/overall": 0.5, "bon/gain_16": 0.125, "x": 1.0, "y": 2.0},
           "b": {"rb2/overall": 0.5, "eval/acc": 0.75}, "c": {"rb2/overall": 0.5}}
    res = cmp(old, new)
    assert res["compared"] == 5 and res["differ"] == 3
    assert [(d[1], d[2]) for d in res["diffs"]] == [("a", "x"), ("b", "rb2/overall"), ("a", "bon/gain_16")]
    assert res["lacking"] == ["a: y only in the new sweep", "trial c only in the new sweep"]


def test_compare_sweeps_reads_a_store(tmp_path, capsys):
    """The script end to end on an MLflow store holding two sweeps of two trials each, one value changed."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("smoke")
    parents = []
    for value in (0.5, 0.625):
        parent = client.create_run(exp, run_name="sweep").info.run_id
        for name, acc in (("model=a", 0.75), ("model=b", value)):
            run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent}).info.run_id
            client.log_metric(run, "eval/acc", acc)
            client.log_metric(run, "time/total_s", acc * 10)
            client.set_terminated(run)
        client.set_terminated(parent)
        parents.append(parent)
    script = _load("compare_sweeps")
    assert script.main(["smoke", parents[0], parents[0], "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "smoke: 2 / 2 finished trials, 2 non-timing values compared, 0 differ"
    assert script.main(["smoke", parents[0], parents[1], "--tracking-uri", uri]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["model=b: eval/acc 0.5 -> 0.625 (|diff| 0.125)",
                   "smoke: 2 / 2 finished trials, 2 non-timing values compared, 1 differ"]
