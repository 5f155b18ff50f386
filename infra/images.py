"""ECR repositories and the two images, built with BuildKit and pushed by digest.

ECR refuses to push a tag that exists (the release tags are immutable), even with the same
digest, so every push must carry a tag never pushed before, and an image must be rebuilt
exactly when its tag changes. pulumi-docker-build rebuilds when any input changes
(locations, build args, platforms, tags...) or when the hash of its build context changes:
the Dockerfile's bytes, and every file the context sends (after
``<Dockerfile>.dockerignore``) by path, mode and bytes, named contexts included.

- ``ImageBuild.content`` hashes all of that and nothing else, and the locations are
  relative to the program's directory, so another checkout path or machine changes nothing.
- The tag is ``v-<content>-<release>``: ``release`` is a random id that Pulumi draws anew
  whenever the content changes (``random.RandomId`` with the content as its keeper). A
  change reverted (content A, then B, then A again) is a third build, and gets a third tag,
  where a tag of the content alone would be A's again, which the repository still holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build
import pulumi_random as random
from docker.utils.build import PatternMatcher

from infra.model_export import ModelExport
from infra.project import REPO_ROOT

PLATFORMS = (docker_build.Platform.LINUX_AMD64,)
CACHE_TAG_PREFIX = "buildcache"
# `pulumi preview` must not build multi-GB images (nor need a Docker engine to run).
BUILD_ON_PREVIEW = False
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


def ignore_patterns(dockerfile: Path, context: Path) -> list[str]:
    """The patterns BuildKit applies to ``context``: ``<Dockerfile>.dockerignore`` if it
    exists, else ``<context>/.dockerignore``."""
    own = dockerfile.with_name(dockerfile.name + ".dockerignore")
    for candidate in (own, context / ".dockerignore"):
        if candidate.is_file():
            lines = (line.strip() for line in candidate.read_text().splitlines())
            return [line for line in lines if line and not line.startswith("#")]
    return []


def sent_files(context: Path, patterns: list[str]) -> list[str]:
    """Context-relative paths of the regular files (and symlinks) the context sends."""
    return sorted(
        path
        for path in PatternMatcher(patterns).walk(str(context))
        if os.path.islink(context / path) or (context / path).is_file()
    )


def _hash_tree(digest: Any, root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        digest.update(name.encode() + b"\0")
        digest.update(stat.filemode(path.lstat().st_mode).encode() + b"\0")
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        digest.update(hashlib.sha256(data).digest())


@dataclass(frozen=True)
class ImageBuild:
    """One image's build inputs, as pulumi-docker-build receives them."""

    dockerfile: Path
    context: Path = REPO_ROOT
    named_contexts: Mapping[str, Path] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    platforms: tuple[docker_build.Platform, ...] = PLATFORMS

    @staticmethod
    def location(path: Path) -> str:
        """``path`` relative to the program's working directory (Pulumi runs it in infra/):
        the same string in every checkout."""
        return os.path.relpath(path)

    @property
    def named_locations(self) -> dict[str, str]:
        return {k: self.location(v) for k, v in sorted(self.named_contexts.items())}

    def inputs(self) -> dict[str, object]:
        """Every input whose change makes pulumi-docker-build rebuild, except the
        registry-side ones (repository URL, cache refs), which change the tag's repository
        instead."""
        return {
            "context": self.location(self.context),
            "dockerfile": self.location(self.dockerfile),
            "named": self.named_locations,
            "build_args": dict(sorted(self.build_args.items())),
            "platforms": [str(p.value) for p in self.platforms],
            "build_on_preview": BUILD_ON_PREVIEW,
            "push": True,
        }

    def context_files(self) -> list[str]:
        return sent_files(self.context, ignore_patterns(self.dockerfile, self.context))

    def named_files(self) -> Iterator[tuple[str, Path, list[str]]]:
        """Each named context sends all its files: none has a .dockerignore of its own."""
        for name, root in sorted(self.named_contexts.items()):
            yield name, root, sent_files(root, [])

    @property
    def content(self) -> str:
        """A hash of everything the build sees."""
        digest = hashlib.sha256(json.dumps(self.inputs(), sort_keys=True).encode())
        digest.update(hashlib.sha256(self.dockerfile.read_bytes()).digest())
        _hash_tree(digest, self.context, self.context_files())
        for name, root, files in self.named_files():
            digest.update(f"named:{name}\0".encode())
            _hash_tree(digest, root, files)
        return digest.hexdigest()[:16]


