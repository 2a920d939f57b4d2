"""LICENSE and CITATION.cff: the licence pyproject.toml declares, and a citation file that GitHub and
citation tools can read (CFF 1.2.0: its required keys, the paper as the preferred citation)."""
from __future__ import annotations

import tomllib

import yaml

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_the_mit_licence_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["license"] == "MIT"
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the dila authors\n")
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def person_or_entity(author: dict) -> bool:
    return bool(author.get("name") or author.get("family-names") or author.get("given-names"))


def test_citation_cff_is_cff_1_2_0_citing_the_software_and_preferring_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):  # the keys CFF 1.2.0 requires
        assert cff.get(key), key
    assert all(person_or_entity(a) for a in cff["authors"])
    assert cff["type"] == "software" and cff["license"] == PYPROJECT["license"]
    assert str(cff["version"]) == PYPROJECT["version"]
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["year"] == 2026
    assert paper["title"] == "DiLA: Disentangled Latent Action World Models"
    assert [a["family-names"] for a in paper["authors"]] == ["Zhang", "Lyu", "Zhang", "Fang", "Wu"]
    assert "ICML" in paper["conference"]["name"]
    assert paper["url"] == "https://arxiv.org/abs/2605.15725"
    entries = [tuple(sorted(a.items())) for a in paper["authors"]]
    assert len(set(entries)) == len(entries)  # the format wants distinct authors (the two Zhangs included)
