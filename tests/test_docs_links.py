"""The docs cite what is in the repository: no reference to a DESIGN.md kept elsewhere, and
every relative link in docs/*.md and README.md names a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
SOURCES = [p for d in ("packager", "sync_service", "device_sim", "modelsync", "react-native-stub/src")
           for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".ts", ".tsx", ".md")]


def test_nothing_cites_a_design_md_outside_the_repository() -> None:
    citing = [str(p.relative_to(ROOT)) for p in [*PAGES, *SOURCES] if "DESIGN.md" in p.read_text()]
    assert citing == []


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert broken == []
