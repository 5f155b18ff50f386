"""What TF Serving and the gateway scale on: KEDA's ScaledObject on the images asked for
(never GPU utilisation), dev going to zero when idle and prod never, the target derived
from the measured knee, and the config rules around it. The ScaledObjects' schema is
checked with every custom object (test_manifests); their PromQL with the rest
(test_monitoring)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from infra.cluster import CPU_NODES
from infra.config import ConfigError, parse_config, parse_stack_file, stack_file
from infra.demand import (
    DEFAULT_GPU_CEILING,
    HPA_TOLERANCE,
    KNEE,
    WAKE_ESTIMATE_S,
    Demand,
)
from infra.keda import KEDA
from infra.kube import GATEWAY, TF_SERVING
from infra.monitoring import PROMETHEUS_PORT, PROMETHEUS_URL
from infra.program import plan
from infra.serving import NAMESPACE
from serving_contract.gateway_env import MODEL_WAKE_ESTIMATE_S
from serving_contract.metrics import IMAGES_COUNTER
from serving_contract.model import DEFAULT_MODEL_NAME
from tests.infra.conftest import with_export
from tests.infra.harness import StackRun, run_stack
from tests.infra.test_monitoring import metric_names, rule_exprs

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
# ../shared/notes/gpu-utilisation-vs-load.md (one H200, TF Serving's batching semantics):
# load as a share of one replica's ceiling -> p99 ms, and GPU utilisation %.
MEASURED = {
    0.01: (4.7, 7), 0.05: (5.0, 23), 0.10: (5.6, 37), 0.20: (6.6, 63), 0.30: (8.5, 75),
    0.40: (11.4, 85), 0.50: (17.6, 89), 0.60: (19.7, 90), 0.70: (20.6, 90),
    0.80: (22.9, 89), 0.90: (256, 87), 1.20: (672, 87),
}  # fmt: skip
HELD_MS = 25  # what "held" means in that table: p99 within a few ms of the unloaded one


def scaler(run: StackRun) -> dict[str, Any]:
    spec: dict[str, Any] = run.one(SCALED_OBJECT, TF_SERVING.name).inputs["spec"]
    return spec


def test_the_target_sits_below_the_measured_knee() -> None:
    """The autoscaler acts once the load passes the target by its tolerance: that point is
    at or below the highest load whose p99 held, and the next measured load broke it."""
    held = max(load for load, (p99, _) in MEASURED.items() if p99 <= HELD_MS)
    broke = min(load for load, (p99, _) in MEASURED.items() if p99 > HELD_MS)
    assert (held, broke) == (KNEE, 0.9)
    demand = Demand(DEFAULT_GPU_CEILING, None, "http://p", NAMESPACE)
    assert demand.target * (1 + HPA_TOLERANCE) <= KNEE * DEFAULT_GPU_CEILING
    assert demand.target > 0.7 * DEFAULT_GPU_CEILING  # no more headroom than the rule asks


def test_utilisation_cannot_tell_half_load_from_overload() -> None:
    """Why the scaler does not read it: the measured utilisation is as high at half load
    as at 120%, so no target separates them."""
    assert MEASURED[0.50][1] >= MEASURED[1.20][1]


def test_tf_serving_scales_on_the_images_asked_for_and_the_gateway_on_cpu(
    run: StackRun,
) -> None:
    spec = scaler(run)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == f"{PROMETHEUS_URL}:{PROMETHEUS_PORT}"
    assert meta["threshold"] == "145.45"  # the default ceiling's target
    assert meta["activationThreshold"] == "0"
    # an absent series is an error (fallback, alert), not a quiet zero
    assert meta["ignoreNullValues"] == "false"
    # the gateway's counter of images asked for, over the serving namespace
    assert metric_names(meta["query"]) == {f"{IMAGES_COUNTER}_total"}
    assert f'{{namespace="{NAMESPACE}"}}' in meta["query"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": TF_SERVING.name,
    }
    # the program declares no HPA for TF Serving (KEDA makes its own), and one on CPU for
    # the gateway
    assert [h.inputs["metadata"]["name"] for h in run.of_type(HPA)] == [GATEWAY.name]
    [cpu] = run.one(HPA, GATEWAY.name).inputs["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"


def test_no_autoscaler_reads_gpu_utilisation(run: StackRun) -> None:
    for scaling in run.of_type(HPA) + run.of_type(SCALED_OBJECT):
        text = json.dumps(scaling.inputs["spec"])
        assert "DCGM" not in text and "gpu_util" not in text.lower(), scaling.name


def test_dev_sleeps_when_idle_and_prod_never(stacks: dict[str, StackRun]) -> None:
    dev, prod = scaler(stacks["dev"]), scaler(stacks["prod"])
    assert dev["idleReplicaCount"] == 0
    assert dev["cooldownPeriod"] == 30 * 60  # Pulumi.dev.yaml's sleepAfterMinutes
    # not at once after `pulumi up`: KEDA takes a ScaledObject never active yet to zero
    # when initialCooldownPeriod (0 s by default) has passed since its creation
    assert dev["initialCooldownPeriod"] == dev["cooldownPeriod"]
    assert (dev["minReplicaCount"], dev["maxReplicaCount"]) == (1, 1)  # awake: its minimum
    # KEDA polls only to decide asleep or awake (its HPA polls once awake): it warns when
    # pollingInterval is set on a ScaledObject that never sleeps
    assert not {"idleReplicaCount", "cooldownPeriod", "initialCooldownPeriod"} & set(prod)
    assert "pollingInterval" not in prod and dev["pollingInterval"] == 15
    assert (prod["minReplicaCount"], prod["maxReplicaCount"]) == (2, 3)
    # Prometheus unreachable: hold the minimum rather than guess
    assert dev["fallback"]["replicas"] == 1 and prod["fallback"]["replicas"] == 2


def test_the_old_hpa_goes_before_keda_takes_the_replica_count(run: StackRun) -> None:
    """A stack deployed before KEDA has the program's HPA for TF Serving: KEDA's webhook
    refuses a second autoscaler for the Deployment, so a command deletes it first
    (infra.hpa_handover says why not KEDA's own take-over). The Deployment never declares
    replicas, so `pulumi up` never fights KEDA."""
    [command] = [
        c for c in run.of_type("command:local:Command") if c.name == "tf-serving-hpa-handover"
    ]
    assert shlex.split(command.inputs["create"])[-3:] == [
        "-m",
        "infra.hpa_handover",
        f"{NAMESPACE}/{TF_SERVING.name}",
    ]
    assert "tf-serving-hpa-handover" in run.depends_on[f"{TF_SERVING.name}-scaler"]
    obj = run.one(SCALED_OBJECT, TF_SERVING.name).inputs
    # KEDA's HPA gets its own name (keda-hpa-tf-serving), which the command never touches
    assert "name" not in obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    deployment = run.one("kubernetes:apps/v1:Deployment", TF_SERVING.name).inputs
    assert "replicas" not in deployment["spec"]


def test_keda_is_pinned_on_the_cpu_pool_and_comes_first(run: StackRun) -> None:
    release = next(
        r.inputs for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.name == "keda"
    )
    assert (release["chart"], release["version"]) == (KEDA.name, KEDA.version)
    assert release["values"]["nodeSelector"] == CPU_NODES.labels
    # its CRD and webhook before the ScaledObject
    assert "keda" in run.depends_on[f"{TF_SERVING.name}-scaler"]


def _gateway_env(run: StackRun) -> dict[str, str]:
    pod = run.one("kubernetes:apps/v1:Deployment", GATEWAY.name).inputs["spec"]["template"]
    [gateway] = [c for c in pod["spec"]["containers"] if c["name"] == GATEWAY.name]
    return {e["name"]: e.get("value") for e in gateway["env"]}


def test_the_gateway_knows_when_tf_serving_sleeps(stacks: dict[str, StackRun]) -> None:
    assert _gateway_env(stacks["dev"])[MODEL_WAKE_ESTIMATE_S.name] == str(WAKE_ESTIMATE_S)
    assert MODEL_WAKE_ESTIMATE_S.name not in _gateway_env(stacks["prod"])


def test_alerts_allow_for_wakes(stacks: dict[str, StackRun]) -> None:
    """A wake leaves TF Serving with no ready pod for minutes and answers model_waking: in
    dev neither pages anyone; prod keeps the 2-minute 'none ready' alert."""

    def none_ready(run: StackRun) -> list[str]:
        return [e for e in rule_exprs(run) if "== 0" in e]

    assert none_ready(stacks["prod"]) and not none_ready(stacks["dev"])
    for run in stacks.values():
        [errors] = [e for e in rule_exprs(run) if 'status=~"5.."' in e]
        assert 'gateway_errors_total{code="model_waking"}' in errors
        promql_parser.parse(errors)


def test_a_ceiling_of_your_own_sets_the_target(export_dir: Path) -> None:
    config = with_export("dev", export_dir)
    config["clothing-serving:tfServing"] = {
        **config["clothing-serving:tfServing"],
        "imagesPerSecond": 110,
    }
    run = run_stack("dev", config)
    assert scaler(run)["triggers"][0]["metadata"]["threshold"] == "80"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"highAvailability": True, "tfServing": {"minReplicas": 2, "maxReplicas": 2,
                                                     "sleepAfterMinutes": 30}},
            "tfServing.sleepAfterMinutes: a highly available stack keeps",
        ),
        (
            {"monitoring": {"enabled": True, "targetGpuPercent": 60}},
            "targetGpuPercent: no longer used",
        ),
        (
            {"tfServing": {"minReplicas": 1, "maxReplicas": 1, "sleepAfterMinutes": 2}},
            "tfServing.sleepAfterMinutes",
        ),
    ],
)  # fmt: skip
def test_sleeping_is_refused_where_it_cannot_work(change: dict[str, Any], message: str) -> None:
    raw = stack_file("dev")
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("clothing-serving:")}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({**values, **change}, stack="dev", region=raw["aws:region"])


@pytest.mark.parametrize(
    "change", [{"model": {"onGpu": False}}, {"monitoring": {"enabled": False}}]
)
def test_one_switch_to_cpu_scaling_leaves_the_demand_keys_aside(change: dict[str, Any]) -> None:
    """``model.onGpu: false`` or monitoring off alone: TF Serving scales on CPU and never
    sleeps, and the keys that no longer apply are named in a warning, not an error."""
    raw = stack_file("dev")
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("clothing-serving:")}
    values["tfServing"] = {**values["tfServing"], "imagesPerSecond": 90}
    cfg = parse_config({**values, **change}, stack="dev", region=raw["aws:region"])
    assert [w.split(":")[0] for w in cfg.warnings] == [
        "tfServing.imagesPerSecond",
        "tfServing.sleepAfterMinutes",
    ]
    stack = plan(cfg, DEFAULT_MODEL_NAME)
    assert stack.tf_serving.demand is None and not stack.tf_serving.sleeps
    assert not parse_stack_file("dev").warnings


def test_the_plan_says_which_stack_sleeps() -> None:
    stack = plan(parse_stack_file("dev"), DEFAULT_MODEL_NAME)
    assert stack.tf_serving.sleeps and stack.monitoring is not None and stack.monitoring.sleeps
    assert not plan(parse_stack_file("prod"), DEFAULT_MODEL_NAME).tf_serving.sleeps


def test_the_docs_quote_the_default_target() -> None:
    """The runbook's figures are the code's: the default ceiling and its target."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    runbook = (docs / "operations.md").read_text()
    demand = Demand(DEFAULT_GPU_CEILING, None, "http://p", NAMESPACE)
    assert f"by default {DEFAULT_GPU_CEILING:g} images/s" in runbook
    assert f"the default target is {demand.target:g} images/s" in runbook
    assert f"({demand.target:g} by default;" in (docs / "architecture.md").read_text()
    assert f"starts at {WAKE_ESTIMATE_S // 60} minutes" in runbook
    sleep = parse_stack_file("dev").tf_serving.sleep_after_minutes
    readme = (docs.parent / "README.md").read_text()
    assert f"Dev sleeps by itself: {sleep} minutes after the last `/predict`" in readme
    assert f"`tfServing.sleepAfterMinutes` ({sleep} in dev;" in runbook
