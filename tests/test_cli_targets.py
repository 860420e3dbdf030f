"""edgekit targets: the shipped profiles, and one profile with the quality it holds artifacts to."""

import json
import tomllib


def test_targets_lists_every_shipped_profile(cli) -> None:
    from edgekit.config import available_profiles

    result = cli("targets", "--json")
    assert result.code == 0
    assert sorted(p["name"] for p in json.loads(result.out)) == sorted(available_profiles())


def test_show_prints_the_file_and_the_quality_bars_it_implies(cli) -> None:
    result = cli("targets", "show", "jetson-orin-nano")
    assert result.code == 0, result.err
    text = result.out.split("\n", 1)[1]  # after the "# path" line
    assert tomllib.loads(text)["name"] == "jetson-orin-nano"  # the bars are comments: still valid TOML
    bars = {line.split(":")[0].strip("# "): line for line in text.splitlines() if line.startswith("#   ")}
    assert set(bars) == {"fp32", "fp16", "int8", "int4"}
    assert "min_cosine 0.99," in bars["int8"] and "max_accuracy_drop 0.01" in bars["int8"]
    assert "min_cosine 0.97," in bars["int4"] and "max_accuracy_drop 0.02" in bars["int4"]


def test_show_of_an_unknown_profile_is_bad_input(cli) -> None:
    result = cli("targets", "show", "raspbery-pi-4")
    assert result.code == 2 and "raspberry-pi-4" in result.err
