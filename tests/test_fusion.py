"""AWPF's building blocks (uniil_lib.fusion) and the three low-rank methods (uniil_lib.methods.awpf)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.fusion import (
    BalanceConfig, FusionError, LowRankUpdate, adapt, balance_factor, compress, concat, dynamic_balance,
    fisher_ratios, lda_score, mmd2, separability, separability_from_statistics, singular_values, stack,
)
from uniil_lib.methods import TrainConfig, create_method
from uniil_lib.methods.awpf import AWPF, AWPFFixed, AWPFSettings, ClassStatistics, LowRankSeq
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import run_continual

LOW_RANK_METHODS = ("lowrank-seq", "awpf-fixed", "awpf")


def random_update(rank: int, dim: int, seed: int) -> LowRankUpdate:
    generator = torch.Generator().manual_seed(seed)
    return LowRankUpdate(torch.randn(rank, dim, generator=generator, dtype=torch.float64),
                         torch.randn(dim, rank, generator=generator, dtype=torch.float64))


def gaussian(n: int, dim: int, *, mean: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + mean


def blobs(spread: float, *, classes: int = 3, per_class: int = 30, dim: int = 5, seed: int = 0):
    """``classes`` Gaussian blobs of unit variance whose means lie ``spread`` apart on the axes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    features[torch.arange(len(labels)), labels] += spread
    return features, labels


# ----- (A4) MMD ---------------------------------------------------------------------------------------------------
def test_mmd_is_zero_for_identical_samples_and_symmetric():
    x, y = gaussian(40, 6, seed=0), gaussian(50, 6, mean=0.5, seed=1)
    assert mmd2(x, x) == 0.0
    assert mmd2(x, y) == pytest.approx(mmd2(y, x), rel=1e-12)
    assert mmd2(x, y) > 0


def test_mmd_grows_with_the_shift_of_the_mean():
    x = gaussian(60, 4, seed=0)
    values = [mmd2(x, gaussian(60, 4, mean=shift, seed=1)) for shift in (0.0, 0.5, 1.0, 3.0)]
    assert values == sorted(values), f"MMD^2 should grow with the shift: {values}"
    assert values[0] < 0.1 < values[-1] <= 2.0, values


def test_mmd_refuses_empty_or_mismatched_samples():
    with pytest.raises(FusionError, match="non-empty"):
        mmd2(torch.zeros(0, 4), gaussian(5, 4))
    with pytest.raises(FusionError, match="same width"):
        mmd2(gaussian(5, 4), gaussian(5, 3))


# ----- (A5) LDA ---------------------------------------------------------------------------------------------------
def test_lda_rates_well_separated_classes_higher():
    near, far = blobs(0.5), blobs(6.0)
    assert lda_score(*far) > 10 * lda_score(*near)
    rho_near, rho_far = separability(*near), separability(*far)
    assert 0.0 <= rho_near < rho_far < 1.0, (rho_near, rho_far)
    assert len(fisher_ratios(*far)) == 2, "3 classes have 2 discriminant directions"


