"""The notebooks' first-cell helper, ``uniil_lib.notebook_setup.start_notebook``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uniil_lib import notebook_setup


def test_start_notebook_prints_versions_profiles_and_the_policy(capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ran = []
    notebook_setup.start_notebook("fast", run=lambda *a, **k: ran.append(a))
    out = capsys.readouterr().out
    assert "torch " in out and "open_clip_torch " in out and "uniil_lib " in out
    assert "profile: fast (profiles: " in out and "full" in out and "progress bars: off" in out
    assert ran == [], "nothing is fetched outside Colab"


def test_an_unknown_profile_names_the_valid_ones(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with pytest.raises(KeyError, match=r"unknown profile 'fastest'; valid profiles: .*fast"):
        notebook_setup.start_notebook("fastest")


def test_on_colab_the_data_is_fetched_with_the_clone_s_scripts(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", object())
    ran = []
    notebook_setup.start_notebook("fast", run=lambda command, check: ran.append((command, check)))
    scripts = Path(notebook_setup.__file__).resolve().parents[1] / "data_scripts"
    assert ran == [([sys.executable, str(scripts / "fetch_offline.py"), "--dataset", "all"], True),
                   ([sys.executable, str(scripts / "fetch_emoji.py")], True)]
    assert all(Path(command[1]).is_file() for command, _ in ran), "the fetch scripts exist in the checkout"


@pytest.mark.parametrize("colab", [False, True])
def test_a_gpu_profile_without_a_gpu_stops_in_the_first_cell_with_what_to_change(monkeypatch, capsys, colab):
    """The commonest Colab mistake (a runtime never switched to a GPU) is named before anything is fetched."""
    import torch

    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", object())
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    ran = []
    with pytest.raises(RuntimeError) as error:
        notebook_setup.start_notebook("colab", run=lambda *a, **k: ran.append(a))
    message = str(error.value)
    assert "PROFILE = 'colab' trains on 'cuda', which this machine lacks" in message
    assert 'set PROFILE = "fast"' in message and ran == [], "nothing fetched for a run that cannot start"
    assert ("Runtime > Change runtime type" in message) == colab
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    notebook_setup.start_notebook("colab", run=lambda *a, **k: ran.append(a))
    assert "profile: colab" in capsys.readouterr().out, "with a GPU the same profile starts"
