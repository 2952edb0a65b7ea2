"""benchmarks/side_by_side.py: the stream it runs is the one its options name, and a mistaken option is refused
before a worktree of the old revision is made."""

from __future__ import annotations

import subprocess

import pytest

from repo_scripts import REPO, load_script

two_workers = load_script("benchmarks/notebook08_two_workers.py")  # side_by_side imports it by name
side_by_side = load_script("benchmarks/side_by_side.py")


def worktrees() -> str:
    return subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout


def test_the_default_stream_is_notebook_08s_and_the_options_cut_it():
    stream, profile = two_workers.fast_stream_and_profile()
    assert len(stream.steps) == two_workers.STEPS == 5
    assert profile.train.epochs == two_workers.EPOCHS == 3
    assert stream.name == "uniil-offline[:5]"

    stream, profile = two_workers.fast_stream_and_profile("cil-emoji", steps=2, epochs=1, seed=3)
    assert [step.name for step in stream.steps] == [step.name for step in
                                                   two_workers.build_scenario("cil-emoji", seed=3).steps[:2]]
    assert profile.train.epochs == 1

    whole, fast = two_workers.fast_stream_and_profile("cil-emoji", steps=None, epochs=None)
    assert len(whole.steps) == len(two_workers.build_scenario("cil-emoji").steps) > 2
    assert fast == two_workers.get_profile("fast"), "epochs=None keeps the profile's own"


@pytest.mark.parametrize("options, message", [
    (["--methods", "zeroshot,no-such-method"], "unknown method(s) no-such-method"),
    (["--methods", ","], "--methods names no method"),
    (["--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["--steps", "0"], "--steps: 0 is below 1"),
    (["--epochs", "two"], "--epochs: 'two' is not a whole number"),
])
def test_a_mistaken_option_is_refused_before_any_worktree_is_made(options, message, capsys):
    before = worktrees()
    with pytest.raises(SystemExit) as stop:
        side_by_side.main(["--old", "HEAD", *options])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert worktrees() == before
