from pathlib import Path

import pytest

from edgekit.config import (
    Budgets,
    apply_overrides,
    available_profiles,
    load_build_config,
    load_profile,
)
from edgekit.errors import ConfigError, TargetNotFoundError

REQUIRED_PROFILES = {
    "raspberry-pi-4", "raspberry-pi-5", "raspberry-pi-zero-2w", "android-phone",
    "iphone-ios17", "iphone-ios18", "esp32-s3", "jetson-orin-nano",
}


def test_every_required_profile_ships_and_validates() -> None:
    assert REQUIRED_PROFILES <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.name == name
        assert profile.artifacts


def test_jetson_profile_exercises_every_onnx_precision() -> None:
    profile = load_profile("jetson-orin-nano")
    assert {(a.format, a.precision) for a in profile.artifacts} == {
        ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("onnx", "int4")
    }


def test_microcontroller_profile_wants_integer_io_and_memory_budgets() -> None:
    profile = load_profile("esp32-s3")
    assert profile.device.kind == "microcontroller"
    assert all(a.io == "int8" and a.precision == "int8" for a in profile.artifacts)
    assert profile.budgets.max_flash_kb and profile.budgets.max_arena_kb


def test_unknown_target_suggests_close_names() -> None:
    with pytest.raises(TargetNotFoundError) as err:
        load_profile("raspbery-pi-4")
    assert "raspberry-pi-4" in err.value.message
    assert err.value.exit_code == 2


def test_profile_typo_names_key_and_file(tmp_path: Path) -> None:
    text = (Path(load_profile("raspberry-pi-4").source)).read_text()
    bad = tmp_path / "pi.toml"
    bad.write_text(text.replace("max_size_mb", "max_sise_mb"))
    with pytest.raises(ConfigError) as err:
        load_profile(str(bad))
    assert "budgets.max_sise_mb" in err.value.message
    assert str(bad) in err.value.message


def test_profile_with_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(str(bad))


def test_budgets_merge_only_set_fields() -> None:
    base = Budgets(max_size_mb=8.0, max_accuracy_drop=0.01)
    merged = base.merged(Budgets(max_accuracy_drop=0.02))
    assert merged.max_size_mb == 8.0
    assert merged.max_accuracy_drop == 0.02


def test_build_config_overrides_apply_per_target(tmp_path: Path) -> None:
    config_file = tmp_path / "edgekit.toml"
    config_file.write_text(
        """
[model]
path = "model.pt2"
[data]
path = "data.npz"
[build]
targets = ["raspberry-pi-4"]
[budgets]
max_size_mb = 1.0
[overrides.raspberry-pi-4.budgets]
max_accuracy_drop = 0.05
[[overrides.raspberry-pi-4.artifacts]]
format = "onnx"
precision = "fp16"
"""
    )
    config = load_build_config(config_file)
    assert config.resolve("data.npz") == tmp_path / "data.npz"
    profile = apply_overrides(load_profile("raspberry-pi-4"), config)
    assert profile.budgets.max_size_mb == 1.0
    assert profile.budgets.max_accuracy_drop == 0.05
    assert [a.label for a in profile.artifacts] == ["onnx-fp16"]


def test_build_config_refuses_unknown_keys_and_two_model_sources(tmp_path: Path) -> None:
    config_file = tmp_path / "edgekit.toml"
    config_file.write_text('[model]\npath = "a.pt2"\nfactory = "m:f"\n[data]\npath = "d.npz"\ncolour = 1\n')
    with pytest.raises(ConfigError) as err:
        load_build_config(config_file)
    assert "data.colour" in err.value.message
    assert "exactly one of model.path and model.factory" in err.value.message


# ------------------------------------------------------------------ [search]


def _search_config(tmp_path: Path, table: str) -> Path:
    config_file = tmp_path / "edgekit.toml"
    config_file.write_text(f'[model]\npath = "a.pt2"\n[data]\npath = "d.npz"\n{table}')
    return config_file


def test_search_tables_merge_profile_then_config_then_override(tmp_path: Path) -> None:
    profile_file = tmp_path / "device.toml"
    profile_file.write_text(
        'name = "device"\ndescription = "d"\n[device]\nkind = "sbc"\narch = "aarch64"\ncores = 4\nram_mb = 1024\n'
        '[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
        '[search]\nauto = true\nprecisions = ["fp32", "int8"]\n'
    )
    config = load_build_config(_search_config(
        tmp_path, '[build]\ntargets = ["device.toml"]\n[search]\nsparsity = [0.5, 0.8]\nobjective = "download"\n[search.train]\nepochs = 3\n'
                  '[overrides.device.search]\nwidth = [0.5]\n'))
    from edgekit.config import parse_profile, read_toml

    profile = apply_overrides(parse_profile(read_toml(profile_file, "profile"), str(profile_file)), config)
    space = profile.search
    assert space.auto and space.precisions == ["fp32", "int8"]  # from the profile
    assert space.objective == "download" and space.sparsity == [0.5, 0.8] and space.train.epochs == 3  # config
    assert space.width == [0.5]  # per-target override
    names = [v.name for v in space.variants()]
    assert names == ["model", "pruned-s0.5", "pruned-s0.8", "student-w0.5", "student-w0.5+pruned-s0.5",
                     "student-w0.5+pruned-s0.8"]
    distill, prune = space.variants()[-1].stages(space.train)
    assert distill.width == 0.5 and prune.method == "unstructured" and prune.sparsity == 0.8 and prune.epochs == 3


