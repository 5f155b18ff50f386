from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from infra.capacity import INSTANCE_TYPES, PRICE_REGION
from infra.config import parse_stack_file
from infra.cost import PRICES, estimate, main, report
from tests.infra.harness import ROOT


def test_parked_minimum_and_maximum_add_up() -> None:
    dev, prod = estimate(parse_stack_file("dev")), estimate(parse_stack_file("prod"))
    for est in (dev, prod):
        assert 0 < est.parked < est.at_min < est.at_max
        assert est.parked == pytest.approx(sum(v for _, v in est.fixed))
    assert dev.at_min < prod.at_min
    nat = dict(prod.fixed)["NAT gateways x3 (+ their IPv4)"]
    assert nat == pytest.approx(3 * (PRICES["nat_gateway"] + PRICES["public_ipv4"]))


def test_parked_dev_pays_no_gpu() -> None:
    est = estimate(parse_stack_file("dev"))
    assert not any("GPU" in label or "g4dn" in label for label, _ in est.fixed)
    assert est.parked < 0.3  # control plane, one NAT, one small node, the NLB
    gpu = INSTANCE_TYPES["g4dn.xlarge"].hourly_usd
    assert est.at_min - est.parked > gpu  # at minimum, one GPU node runs


def test_idle_dev_pays_no_gpu_and_prod_is_never_idle() -> None:
    """Asleep, dev's TF Serving is at zero and its GPU node gone; the gateway and monitoring
    stay. Prod never sleeps: idle is its minimum."""
    dev, prod = estimate(parse_stack_file("dev")), estimate(parse_stack_file("prod"))
    assert dev.serving_idle is not None
    assert not any("TF Serving" in label or "g4dn" in label for label, _ in dev.serving_idle)
    assert [label for label, _ in dev.serving_idle] == [
        label for label, _ in dev.serving_min if not label.startswith("TF Serving")
    ]
    assert dev.parked < dev.idle < dev.at_min
    gpu = INSTANCE_TYPES["g4dn.xlarge"].hourly_usd
    assert dev.at_min - dev.idle > gpu
    assert prod.serving_idle is None and prod.idle == prod.at_min
    out = "\n".join(report(parse_stack_file("dev")) + report(parse_stack_file("prod")))
    assert "idle (TF Serving asleep, no GPU node)" in out
    assert "never idle (TF Serving keeps its minimum)" in out


def test_highly_available_minimum_spreads_over_zones() -> None:
    est = estimate(parse_stack_file("prod"))
    assert dict(est.serving_min)["TF Serving nodes 2 x g4dn.xlarge"] > 0
    assert any(label.startswith("gateway nodes 2 x") for label, _ in est.serving_min)


def test_extended_support_is_priced_past_the_end_of_standard_support() -> None:
    cfg = parse_stack_file("dev").model_copy(update={"cluster_version": "1.34"})
    before, after = estimate(cfg, date(2026, 11, 30)), estimate(cfg, date(2026, 12, 3))
    assert after.parked - before.parked == pytest.approx(0.50)
    assert after.extended_support and not before.extended_support
    assert "extended support" in after.fixed[0][0]


def test_cli_prints_both_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"On-demand list prices in {PRICE_REGION}, USD, 730 hours a month.")
    assert "\ndev: $" in out and "\nprod: $" in out
    assert "parked" in out and "at maximum" in out and "/month)" in out
    assert "without GPUs (model.onGpu: false): $0.49/h" in out  # dev, as the issue measured
    assert err == ""  # both stacks deploy where the prices are from


def test_cli_warns_of_another_region_and_names_a_bad_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    dev["config"]["aws:region"] = "eu-west-1"
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(dev))
    dev["config"]["clothing-serving:gateway"]["maxReplicas"] = "many"
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(dev))
    monkeypatch.setattr("infra.config.REPO_ROOT", tmp_path)
    assert main(["dev"]) == 0
    assert (
        "warning: dev deploys to eu-west-1; these are us-east-1 prices" in capsys.readouterr().err
    )
    assert main(["bad"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: Pulumi.bad.yaml: clothing-serving:gateway.maxReplicas: ")


def _by_stack(text: str) -> dict[str, list[str]]:
    """The indented lines under each unindented "<stack>..." line."""
    blocks: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            lines = blocks.setdefault(line.split(":")[0], [])
        elif line:
            lines.append(line)
    return blocks


def test_the_quota_figures_in_the_runbook_are_what_it_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main([])
    printed = _by_stack(capsys.readouterr().out)
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    quoted = _by_stack(runbook.split("## Quotas", 1)[1].split("```", 2)[1])
    assert sorted(quoted) == ["dev", "prod"]
    for stack, lines in quoted.items():
        assert sum("L-" in line for line in lines) == 3
        start = printed[stack].index(lines[0])
        assert printed[stack][start : start + len(lines)] == lines