def gateway_build(root: Path = REPO_ROOT) -> ImageBuild:
    return ImageBuild(dockerfile=root / "services" / "gateway" / "Dockerfile", context=root)


def proxy_build(root: Path = REPO_ROOT) -> ImageBuild:
    return ImageBuild(
        dockerfile=root / "services" / "gateway" / "proxy" / "Dockerfile", context=root
    )


def model_build(export: ModelExport, on_gpu: bool, root: Path = REPO_ROOT) -> ImageBuild:
    return ImageBuild(
        dockerfile=root / "services" / "tf-serving" / "Dockerfile",
        context=root,
        named_contexts={"models": export.path},
        build_args={"VARIANT": "-gpu" if on_gpu else ""},
    )


class ImageRegistry(pulumi.ComponentResource):
    """One ECR repository per image, and the images built from this checkout."""

    def __init__(
        self,
        name: str,
        cluster_name: str,
        export: ModelExport,
        model_on_gpu: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:ImageRegistry", name, None, opts)
        self.gateway_repo = self._repository(f"{cluster_name}-gateway")
        self.proxy_repo = self._repository(f"{cluster_name}-gateway-proxy")
        self.model_repo = self._repository(f"{cluster_name}-model")
        self.gateway_image = self._image("gateway", self.gateway_repo, gateway_build())
        self.proxy_image = self._image("proxy", self.proxy_repo, proxy_build())
        self.model_image = self._image("model", self.model_repo, model_build(export, model_on_gpu))
        # Deployments pull by digest: what was pushed, never a moving tag.
        self.gateway_ref = self._ref(self.gateway_repo, self.gateway_image)
        self.proxy_ref = self._ref(self.proxy_repo, self.proxy_image)
        self.model_ref = self._ref(self.model_repo, self.model_image)
        self.register_outputs(
            {
                "gateway_repository": self.gateway_repo.repository_url,
                "model_repository": self.model_repo.repository_url,
                "gateway_image": self.gateway_ref,
                "proxy_image": self.proxy_ref,
                "model_image": self.model_ref,
            }
        )

    @staticmethod
    def _ref(repo: aws.ecr.Repository, image: docker_build.Image) -> pulumi.Output[str]:
        return pulumi.Output.concat(repo.repository_url, "@", image.digest)

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

    def _image(self, name: str, repo: aws.ecr.Repository, build: ImageBuild) -> docker_build.Image:
        auth = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id)
        login = docker_build.RegistryArgs(
            address=repo.repository_url, username=auth.user_name, password=auth.password
        )
        return pushed_image(name, repo.repository_url, build, self, login)


def pushed_image(
    name: str,
    repository: pulumi.Input[str],
    build: ImageBuild,
    parent: pulumi.Resource,
    login: docker_build.RegistryArgs | None = None,
    cache: bool = True,
) -> docker_build.Image:
    """``build``, pushed to ``repository`` under a tag it has never held (``v-<content>-
    <release>``); ``login``: the registry's credentials (None: the local Docker's own, or
    none); ``cache``: BuildKit's cache in the same repository, for builds on other machines
    (a local registry has no use for it: the local Docker keeps its own)."""
    cache_ref = pulumi.Output.concat(repository, f":{CACHE_TAG_PREFIX}")
    content = build.content
    release = random.RandomId(
        f"{name}-release",
        byte_length=4,
        keepers={"content": content},  # a new id whenever the content changes
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return docker_build.Image(
        f"{name}-image",
        context=docker_build.BuildContextArgs(
            location=build.location(build.context),
            named={
                key: docker_build.ContextArgs(location=location)
                for key, location in build.named_locations.items()
            },
        ),
        dockerfile=docker_build.DockerfileArgs(location=build.location(build.dockerfile)),
        platforms=list(build.platforms),
        build_args=dict(build.build_args),
        build_on_preview=BUILD_ON_PREVIEW,
        push=True,
        tags=[pulumi.Output.concat(repository, f":v-{content}-", release.hex)],
        registries=[login] if login else None,
        cache_from=[
            docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref))
        ]
        if cache
        else None,
        cache_to=[
            docker_build.CacheToArgs(
                registry=docker_build.CacheToRegistryArgs(
                    ref=cache_ref,
                    mode=docker_build.CacheMode.MAX,
                    image_manifest=True,  # the cache format ECR accepts
                    oci_media_types=True,
                )
            )
        ]
        if cache
        else None,
        opts=pulumi.ResourceOptions(parent=parent),
    )
