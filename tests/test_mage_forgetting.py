"""benchmarks/mage_forgetting.py: the exposure measure on hand-made usage counts, and a bad --watch refused
before anything loads; benchmarks/mage_verdict.py running a run configuration (the commands it would run)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from repo_scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/mage_forgetting.py")


def fake_method(usage_rows, frozen_log):
    layer = SimpleNamespace(name="image.3", usage=torch.tensor(usage_rows, dtype=torch.float))
    return SimpleNamespace(adapters=SimpleNamespace(moe_layers=lambda: [layer]), frozen_log=frozen_log)


def test_exposure_counts_only_experts_the_new_step_trained(script):
    # step 0 used experts 0-3 (40/30/20/10); activate-freeze protected 0 and 1; step 1 used 1, 2 and 4.
    method = fake_method([[40, 30, 20, 10, 0], [0, 50, 25, 0, 25]], {0: {"image.3": [0, 1]}})
    assert script.exposure(method, 1) == {"image.3": 0.2}  # expert 2 only: trained by step 1, not frozen
    method = fake_method([[40, 30, 20, 10, 0], [0, 50, 25, 0, 25]], {0: {"image.3": [0]}})
    assert script.exposure(method, 1) == {"image.3": 0.5}  # expert 1 now unprotected too


def test_a_watch_outside_the_learned_steps_is_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--steps", "2", "--watch", "2"])
    assert "--watch 2 must name one of the 2 steps learned" in capsys.readouterr().err


def test_the_verdict_script_runs_a_run_configuration_into_its_own_files(tmp_path, monkeypatch):
    verdict = load_script("benchmarks/mage_verdict.py")
    commands = []
    monkeypatch.setattr(verdict.subprocess, "run", lambda command, **kw: commands.append(command))
    verdict.main(["--seeds", "30,31", "--config", str(verdict.ROOT / "configs/mage_coverage_uniil_offline_fast.json"),
                  "--out-dir", str(tmp_path)])
    assert len(commands) == 2
    first = commands[0]
    assert first[first.index("--config") + 1].endswith("configs/mage_coverage_uniil_offline_fast.json")
    assert "--scenario" not in first and "--profile" not in first, "the file names the scenario and the profile"
    assert first[first.index("--methods") + 1] == "zeroshot,moe-adapters-ddas,mage-noattr,mage"
    assert first[first.index("--out") + 1] == str(tmp_path / "faithful-mage_coverage_uniil_offline_fast-seed30.json")


def test_reuse_unchanged_copies_the_plain_runs_and_merges_the_new_ones(tmp_path, monkeypatch):
    verdict = load_script("benchmarks/mage_verdict.py")
    plain = {"scenario": "dil-emoji", "profile": "fast", "model": "m", "seed": 30, "tasks": [], "split": None,
             "methods": {name: {"metrics": {"last": value, "avg": value}, "trainable_params": 0, "train_seconds": 0.0} for name, value in
                         [("zeroshot", 20.0), ("moe-adapters-ddas", 90.0), ("mage-noattr", 91.0), ("mage", 92.0)]}}
    (tmp_path / "faithful-dil-emoji-fast-seed30.json").write_text(json.dumps(plain))
    runs = []

    def fake_run(command, **kw):  # what the CLI would write: the methods asked for
        methods = command[command.index("--methods") + 1].split(",")
        runs.append(methods)
        out = {**plain, "methods": {m: {"metrics": {"last": 99.0, "avg": 99.0}, "trainable_params": 0, "train_seconds": 0.0, "options": {"freeze_coverage": 0.9}}
                                    for m in methods}}
        Path(command[command.index("--out") + 1]).write_text(json.dumps(out))

    monkeypatch.setattr(verdict.subprocess, "run", fake_run)
    verdict.main(["--seeds", "30", "--config", str(verdict.ROOT / "configs/mage_coverage_dil_emoji_fast.json"),
                  "--reuse-unchanged", "--out-dir", str(tmp_path)])
    assert runs == [["mage-noattr", "mage"]], "only the methods the file changes run"
    merged = json.loads((tmp_path / "faithful-mage_coverage_dil_emoji_fast-seed30.json").read_text())
    assert {m: e["metrics"]["last"] for m, e in merged["methods"].items()} == {
        "zeroshot": 20.0, "moe-adapters-ddas": 90.0, "mage-noattr": 99.0, "mage": 99.0}
    assert merged["methods"]["moe-adapters-ddas"]["copied_from"] == "faithful-dil-emoji-fast-seed30.json"
    assert not list(tmp_path.glob("*.part.json"))


def test_the_freeze_coverage_option_reads_none_or_a_share(script, capsys):
    assert script.coverage_option("none") is None and script.coverage_option("0.9") == 0.9
    for bad in ("1.5", "0", "most"):
        with pytest.raises(SystemExit):
            script.main(["--freeze-coverage", bad])
        assert "--freeze-coverage" in capsys.readouterr().err


def test_frozen_counts_take_the_union_of_the_steps_so_far(script):
    method = fake_method([[5, 3, 0, 0], [0, 0, 4, 1]], [{"image.3": [0, 1]}, {"image.3": [1, 2]}])
    assert script.frozen_counts(method, 0) == {"image.3": 2}
    assert script.frozen_counts(method, 1) == {"image.3": 3}, "an expert frozen by two steps counts once"


def test_merge_into_refuses_a_side_run_of_another_seed_and_keeps_the_file(tmp_path):
    verdict = load_script("benchmarks/mage_verdict.py")
    held = {"scenario": "dil-emoji", "profile": "fast", "model": "m", "seed": 30, "tasks": [], "split": None,
            "methods": {"zeroshot": {"metrics": {"last": 20.0}}}}
    path = tmp_path / "held.json"
    path.write_text(json.dumps(held))

    def other_seed(methods, out):
        out.write_text(json.dumps({**held, "seed": 31, "methods": {m: {"metrics": {"last": 1.0}} for m in methods}}))

    with pytest.raises(SystemExit, match="differs in seed"):
        verdict.merge_into(path, ["mage"], other_seed)
    assert json.loads(path.read_text()) == held


def test_a_plain_run_adds_only_the_missing_methods_to_an_existing_result_file(tmp_path, monkeypatch):
    verdict = load_script("benchmarks/mage_verdict.py")
    held = {"scenario": "uniil-offline", "profile": "fast", "model": "m", "seed": 0, "tasks": [], "split": None,
            "methods": {m: {"metrics": {"last": v, "avg": v}, "trainable_params": 0, "train_seconds": 0.0}
                        for m, v in [("zeroshot", 20.0), ("moe-adapters-ddas", 80.0), ("mage", 82.0)]}}
    path = tmp_path / "faithful-uniil-offline-fast-seed0.json"
    path.write_text(json.dumps(held))
    runs = []

    def fake_run(command, **kw):
        methods = command[command.index("--methods") + 1].split(",")
        runs.append(methods)
        Path(command[command.index("--out") + 1]).write_text(json.dumps(
            {**held, "methods": {m: {"metrics": {"last": 81.0, "avg": 81.0}, "trainable_params": 0,
                                     "train_seconds": 0.0} for m in methods}}))

    monkeypatch.setattr(verdict.subprocess, "run", fake_run)
    verdict.main(["--seeds", "0", "--scenarios", "uniil-offline", "--methods",
                  "zeroshot,moe-adapters-ddas,mage-noattr,mage", "--out-dir", str(tmp_path)])
    assert runs == [["mage-noattr"]], "the methods the file holds are not run again"
    merged = json.loads(path.read_text())["methods"]
    assert {m: e["metrics"]["last"] for m, e in merged.items()} == {
        "zeroshot": 20.0, "moe-adapters-ddas": 80.0, "mage": 82.0, "mage-noattr": 81.0}
    verdict.main(["--seeds", "0", "--scenarios", "uniil-offline", "--methods", "mage,mage-noattr",
                  "--out-dir", str(tmp_path)])
    assert runs == [["mage-noattr"]], "a file holding every method asked for runs nothing"


def verdict_result(seed, mage_row, baseline_row):
    return {"seed": seed, "tasks": ["big", "small"],
            "methods": {"mage": {"matrix": [mage_row]}, "moe-adapters-ddas": {"matrix": [baseline_row]}}}


def test_per_step_report_splits_last_by_step_and_recomputes_it_on_the_larger_steps():
    verdict = load_script("benchmarks/mage_verdict.py")
    # step "big" (200 images): mage ahead by 1, 2, 3; step "small" (40): +25, -25, +2.5.
    results = [verdict_result(0, [51.0, 75.0], [50.0, 50.0]), verdict_result(1, [52.0, 25.0], [50.0, 50.0]),
               verdict_result(2, [53.0, 52.5], [50.0, 50.0])]
    lines = verdict.per_step_report(results, [200, 40])
    assert "| big | 200 | +2.00 | 1.00 | 3 / 0 | +1.0 / +2.0 / +3.0 |" in lines
    assert "| small | 40 | +0.83 | 25.04 | 2 / 1 | +25.0 / -25.0 / +2.5 |" in lines
    last = lines[-1]
    assert last.startswith("Last on the 1 steps with >= 100 test images: mage - moe-adapters-ddas per seed [1.0, 2.0, 3.0]")
    assert "mean +2.00 (sd 1.00, 95% CI -0.48 to +4.48)  wins 3/3" in last
    with pytest.raises(ValueError, match="test_sizes has 1 entries for the 2 steps"):
        verdict.per_step_report(results, [200])


def test_first_step_of_names_the_step_that_introduced_a_class(script):
    stream = SimpleNamespace(steps=[SimpleNamespace(class_ids=(0, 1)), SimpleNamespace(class_ids=(1, 2)),
                                    SimpleNamespace(class_ids=(3,))])
    assert [script.first_step_of(stream, c) for c in (0, 1, 2, 3)] == [0, 0, 1, 2]


def test_exposure_of_an_older_step(script):
    # steps 0, 1, 2; step 0 froze expert 0, step 1 froze expert 1; step 2 trains experts 2 and 3.
    method = fake_method([[50, 0, 50, 0], [0, 60, 0, 40], [0, 0, 70, 30]], {0: {"image.3": [0]}, 1: {"image.3": [1]}})
    assert script.exposure(method, 2) == {"image.3": 0.4}  # step 1's usage on expert 3
    assert script.exposure(method, 2, of=0) == {"image.3": 0.5}  # step 0's usage on expert 2


def test_controls_report_credits_the_attributes_only_when_mage_leads_the_control_clearly():
    verdict = load_script("benchmarks/mage_verdict.py")

    def result(seed, mage, control, baseline):
        rows = {"mage": mage, "mage-randwords": control, "moe-adapters-ddas": baseline}
        return {"seed": seed, "methods": {name: {"metrics": {"last": last, "avg": last}} for name, last in rows.items()}}

    clear = [result(0, 93.0, 88.0, 91.0), result(1, 94.0, 90.0, 92.0), result(2, 92.0, 86.0, 90.0)]
    lines = verdict.controls_report(clear)
    assert "mage - mage-randwords     last per seed [5.0, 4.0, 6.0]  mean +5.00" in lines[0]
    assert lines[-1].startswith("  [x] mage Last >= mage-randwords + 1"), lines[-1]
    assert not any("mage-imagefeat" in line for line in lines), "a control no result holds is not reported"
    unclear = [result(0, 93.0, 95.0, 91.0), result(1, 94.0, 90.0, 92.0), result(2, 92.0, 91.0, 90.0)]
    assert verdict.controls_report(unclear)[-1].startswith("  [ ] mage Last >= mage-randwords + 1")


def test_candidates_report_compares_a_candidate_with_mage_and_judges_it_against_the_baselines():
    verdict = load_script("benchmarks/mage_verdict.py")

    def result(seed, candidate, mage, baseline):
        rows = {"mage-bias": candidate, "mage": mage, "moe-adapters-ddas": baseline}
        return {"scenario": "uniil-offline", "profile": "fast", "seed": seed,
                "methods": {name: {"metrics": {"last": last, "avg": last}} for name, last in rows.items()}}

    lines = verdict.candidates_report("uniil-offline", [result(0, 86.0, 83.0, 80.0), result(1, 84.0, 85.0, 83.0)])
    assert lines[0] == "### candidate mage-bias"
    assert any(line.startswith("mage-bias - mage               last per seed [3.0, -1.0]  mean +1.00") for line in lines)
    assert any(line.startswith("mage-bias - moe-adapters-ddas  last per seed [6.0, 1.0]  mean +3.50") for line in lines)
    assert "  [x] Last >= moe-adapters-ddas + 2 on the mean" in lines
    assert "  [x] Last ahead of moe-adapters-ddas on every seed" in lines
    assert not any("mage-shrunk" in line or "mage-constant" in line for line in lines), "only what the results hold"
    without = {"seed": 0, "methods": {"mage": {}, "moe-adapters-ddas": {}}}
    assert verdict.candidates_report("uniil-offline", [result(0, 86.0, 83.0, 80.0), without]) == [], (
        "a candidate some seed did not run is not reported")


def test_within_between_averages_cosines_of_same_and_different_labels():
    consistency = load_script("benchmarks/attribute_consistency.py")
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert consistency.within_between(vectors, torch.tensor([0, 0, 1, 1])) == (1.0, 0.0)
    assert consistency.within_between(vectors, torch.tensor([0, 1, 0, 1])) == (0.0, 0.5)
    with pytest.raises(ValueError, match="two rows of one label"):
        consistency.within_between(vectors, torch.tensor([0, 1, 2, 3]))


def test_the_verdict_report_names_and_skips_a_baseline_some_seed_did_not_run():
    verdict = load_script("benchmarks/mage_verdict.py")

    def result(seed, mage, baseline, noattr=None):
        rows = {"mage": mage, "moe-adapters-ddas": baseline} | ({} if noattr is None else {"mage-noattr": noattr})
        return {"scenario": "uniil-offline", "profile": "fast", "seed": seed,
                "methods": {name: {"metrics": {"last": last, "avg": last}} for name, last in rows.items()}}

    lines = verdict.report("uniil-offline", [result(0, 83.0, 80.0, 80.0), result(1, 81.0, 80.0)])
    assert "(not compared: mage-noattr, missing from some seed's results)" in lines
    assert any(line.startswith("mage - moe-adapters-ddas  last per seed [3.0, 1.0]  mean +2.00") for line in lines)
    assert "  [x] Last >= moe-adapters-ddas + 2 on the mean" in lines
    assert not any("[x] Last >= mage-noattr" in line or "[ ] Last >= mage-noattr" in line for line in lines)


def test_the_verdict_report_finds_a_seed_kept_in_another_folder(tmp_path):
    verdict = load_script("benchmarks/mage_verdict.py")
    main_folder, other = tmp_path / "main", tmp_path / "other"
    main_folder.mkdir(), other.mkdir()
    (other / "faithful-uniil-offline-fast-seed40.json").write_text("{}")
    (main_folder / "faithful-uniil-offline-fast-seed0.json").write_text("{}")
    for seed, where in ((0, main_folder), (40, other)):
        path = verdict.result_path(main_folder, "faithful", "uniil-offline", "fast", seed)
        assert verdict.found_result(path, [other]) == where / path.name
    assert verdict.found_result(verdict.result_path(main_folder, "faithful", "uniil-offline", "fast", 41), [other]) is None