def test_lda_refuses_one_class_and_empty_features():
    features, _ = blobs(1.0)
    with pytest.raises(FusionError, match="at least two classes"):
        separability(features, torch.zeros(len(features), dtype=torch.long))
    with pytest.raises(FusionError, match="non-empty"):
        separability(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(FusionError, match="one label per feature"):
        separability(features, torch.zeros(3, dtype=torch.long))


# ----- (A6) the balance factor ------------------------------------------------------------------------------------
def test_separability_from_statistics_equals_separability_of_the_features():
    features, labels = blobs(1.5, classes=4, per_class=30)
    labels[:7] = 1  # unequal class sizes, so the weighting of the class means matters
    classes = labels.unique()
    means = torch.stack([features[labels == c].mean(0) for c in classes])
    sizes = torch.tensor([float((labels == c).sum()) for c in classes])
    scatter = sum((features[labels == c] - m).T @ (features[labels == c] - m) for c, m in zip(classes, means))
    from_stats = separability_from_statistics(means, scatter / len(features), sizes)
    assert from_stats == pytest.approx(separability(features, labels), rel=1e-10)
    with pytest.raises(FusionError, match="at least two classes"):
        separability_from_statistics(means[:1], scatter, sizes[:1])


def test_balance_factor_lies_in_the_open_interval_and_is_monotone():
    config = BalanceConfig()
    assert balance_factor(0.0, 1.0, config) == pytest.approx(config.lam_0)
    shifts = [balance_factor(s, 0.8, config) for s in np.linspace(0, 2, 9)]
    seps = [balance_factor(0.1, r, config) for r in np.linspace(0, 0.999, 9)]
    assert all(0 < v < 1 for v in shifts + seps)
    assert all(a < b for a, b in zip(shifts, shifts[1:])), f"lam should grow with MMD^2: {shifts}"
    assert all(a > b for a, b in zip(seps, seps[1:])), f"lam should shrink as the seen classes separate better: {seps}"


def test_dynamic_balance_reacts_to_shift_and_separability():
    previous, _ = blobs(3.0, seed=0)
    same, labels = blobs(3.0, seed=1)
    rho = separability(torch.cat([previous, same]), torch.cat([labels, labels + 3]))
    lam_same, shift_same = dynamic_balance(previous, same, rho)
    lam_far, shift_far = dynamic_balance(previous, same + 5.0, rho)
    assert shift_far > shift_same and lam_far > lam_same
    harder, _ = blobs(0.5, seed=1)
    rho_harder = separability(torch.cat([previous, harder]), torch.cat([labels, labels + 3]))
    lam_harder, _ = dynamic_balance(previous, harder, rho_harder)
    assert rho_harder < rho and lam_harder > lam_same, "seen classes that are harder to separate give more weight"


# ----- (A2) stacking, (A3) compression -------------------------------------------------------------------------------
def test_stacking_mixes_the_two_modules_exactly():
    old, new, features = random_update(3, 8, 0), random_update(2, 8, 1), gaussian(10, 8, seed=2)
    fused = stack(old, new, 0.3)
    assert fused.rank == 5 and fused.dim == 8
    expected = 0.7 * old.apply(features) + 0.3 * new.apply(features)
    torch.testing.assert_close(fused.apply(features), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adapt(features, fused), torch.nn.functional.normalize(features + expected, dim=-1))


def test_compression_without_budget_keeps_the_function_and_drops_redundancy():
    old, increment, features = random_update(3, 8, 0), random_update(2, 8, 1), gaussian(10, 8, seed=2)
    stacked = stack(old, concat(old, increment), 0.4)  # the old directions appear twice
    compressed = compress(stacked)
    assert stacked.rank == 8 and compressed.rank == 5
    torch.testing.assert_close(compressed.apply(features), stacked.apply(features), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(compressed.matrix(), old.matrix() + 0.4 * increment.matrix(), rtol=1e-9, atol=1e-9)


def test_compression_to_a_budget_is_the_best_low_rank_approximation():
    update = random_update(6, 10, 3)
    s = torch.linalg.svdvals(update.matrix())
    torch.testing.assert_close(singular_values(update), s[:6])
    for budget in (1, 3, 5):
        error = torch.linalg.matrix_norm(update.matrix() - compress(update, max_rank=budget).matrix())
        bound = s[budget:].pow(2).sum().sqrt()
        assert error <= bound * (1 + 1e-9), f"rank {budget}: error {error} above the Eckart-Young bound {bound}"
        assert compress(update, max_rank=budget).rank == budget


def test_fusing_modules_of_different_shapes_is_refused():
    with pytest.raises(FusionError, match="8-dim features .* 6-dim features"):
        stack(random_update(2, 8, 0), random_update(2, 6, 1), 0.5)
    with pytest.raises(FusionError, match=r"A must be \(r, D\)"):
        LowRankUpdate(torch.zeros(2, 8), torch.zeros(8, 3))
    with pytest.raises(FusionError, match=r"\[0, 1\]"):
        stack(random_update(2, 8, 0), random_update(2, 8, 1), 1.5)
    with pytest.raises(FusionError, match="expects 8"):
        adapt(torch.zeros(4, 6), random_update(2, 8, 0))


# ----- the methods ------------------------------------------------------------------------------------------------
SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                       text_width=32, text_layers=1, heads=2, context_length=16)


def toy_stream(squares):
    data = DatasetPart("sq", squares(6, 16, seed=0), squares(6, 6, seed=1), ("a {} square.",), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


TOY = AWPFSettings(rank=4, replay=8)  # rank well below the tiny CLIP's width of 32


def build(name, stream, *, lam=0.6, settings=TOY):
    """``name`` on the tiny CLIP; ``create_method`` (the registry's defaults) when ``settings`` is None."""
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    config = TrainConfig(epochs=8, batch_size=8, lr=1e-2, seed=0, progress=False)
    if settings is None:
        return create_method(name, clip, stream, config)
    if name == "awpf-fixed":
        return AWPFFixed(clip, stream, config, lam=lam, settings=settings)
    if name in ("lowrank-seq", "awpf"):
        return {"lowrank-seq": LowRankSeq, "awpf": AWPF}[name](clip, stream, config, settings=settings)
    return create_method(name, clip, stream, config, settings=settings)


@pytest.mark.parametrize("name", LOW_RANK_METHODS)
def test_low_rank_methods_train_only_their_module(squares, name):
    stream = toy_stream(squares)
    method = build(name, stream)
    before = {k: v.clone() for k, v in method.clip.model.state_dict().items()}
    result = run_continual(method, stream)
    assert result.matrix.shape == (3, 3) and not np.isnan(result.matrix).any()
    assert result.trainable_params == 2 * TOY.rank * 32
    assert all(torch.equal(before[k], v) for k, v in method.clip.model.state_dict().items())
    assert result.matrix[0, 0] > result.initial[0], f"{name} should learn the first task"


def test_registry_builds_the_three_methods_with_their_defaults(squares):
    stream = toy_stream(squares)
    for name in LOW_RANK_METHODS:
        method = build(name, stream, settings=None)
        assert method.settings == AWPFSettings() and method.name == name
    assert build("awpf-fixed", stream, settings=None).lam == 0.6


def test_awpf_records_its_balance_factors_and_grows_its_rank(squares):
    stream = toy_stream(squares)
    method = build("awpf", stream)
    run_continual(method, stream)
    lams = method.lambdas()
    assert len(lams) == 3 and lams[0] == 1.0 and all(0 < lam < 1 for lam in lams[1:]), lams
    assert all(0 <= e["rho"] < 1 for e in method.history), method.history
    assert math.isnan(method.history[0]["mmd2"]), "the first task has no previous task to compare with"
    # The recorded shift is MMD^2 between the previous task's kept features (all of them: memory 256 > 32 images)
    # and this task's, and the recorded factor is (A6) of the recorded shift and separability.
    features = [method.step_inputs(step)[0] for step in stream.steps]
    for k in (1, 2):
        entry = method.history[k]
        assert entry["mmd2"] == pytest.approx(mmd2(features[k - 1], features[k]), rel=1e-9), k
        assert entry["mmd2"] > 1e-4, "tasks with different classes are shifted"
        assert entry["lam"] == pytest.approx(balance_factor(entry["mmd2"], entry["rho"], TOY.balance), rel=1e-12), k
    assert TOY.rank < method.fused.rank <= 3 * TOY.rank
    fixed = build("awpf-fixed", stream, lam=0.25)
    run_continual(fixed, stream)
    assert fixed.lambdas() == [1.0, 0.25, 0.25]


@pytest.mark.parametrize("settings", [TOY, AWPFSettings(rank=4, replay=0)])
def test_awpf_measures_the_separability_of_every_class_seen(squares, settings):
    stream = toy_stream(squares)
    method = build("awpf", stream, settings=settings)
    run_continual(method, stream)
    inputs = [method.step_inputs(step) for step in stream.steps]
    for k, entry in enumerate(method.history):
        seen_features = torch.cat([features for features, _ in inputs[: k + 1]])
        seen_labels = torch.cat([labels for _, labels in inputs[: k + 1]])
        assert entry["rho"] == pytest.approx(separability(seen_features, seen_labels), rel=1e-6), k


def test_awpf_refuses_a_first_task_with_one_class_before_training(squares):
    data = DatasetPart("sq", squares(4, 8, seed=0), squares(4, 4, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy-cil-1", data, increment=1, seed=0)
    method = build("awpf", stream)
    with pytest.raises(FusionError, match="at least two classes"):
        method.before_step(stream.steps[0])
    assert method.A_t is None, "nothing should have been built for a task that cannot be fused"
    run_continual(build("awpf-fixed", stream), stream)  # a fixed factor needs no separability


@pytest.mark.parametrize("name, settings", [(name, TOY) for name in LOW_RANK_METHODS]
                         + [("awpf", AWPFSettings(rank=4, replay=0)), ("awpf", None)])
def test_resume_gives_identical_matrices(squares, tmp_path, name, settings):
    stream = toy_stream(squares)
    uninterrupted = build(name, stream, settings=settings)
    full = run_continual(uninterrupted, stream)
    run_continual(build(name, stream, settings=settings), stream, checkpoint_dir=tmp_path, stop_after=1)
    resumed = build(name, stream, settings=settings)
    again = run_continual(resumed, stream, checkpoint_dir=tmp_path)
    assert np.array_equal(full.matrix, again.matrix)
    for key, value in uninterrupted.state_dict().items():
        other = resumed.state_dict()[key]
        assert value.shape == other.shape and torch.allclose(value, other, rtol=0, atol=0, equal_nan=True), \
            f"{name}: {key} differs after resuming"


def test_class_statistics_replay_the_recorded_classes():
    features, labels = blobs(4.0, classes=3, per_class=200, dim=4)
    stats = ClassStatistics(4)
    stats.add(features, labels + 10)
    sample, sampled_labels = stats.sample(3000, [10, 12, 99], torch.Generator().manual_seed(0))
    assert sample.shape == (3000, 4) and set(sampled_labels.tolist()) == {10, 12}
    for c in (10, 12):
        torch.testing.assert_close(sample[sampled_labels == c].mean(0).double(), features[labels == c - 10].mean(0),
                                   atol=0.15, rtol=0)
    nothing, _ = stats.sample(5, [111], torch.Generator())
    assert nothing.shape == (0, 4), "classes never recorded cannot be replayed"


def test_awpf_fixed_refuses_a_checkpoint_with_another_lambda(squares, tmp_path):
    stream = toy_stream(squares)
    run_continual(build("awpf-fixed", stream, lam=0.6), stream, checkpoint_dir=tmp_path, stop_after=0)
    with pytest.raises(ValueError, match="lam=0.6"):
        run_continual(build("awpf-fixed", stream, lam=0.3), stream, checkpoint_dir=tmp_path)


# ----- the ablations of the balance factor and the named fixed factors (issue 20) ----------------------------------
# lam_0 = 0.5 makes logit(lam_0) = 0, so each factor is a plain sigmoid of the terms it keeps.
HAND = BalanceConfig(lam_0=0.5, alpha=2.0, beta=3.0)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize("name, expected", [
    # MMD^2 = 0.25, rho = 0.8: the MMD term is 2 * 0.25 = 0.5, the LDA term 3 * (1 - 0.8) = 0.6.
    ("awpf", 0.7502601055951177),            # sigmoid(0.5 + 0.6)
    ("awpf-mmd-only", 0.6224593312018546),   # sigmoid(0.5)
    ("awpf-lda-only", 0.6456563062257954),   # sigmoid(0.6)
])
def test_each_ablation_drops_exactly_one_term_of_the_factor(squares, name, expected):
    method = create_method(name, load_clip("tiny", tiny_config=SMALL, seed=0), toy_stream(squares),
                           TrainConfig(progress=False), settings=AWPFSettings(rank=4, balance=HAND))
    assert balance_factor(0.25, 0.8, method.balance_config()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name, kept", [("awpf-mmd-only", "mmd"), ("awpf-lda-only", "lda")])
def test_ablations_fuse_with_the_factor_of_the_term_they_keep(squares, name, kept):
    stream = toy_stream(squares)
    settings = AWPFSettings(rank=4, replay=8, balance=HAND)
    full, ablation = build("awpf", stream, settings=settings), build(name, stream, settings=settings)
    run_continual(full, stream)
    run_continual(ablation, stream)
    assert ablation.lambdas()[0] == 1.0
    for k in (1, 2):
        entry = ablation.history[k]
        # MMD^2 and rho read frozen features only: the ablation measures what awpf measures.
        assert (entry["mmd2"], entry["rho"]) == (full.history[k]["mmd2"], full.history[k]["rho"]), k
        mmd_term, lda_term = 2.0 * entry["mmd2"], 3.0 * (1.0 - entry["rho"])
        assert min(mmd_term, lda_term) > 1e-3, "both terms must count, or the test could not tell them apart"
        assert entry["lam"] == pytest.approx(sigmoid(mmd_term if kept == "mmd" else lda_term), abs=1e-12), k
        assert abs(entry["lam"] - full.history[k]["lam"]) > 1e-4, "the ablation must differ from awpf"
    report = ablation.run_report()
    assert report["lambdas"] == ablation.lambdas() and len(report["mmd2"]) == len(report["rho"]) == 3
    assert math.isnan(report["mmd2"][0]) and report["rho"][1] == ablation.history[1]["rho"]


def test_named_fixed_factors_are_awpf_fixed_with_that_factor(squares):
    from uniil_lib.methods import method_names
    from uniil_lib.methods.awpf import FIXED_FACTOR_GRID, fixed_factor_method
    from uniil_lib.run_config import method_parameters

    grid = [name for name in method_names() if name.startswith("awpf-fixed-")]
    assert grid == [f"awpf-fixed-{lam:.1f}" for lam in FIXED_FACTOR_GRID] and FIXED_FACTOR_GRID[0] == 0.3
    assert set(method_parameters("awpf-fixed-0.7")) == {"settings"}, "the name fixes the factor: no lam option"
    stream = toy_stream(squares)
    method = build("awpf-fixed-0.7", stream, settings=None)
    assert isinstance(method, AWPFFixed) and method.lam == 0.7 and method.name == "awpf-fixed-0.7"
    method.settings = TOY
    run_continual(method, stream)
    assert method.lambdas() == [1.0, 0.7, 0.7]
    with pytest.raises(ValueError, match="one decimal"):
        fixed_factor_method(0.65)
