from __future__ import annotations

import pytest

from infra.config import parse_stack_file
from infra.cost import PRICES, estimate, main


def test_dev_is_cheaper_than_prod_and_adds_up() -> None:
    dev, prod = estimate(parse_stack_file("dev")), estimate(parse_stack_file("prod"))
    assert 0 < dev.at_desired < prod.at_desired <= prod.at_max
    assert dev.at_desired == pytest.approx(sum(v for _, v in dev.lines))
    nat = dict(prod.lines)["NAT gateways x3 (+ their IPv4)"]
    assert nat == pytest.approx(3 * (PRICES["nat_gateway"] + PRICES["public_ipv4"]))


def test_unknown_instance_type_is_named() -> None:
    cfg = parse_stack_file("dev")
    odd = cfg.model_copy(
        update={"gpu_nodes": cfg.gpu_nodes.model_copy(update={"instance_types": ["g6.48xlarge"]})}
    )
    with pytest.raises(KeyError, match=r"g6\.48xlarge"):
        estimate(odd)


def test_cli_prints_both_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    main([])
    out = capsys.readouterr().out
    assert out.startswith("dev: $") and "\nprod: $" in out
