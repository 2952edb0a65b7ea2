"""Download DomainNet (cleaned version) for the ``uniil`` stream (needs internet; about 18 GB for all six domains).

Usage::

    python data_scripts/fetch_domainnet.py                          # all six domains
    python data_scripts/fetch_domainnet.py --domains real,clipart   # some
    python data_scripts/fetch_domainnet.py --record                 # record the files as they are now

For each domain it downloads the authors' split lists (``<domain>_train.txt``, ``<domain>_test.txt``) and image
archive from ``http://csr.bu.edu/ftp/visda/2019/multi-source/`` (clipart and painting from ``groundtruth/``, the
cleaned version with duplicates removed; see ``uniil_lib/data/domainnet.py``), unpacks the archive into
``<root>/domainnet/`` (``<domain>/<class>/<file>.jpg``, the layout the loaders read) and, last, records the sha256 of
every file in ``<root>/domainnet/checksums.json``. Archives go to ``<cache root>/downloads/domainnet`` and are
deleted once unpacked (``--keep-archives`` keeps them). A domain whose files are all there is not downloaded again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

try:
    import uniil_lib  # noqa: F401  (installed, e.g. with pip install -e .)
except ImportError:  # run from a checkout: the package sits next to data_scripts/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniil_lib.data.domainnet import BASE_URL, DOMAINS, FOLDER, archive_url, list_file, split_list_url  # noqa: E402
from uniil_lib.fileio import atomic_write  # noqa: E402
from uniil_lib.integrity import record_folder  # noqa: E402
from uniil_lib.paths import cache_root, data_root  # noqa: E402


def download(url: str, path: Path, *, timeout: float = 120) -> Path:
    """Download ``url`` to ``path`` (atomically: an interrupted download leaves no file)."""
    def write(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle, 1 << 20)
        except (urllib.error.URLError, OSError) as error:
            raise RuntimeError(f"cannot download {url} ({error}); is {url.split('/')[2]} reachable?") from error

    print(f"downloading {url}", flush=True)
    return atomic_write(path, write)


def unpack(archive: Path, folder: Path, domain: str) -> int:
    """Extract ``archive`` into ``folder``; every member must lie below ``<domain>/``. Returns the files written.

    Raises:
        RuntimeError: the archive is damaged or holds a member outside ``<domain>/`` (nothing of it is trusted).
    """
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            bad = [m.filename for m in members
                   if PurePosixPath(m.filename).parts[:1] != (domain,) or ".." in PurePosixPath(m.filename).parts]
            if bad:
                raise RuntimeError(f"{archive} holds files outside {domain}/ ({bad[:3]}); not unpacked")
            zipped.extractall(folder, members)
    except zipfile.BadZipFile as error:
        raise RuntimeError(f"{archive} is not a complete zip archive ({error}); delete it and run again") from error
    return len(members)


def is_present(root: Path, domain: str) -> bool:
    """Whether the domain's folder and both lists are there."""
    return (root / FOLDER / domain).is_dir() and all(list_file(root, domain, s).is_file() for s in ("train", "test"))


def fetch_domain(root: Path, domain: str, base: str, downloads: Path, keep_archives: bool) -> None:
    folder = root / FOLDER
    for split in ("train", "test"):
        download(split_list_url(domain, split, base), list_file(root, domain, split))
    archive = download(archive_url(domain, base), downloads / f"{domain}.zip")
    print(f"{domain}: unpacked {unpack(archive, folder, domain)} files into {folder / domain}", flush=True)
    if not keep_archives:
        archive.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="data root (default: $UNIIL_DATA)")
    parser.add_argument("--domains", default=",".join(DOMAINS), help=f"comma list from {','.join(DOMAINS)}")
    parser.add_argument("--base-url", default=BASE_URL, help="where the archives and lists are (a mirror)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloaded zip files")
    parser.add_argument("--record", action="store_true", help="only record the sha256 of the files as they are now")
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else data_root()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        print(f"error: --domains: unknown or empty {unknown or args.domains!r}; choose from {','.join(DOMAINS)}",
              file=sys.stderr)
        return 2
    try:
        if not args.record:
            for domain in domains:
                if is_present(root, domain):
                    print(f"{domain}: already in {root / FOLDER}; not downloaded again")
                    continue
                fetch_domain(root, domain, args.base_url, cache_root() / "downloads" / "domainnet", args.keep_archives)
        if not (root / FOLDER).is_dir():
            raise RuntimeError(f"{root / FOLDER} does not exist: nothing to record; fetch the data first")
        print(f"recording the sha256 of the files in {root / FOLDER} ...", flush=True)
        record_folder(root / FOLDER, extra={"dataset": "domainnet"})
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