@pytest.mark.parametrize("table, message", [
    ("[search]\nsparsity = [1.2]\n", "search.sparsity.0"),
    ("[search]\nmacs_ratio = [0.0]\n", "search.macs_ratio.0"),
    ("[search]\nwidth = [0.5, 0.5]\n", "listed twice"),
    ("[search]\nprecisions = []\n", "nothing to search"),
    ("[search]\nprecisions = [\"int3\"]\n", "search.precisions.0"),
    ("[search]\nobjective = \"cheapest\"\n", "search.objective"),
    ("[search]\nsparsty = [0.5]\n", "unknown key 'search.sparsty'"),
])
def test_bad_search_settings_are_config_errors(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_build_config(_search_config(tmp_path, table))
    assert message in err.value.message


def test_auto_switches_search_on_with_the_default_space() -> None:
    from edgekit.config import with_search_on

    profile = with_search_on(load_profile("raspberry-pi-4"))
    assert profile.search.auto and profile.search.precisions is None
    assert [v.name for v in profile.search.variants()] == ["model"]


def test_each_precision_has_a_quality_bar_and_explicit_budgets_win(tmp_path: Path) -> None:
    from edgekit.config import DEFAULT_QUALITY, load_profile

    profile = load_profile("raspberry-pi-4")
    for precision, bar in DEFAULT_QUALITY.items():
        budgets = profile.budgets_for(precision)
        assert budgets.min_cosine == bar.min_cosine and budgets.min_sqnr_db == bar.min_sqnr_db
    assert profile.budgets_for("int8").min_cosine > profile.budgets_for("int4").min_cosine
    custom = tmp_path / "custom.toml"
    custom.write_text('name = "custom"\ndescription = "d"\n[device]\nkind = "sbc"\narch = "a"\ncores = 1\nram_mb = 1\n'
                      '[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
                      '[budgets]\nmin_cosine = 0.9\n[fidelity.int8]\nmin_sqnr_db = 20.0\n[fidelity.dynamic-int8]\n'
                      'min_top1_agreement = 0.5\n')
    loaded = load_profile(custom)
    assert loaded.budgets_for("int8").min_cosine == 0.9  # [budgets] wins over the bar
    assert loaded.budgets_for("int8").min_sqnr_db == 20.0
    assert loaded.budgets_for("int8").min_top1_agreement == DEFAULT_QUALITY["int8"].min_top1_agreement
    assert loaded.budgets_for("dynamic-int8").min_top1_agreement == 0.5


def test_an_accuracy_allowance_can_differ_per_precision() -> None:
    from edgekit.config import load_profile

    profile = load_profile("jetson-orin-nano")
    assert profile.budgets.max_accuracy_drop is None
    assert profile.budgets_for("int8").max_accuracy_drop == 0.01
    assert profile.budgets_for("int4").max_accuracy_drop == 0.02
    assert load_profile("raspberry-pi-4").budgets_for("int4").max_accuracy_drop == 0.01  # [budgets] one for all


def test_build_config_fidelity_layers_over_the_profile(tmp_path: Path) -> None:
    from edgekit.config import apply_overrides, load_build_config, load_profile

    config = tmp_path / "edgekit.toml"
    config.write_text('[model]\npath = "m.pt2"\n[fidelity.int4]\nmin_cosine = 0.9\n'
                      '[overrides.raspberry-pi-4.fidelity.int4]\nmin_sqnr_db = 5.0\n')
    profile = apply_overrides(load_profile("raspberry-pi-4"), load_build_config(config))
    assert profile.budgets_for("int4").min_cosine == 0.9 and profile.budgets_for("int4").min_sqnr_db == 5.0
    assert profile.budgets_for("int8").min_cosine == 0.99


def test_a_typo_in_a_fidelity_table_is_an_error(tmp_path: Path) -> None:
    from edgekit.config import load_profile
    from edgekit.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "d"\n[device]\nkind = "sbc"\narch = "a"\ncores = 1\nram_mb = 1\n'
                   '[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n[fidelity.int8]\nmin_cosin = 0.9\n')
    with pytest.raises(ConfigError, match="fidelity.int8.min_cosin"):
        load_profile(bad)
