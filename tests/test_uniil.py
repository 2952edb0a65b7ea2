"""DomainNet (its real on-disk layout and split lists, from fixture files), its fetch script against a local server,
and the ``uniil`` stream built from fixtures of all its sources, in the full and colab profiles."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fixtures_tv import DOMAINNET_CLASSES, write_aircraft, write_cifar100, write_domainnet, write_dtd, write_mnist
from fixtures_tv import write_oxford_pets, recorded
from uniil_lib.data import DatasetNotFoundError, load_dataset
from uniil_lib.named_scenarios import (UNIIL_DOMAIN_ORDER, UNIIL_MTIL_TASKS, build_scenario, round_robin,
                                       scenario_names)
from repo_scripts import load_script


def test_each_domain_loads_its_official_split_with_the_lists_labels(tmp_path):
    fixtures = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    for domain, fixture in fixtures.items():
        for split in ("train", "test"):
            data = load_dataset(f"domainnet-{domain}", split, root=tmp_path)
            assert data.class_names == ["The Eiffel Tower", "aircraft carrier", "apple", "zigzag"]
            assert list(data.labels) == [item.label for item in fixture.splits[split]]
            for k, item in enumerate(fixture.splits[split]):
                pixels = np.asarray(data[k][0].resize((8, 8)), dtype=int)
                assert np.abs(pixels - item.pixels).max() <= 6, (domain, split, k)


@pytest.mark.parametrize("line, message", [
    ("clipart/apple/x.jpg", "expected 'clipart/<class>/<file>.jpg <label>'"),
    ("sketch/apple/x.jpg 2", "expected 'clipart/"),
    ("clipart/apple/x.jpg 3", "label 3 is given to both"),
])
def test_a_bad_list_line_is_named_with_its_file_and_line(tmp_path, line, message):
    from uniil_lib.integrity import record_folder

    write_domainnet(tmp_path, domains=("clipart",))
    path = tmp_path / "domainnet" / "clipart_test.txt"
    path.write_text(path.read_text() + line + "\n")
    record_folder(tmp_path / "domainnet")  # changed on purpose: the record follows
    with pytest.raises(ValueError, match=message) as caught:
        load_dataset("domainnet-clipart", "test", root=tmp_path)
    assert "clipart_test.txt" in str(caught.value) or "domainnet" in str(caught.value)


def test_missing_domainnet_names_its_fetch_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="fetch_domainnet.py --domains painting"):
        load_dataset("domainnet-painting", "train", root=tmp_path)


def write_uniil_sources(root: Path) -> None:
    for write in (write_cifar100, write_aircraft, write_dtd, write_mnist, write_oxford_pets):
        recorded(write)(root)
    write_domainnet(root)


@pytest.mark.parametrize("profile", ["full", "colab"])
def test_the_uniil_stream_builds_from_its_sources(tmp_path, profile):
    write_uniil_sources(tmp_path)
    stream = build_scenario("uniil", profile=profile, seed=0, root=tmp_path)
    assert "uniil" in scenario_names() and stream.protocol == "uni-il" and not stream.task_id_at_test
    # fixture sizes: CIFAR-100 has 3 classes (one per class increment), 6 DomainNet domains, 4 MTIL tasks
    kinds = [step.kind for step in stream.steps]
    assert kinds == [["class", "domain", "task"][p] for p in round_robin([3, 6, 4])]
    domains = [step.domain for step in stream.steps if step.kind == "domain"]
    assert domains == [f"domainnet-{d}" for d in UNIIL_DOMAIN_ORDER]
    assert [step.name for step in stream.steps if step.kind == "task"] == list(UNIIL_MTIL_TASKS)
    names = [spec.name for spec in stream.classes]
    assert names.count("apple") == 1, "CIFAR-100's apple: DomainNet's is left out (one name, one class)"
    domainnet = {spec.name for spec in stream.classes if spec.source == "domainnet-real"}
    assert domainnet == {"The Eiffel Tower", "aircraft carrier", "zigzag"}
    first = next(s for s in stream.steps if s.kind == "domain")
    assert all(s.class_ids == first.class_ids for s in stream.steps if s.kind == "domain"), "one label space"
    assert stream.eval_class_ids(0, len(stream.steps) - 1) == list(range(len(stream.classes)))


def test_round_robin_takes_one_step_of_each_part_in_turn():
    assert round_robin([5, 6, 4]) == [0, 1, 2] * 4 + [0, 1, 1]
    assert round_robin([2, 0, 1]) == [0, 2, 0]


@pytest.fixture
def mirror(file_server):
    """The shared local file server (conftest.file_server) as this module's download server."""
    return file_server


def _fetch_script():
    return load_script("data_scripts/fetch_domainnet.py")


def test_the_fetch_script_downloads_unpacks_and_records_a_domain(tmp_path, mirror):
    url, files = mirror
    source = tmp_path / "authors"
    write_domainnet(source, domains=("clipart",))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((source / "domainnet" / "clipart").rglob("*.jpg")):
            zipped.write(path, path.relative_to(source / "domainnet").as_posix())
    files["/groundtruth/clipart.zip"] = archive.getvalue()  # the cleaned version's address
    for split in ("train", "test"):
        files[f"/domainnet/txt/clipart_{split}.txt"] = (source / "domainnet" / f"clipart_{split}.txt").read_bytes()
    root = tmp_path / "data"
    assert _fetch_script().main(["--root", str(root), "--domains", "clipart", "--base-url", url]) == 0
    data = load_dataset("domainnet-clipart", "train", root=root)
    assert len(data) == 2 * len(DOMAINNET_CLASSES) and data.class_names[1] == "aircraft carrier"
    data[0]  # images are checked against the recorded checksums when read
    assert (root / "domainnet" / "checksums.json").is_file()
    assert not list((tmp_path / "cache" / "downloads" / "domainnet").glob("*.zip")), "archives are deleted"


def test_the_fetch_script_refuses_an_archive_with_files_outside_its_domain(tmp_path, mirror):
    url, files = mirror
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escape.jpg", b"x")
    files["/real.zip"] = archive.getvalue()
    for split in ("train", "test"):
        files[f"/domainnet/txt/real_{split}.txt"] = b"real/a/x.jpg 0\n"
    assert _fetch_script().main(["--root", str(tmp_path / "data"), "--domains", "real", "--base-url", url]) == 1
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "data" / "escape.jpg").exists()
