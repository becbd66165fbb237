"""Docker image references, parsed once: `[registry[:port]/]path[:tag][@sha256:digest]`.

The one parser of image references: spec validation, pulls (the Engine wants repository and tag apart)
and registry auth (which host to authenticate against) all use `ImageRef.parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Docker's reference grammar, simplified: the registry part is recognised later (see `registry`).
_REF_RE = re.compile(
    r"^(?P<name>[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


class InvalidImageRef(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    registry: str | None  # host[:port]; None for Docker Hub (`name`, `user/name`)
    path: str  # repository path within the registry
    tag: str | None
    digest: str | None  # sha256:<64 hex>

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        m = _REF_RE.match(image)
        if not m:
            raise InvalidImageRef(f"{image!r} is not a valid image reference (name[:tag] or name@sha256:<64 hex>)")
        first = (m.group("name") or "").rstrip("/")
        registry: str | None = None
        path = m.group("path")
        if first:
            # `user/name` is a Docker Hub path; a first component with a dot, a port or `localhost` is a host.
            if "." in first or ":" in first or first == "localhost":
                registry = first
            elif first.lower() == first:
                path = f"{first}/{path}"
            else:
                raise InvalidImageRef(f"{image!r} is not a valid image reference (upper case in the repository name)")
        return cls(registry=registry, path=path, tag=m.group("tag"), digest=m.group("digest"))

    @property
    def repository(self) -> str:
        """What `docker pull` takes before `:tag`/`@digest`: registry and path."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    def pull_args(self) -> tuple[str, str]:
        """(repository, tag or digest) for the Engine's pull API: the digest wins; the default tag is latest."""
        return self.repository, self.digest or self.tag or "latest"


def checked(image: str) -> str:
    """`image` itself when it parses; else ValueError with the reason (what pydantic validators raise)."""
    try:
        ImageRef.parse(image)
    except InvalidImageRef as e:
        raise ValueError(str(e)) from None
    return image


def is_valid(image: str) -> bool:
    try:
        ImageRef.parse(image)
    except InvalidImageRef:
        return False
    return True


_DOCKER_HUB = (None, "docker.io", "index.docker.io", "registry-1.docker.io")


def local_repository(reference: str) -> str | None:
    """The repository a reference names, as Docker lists it locally (`docker.io/library/x` is `x`); None if
    unparsable."""
    try:
        ref = ImageRef.parse(reference)
    except InvalidImageRef:
        return None
    if ref.registry in _DOCKER_HUB:
        return ref.path.removeprefix("library/")
    return ref.repository


def local_names(reference: str) -> set[str]:
    """The names under which Docker lists the image `reference` means (`x` is `x:latest`; a digest its own)."""
    try:
        ref = ImageRef.parse(reference)
    except InvalidImageRef:
        return set()
    repo = local_repository(reference)
    out = set()
    if ref.digest:
        out.add(f"{repo}@{ref.digest}")
    if ref.tag or not ref.digest:
        out.add(f"{repo}:{ref.tag or 'latest'}")
    return out
