"""The lock files pin what pyproject.toml asks for, the image's at the same versions, and this run uses them.

``requirements-dev.lock`` is what ``make install`` (so CI) installs with ``--require-hashes``;
``requirements.lock`` what the Dockerfile installs. ``make lock`` writes both (uv).
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(path: Path) -> dict[str, str]:
    """Name → version of every pin whose marker holds here (uv writes one per Python range)."""
    out: dict[str, str] = {}
    lines = path.read_text().splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        m = _PIN.match(line)
        if m:
            assert after.startswith("    --hash=sha256:"), f"{path.name}: {m[1]} has no hash"
            if m[3] is None or Marker(m[3]).evaluate():
                out[canonicalize_name(m[1])] = m[2]
    assert len(out) > 50, path  # the format was understood
    return out


def test_every_dependency_is_pinned_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev, runtime = pins(ROOT / "requirements-dev.lock"), pins(ROOT / "requirements.lock")
    for spec, lock in [(s, dev) for s in project["dependencies"] + project["optional-dependencies"]["dev"]] + [
        (s, runtime) for s in project["dependencies"]
    ]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not locked: run make lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"{spec}: locked {lock[name]}, run make lock"
    # The image runs the versions the tests ran.
    assert {n: v for n, v in runtime.items() if dev.get(n) != v} == {}
    assert set(runtime) < set(dev)


def test_this_run_uses_the_locked_versions() -> None:
    wrong = {}
    for name, want in pins(ROOT / "requirements-dev.lock").items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            wrong[name] = (have, want)
    assert not wrong, f"installed vs locked (make install installs the lock): {wrong}"
