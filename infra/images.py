"""ECR repositories and the two images, built with BuildKit and pushed by digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.config import REPO_ROOT, StackConfig
from infra.model_export import ModelExport

# Repository-relative inputs of each image: a change to any of them gives a new tag
# (the repositories' tags are immutable).
GATEWAY_INPUTS = ("pyproject.toml", "uv.lock", "services/gateway")
MODEL_INPUTS = ("services/tf-serving/Dockerfile", "services/tf-serving/config")
CACHE_TAG_PREFIX = "buildcache"
LIFECYCLE_POLICY = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "drop untagged layers after a week",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "keep the 20 newest releases",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": ["v-*"],
                "countType": "imageCountMoreThan",
                "countNumber": 20,
            },
            "action": {"type": "expire"},
        },
    ]
}


def content_tag(paths: Iterable[Path], extra: str = "") -> str:
    """``v-<hash>`` of the files under ``paths`` (names and bytes) plus ``extra``."""
    digest = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(root.parent)).encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return "v-" + digest.hexdigest()[:16]


class ImageRegistry(pulumi.ComponentResource):
    """One ECR repository per image, and the images built from this checkout."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        cluster_name: str,
        export: ModelExport,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:ImageRegistry", name, None, opts)
        self.gateway_repo = self._repository(f"{cluster_name}-gateway")
        self.model_repo = self._repository(f"{cluster_name}-model")

        variant = "-gpu" if cfg.model.on_gpu else ""
        self.gateway_image = self._image(
            "gateway",
            self.gateway_repo,
            dockerfile="services/gateway/Dockerfile",
            tag=content_tag(REPO_ROOT / p for p in GATEWAY_INPUTS),
        )
        self.model_image = self._image(
            "model",
            self.model_repo,
            dockerfile="services/tf-serving/Dockerfile",
            tag=content_tag(
                [*(REPO_ROOT / p for p in MODEL_INPUTS), export.path / export.name],
                extra=variant,
            ),
            build_args={"VARIANT": variant},
            named_contexts={"models": str(export.path)},
        )
        # Deployments pull by digest: what was pushed, never a moving tag.
        self.gateway_ref = pulumi.Output.concat(
            self.gateway_repo.repository_url, "@", self.gateway_image.digest
        )
        self.model_ref = pulumi.Output.concat(
            self.model_repo.repository_url, "@", self.model_image.digest
        )
        self.register_outputs(
            {
                "gateway_repository": self.gateway_repo.repository_url,
                "model_repository": self.model_repo.repository_url,
                "gateway_image": self.gateway_ref,
                "model_image": self.model_ref,
            }
        )

    def _repository(self, repo_name: str) -> aws.ecr.Repository:
        repo = aws.ecr.Repository(
            repo_name,
            name=repo_name,
            # Release tags can never be moved; only the build cache tag is rewritten.
            image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
            image_tag_mutability_exclusion_filters=[
                aws.ecr.RepositoryImageTagMutabilityExclusionFilterArgs(
                    filter=f"{CACHE_TAG_PREFIX}*", filter_type="WILDCARD"
                )
            ],
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            force_delete=True,  # `pulumi destroy` removes the images too: nothing left billing
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ecr.LifecyclePolicy(
            f"{repo_name}-lifecycle",
            repository=repo.name,
            policy=json.dumps(LIFECYCLE_POLICY),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return repo

    def _image(
        self,
        name: str,
        repo: aws.ecr.Repository,
        *,
        dockerfile: str,
        tag: str,
        build_args: dict[str, str] | None = None,
        named_contexts: dict[str, str] | None = None,
    ) -> docker_build.Image:
        auth = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id)
        cache_ref = pulumi.Output.concat(repo.repository_url, f":{CACHE_TAG_PREFIX}")
        return docker_build.Image(
            f"{name}-image",
            context=docker_build.BuildContextArgs(
                location=str(REPO_ROOT),
                named={
                    key: docker_build.ContextArgs(location=value)
                    for key, value in (named_contexts or {}).items()
                },
            ),
            dockerfile=docker_build.DockerfileArgs(location=str(REPO_ROOT / dockerfile)),
            platforms=[docker_build.Platform.LINUX_AMD64],
            build_args=build_args or {},
            push=True,
            tags=[pulumi.Output.concat(repo.repository_url, f":{tag}")],
            registries=[
                docker_build.RegistryArgs(
                    address=repo.repository_url,
                    username=auth.user_name,
                    password=auth.password,
                )
            ],
            cache_from=[
                docker_build.CacheFromArgs(
                    registry=docker_build.CacheFromRegistryArgs(ref=cache_ref)
                )
            ],
            cache_to=[
                docker_build.CacheToArgs(
                    registry=docker_build.CacheToRegistryArgs(
                        ref=cache_ref,
                        mode=docker_build.CacheMode.MAX,
                        image_manifest=True,  # the cache format ECR accepts
                        oci_media_types=True,
                    )
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
