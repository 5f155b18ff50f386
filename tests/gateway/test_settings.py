from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError
from serving_contract import gateway_env
from serving_contract.gateway_env import MIB


def test_defaults_describe_no_model() -> None:
    """Everything about the model comes from its signature; nothing is assumed."""
    m = Settings.from_env({}).model
    assert (m.name, m.signature_name) == ("clothing-model", "serving_default")
    assert m.class_labels == ()
    assert m.image_size is None and m.preprocessing is None and m.output_activation is None
    assert m.input_name is None and m.output_name is None
    s = Settings.from_env({})
    assert s.image.resize_filter == "nearest"  # Keras load_img's default
    assert s.fetch_policy.allowed_networks == () and not s.fetch_policy.allowed_hosts


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MAX_URLS": "zero"}, "MAX_URLS: 'zero' is not an integer"),
        ({"MAX_URLS": "0"}, "MAX_URLS: must be > 0"),
        ({"MODEL_TIMEOUT_S": "-1"}, "MODEL_TIMEOUT_S"),
        ({"MODEL_TIMEOUT_S": "inf"}, "MODEL_TIMEOUT_S"),
        (
            {"GRPC_LB_POLICY": "random"},
            "GRPC_LB_POLICY: 'random' is not one of round_robin, pick_first",
        ),
        ({"PREPROCESSING": "xception"}, "PREPROCESSING"),
        ({"RESIZE_FILTER": "cubic"}, "RESIZE_FILTER"),
        ({"OUTPUT_ACTIVATION": "sigmoid"}, "OUTPUT_ACTIVATION"),
        ({"IMAGE_SIZE": "299x"}, "IMAGE_SIZE"),
        ({"IMAGE_SIZE": "0"}, "IMAGE_SIZE"),
        ({"EXIF_TRANSPOSE": "maybe"}, "EXIF_TRANSPOSE"),
        ({"CLASS_LABELS": "a,,b"}, "CLASS_LABELS: empty item"),
        ({"CLASS_LABELS": "a,b,a"}, "CLASS_LABELS: labels must be unique"),
        ({"FETCH_ALLOW": "10.0.0.0/8,not a host!"}, "FETCH_ALLOW"),
        ({"MODEL_VERSION": "-3"}, "MODEL_VERSION"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert fragment in str(info.value)


def _shown(default: object) -> str:
    """A default as the README's settings table writes it."""
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f"`{default}`"
    if isinstance(default, int) and default >= MIB and default % MIB == 0:
        return f"{default // MIB} MiB"
    if isinstance(default, int) and default >= 10**6 and default % 10**6 == 0:
        return f"{default // 10**6} M"
    return f"{default:g}" if isinstance(default, float) else str(default)


def test_the_readme_table_shows_every_variable_with_the_contracts_default() -> None:
    """Each row names variables (`A` / `B` / ...) and their defaults in the same order, or
    one default for all of them."""
    readme = (
        Path(__file__).resolve().parents[2] / "services" / "gateway" / "README.md"
    ).read_text()
    table = readme.split("## Settings (environment)\n", 1)[1].strip().split("\n\n", 1)[0]
    contract = {v.name: v for v in vars(gateway_env).values() if isinstance(v, gateway_env.Var)}
    shown: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        names_cell, defaults_cell = row.split(" | ")[:2]
        names = re.findall(r"`([A-Z0-9_]+)`", names_cell)
        defaults = defaults_cell.split(" / ")
        if len(defaults) == 1:
            defaults *= len(names)
        shown.update(zip(names, defaults, strict=True))
    assert sorted(shown) == sorted(contract)
    assert shown == {name: _shown(var.default) for name, var in contract.items()}
