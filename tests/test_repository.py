"""What a newcomer reads before the code: no machine's scratch paths, a lock that matches setup.cfg.

Committed results and docs must read the same on every machine, so no tracked text file may name
a temporary, home or workspace folder by its absolute path; and ``requirements/lock.txt`` (what
``make install`` installs) must pin every requirement of ``setup.cfg`` at a version it allows,
with torch as the Makefile pins it.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
# An absolute path into a temporary, home or workspace folder (/tmp/x, /home/x, /root/x, /work/x,
# macOS's /Users/x and /var/folders/x), not the tail of a URL or of a relative path.
SCRATCH = re.compile(r"(?<![\w.~$/-])/(?:tmp|home|root|work|Users|var/folders|private/var)/[\w.-]")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listing.split("\0") if name]


def scratch_paths(text: str) -> list[str]:
    """The lines of ``text`` that name a scratch folder by absolute path, numbered from 1."""
    return [f"{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1)
            if SCRATCH.search(line)]  # fmt: skip


def test_the_scratch_path_pattern():
    found = ["see /tmp/s6/demo", "(/home/ana/runs)", "'/root/x'", "cd /work/main", "/Users/a/b"]
    assert all(scratch_paths(line) for line in found)
    fine = ["data/tmp/x", "https://example.org/home/page", "~/runs", "$TMPDIR/x", "/tmp", "/opt/x"]
    assert not any(scratch_paths(line) for line in fine)


def test_no_tracked_file_names_a_scratch_folder():
    """Results, docs, notebooks and code record paths relative to the working folder."""
    offenders = []
    for path in tracked_files():
        # this file shows the pattern; a file deleted in the work tree is not yet committed
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary: weights, images
            continue
        offenders += [f"{path.relative_to(ROOT)}:{hit}" for hit in scratch_paths(data.decode())]
    assert not offenders, "absolute scratch paths:\n" + "\n".join(offenders)


def locked() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, version = line.strip().partition("==")
            assert sep and " " not in version, f"{LOCK.name}: not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_lock_pins_every_requirement_of_setup_cfg():
    """A dependency added to setup.cfg without ``make lock`` fails here, not on a fresh install."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["dev"].splitlines()
    pins = locked()
    for requirement in (Requirement(line) for line in lines if line.strip()):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"setup.cfg: {requirement.name} is not in {LOCK.name}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name}: {name}=={pins[name]} does not satisfy setup.cfg's {requirement}"
        )


def test_lock_has_torch_as_the_makefile_pins_it():
    torch = re.search(r"^TORCH := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert torch is not None, "Makefile: no TORCH := line"
    assert locked()["torch"] == Version(torch.group(1))
