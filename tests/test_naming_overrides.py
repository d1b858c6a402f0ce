"""Human overrides: renames and pins persist in overrides.json and win over any namer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_llm_server import make_profile

from embeddings.errors import NamingError
from embeddings.naming import Overrides, StatsNamer
from embeddings.naming.profile_types import CohortName


def namer_output(tag: str) -> list[CohortName]:
    return [
        CohortName(f"{tag} shoppers {i}", f"{tag} description {i}.", "Act", namer=tag)
        for i in range(3)
    ]


def test_rename_wins_and_persists(tmp_path: Path) -> None:
    Overrides(tmp_path).rename(1, "  Garden  lovers ", description="People who love gardens.")
    names = Overrides(tmp_path).apply(
        [0, 1, 2], namer_output("stats")
    )  # a fresh object reads the file
    assert names[1] == CohortName(
        "Garden lovers", "People who love gardens.", "Act", namer="override"
    )
    assert names[0].name == "stats shoppers 0" and names[2].namer == "stats"
    again = Overrides(tmp_path).apply([0, 1, 2], namer_output("llm:m"))  # re-naming keeps it
    assert again[1].name == "Garden lovers"
    data = json.loads((tmp_path / "overrides.json").read_text())
    assert data["cohorts"]["1"]["name"] == "Garden lovers"


def test_rename_without_description_keeps_the_namers(tmp_path: Path) -> None:
    ov = Overrides(tmp_path)
    ov.rename(0, "VIP buyers")
    assert ov.apply([0], namer_output("stats")[:1])[0].description == "stats description 0."
    ov.clear_rename(0)
    assert ov.apply([0], namer_output("stats")[:1])[0].name == "stats shoppers 0"


def test_pin_freezes_the_current_name_until_unpinned(tmp_path: Path) -> None:
    ov = Overrides(tmp_path)
    ov.pin(2)
    first = ov.apply([0, 1, 2], namer_output("stats"))
    later = Overrides(tmp_path).apply([0, 1, 2], namer_output("llm:m"))
    assert later[2] == first[2] and later[2].name == "stats shoppers 2"
    assert later[0].name == "llm:m shoppers 0"  # not pinned: follows the namer
    assert ov.is_pinned(2)
    ov.unpin(2)
    assert ov.apply([2], namer_output("llm:m")[2:])[0].name == "llm:m shoppers 2"
    assert not ov.is_pinned(2)


def test_pin_with_explicit_name_and_rename_beats_pin(tmp_path: Path) -> None:
    ov = Overrides(tmp_path)
    ov.pin(0, CohortName("Frozen name here", "Kept."))
    assert ov.apply([0], namer_output("stats")[:1])[0].name == "Frozen name here"
    ov.pin(1, "Pinned by name", "As shown in the browser.")  # the CLI's form: name and description
    assert ov.apply([1], namer_output("stats")[1:2])[0].description == "As shown in the browser."
    assert ov.pinned_ids() == [0, 1]
    ov.rename(0, "Human choice")
    assert ov.apply([0], namer_output("stats")[:1])[0].name == "Human choice"


def test_overrides_win_over_namer_collisions_with_profiles(tmp_path: Path) -> None:
    ps = [make_profile(0, relative={"recency": 0.3}), make_profile(1)]
    names = StatsNamer().name(ps)
    Overrides(tmp_path).rename(1, names[0].name)  # a human reuses cohort 0's name
    out = Overrides(tmp_path).apply([0, 1], names, profiles=ps)
    assert out[1].name == names[0].name and out[1].namer == "override"
    assert out[0].name != names[0].name and out[0].name.startswith(names[0].name)


def test_writes_are_atomic_and_errors_are_clear(tmp_path: Path) -> None:
    ov = Overrides(tmp_path)
    ov.rename(3, "Some name")
    assert [p.name for p in tmp_path.iterdir()] == ["overrides.json"]  # no temp files left
    with pytest.raises(NamingError, match="must not be empty"):
        ov.rename(3, "   ")
    with pytest.raises(NamingError, match="2 cohort ids but 1 names"):
        ov.apply([0, 1], namer_output("x")[:1])
    (tmp_path / "overrides.json").write_text("{broken")
    with pytest.raises(NamingError, match="not valid JSON"):
        ov.apply([0], namer_output("x")[:1])
