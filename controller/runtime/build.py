"""The composition root: the parts every mode runs on, built once from the typed options (controller/runtime/options.py)
and handed to whichever mode runs: --once, --plan, --status (controller/cli/modes.py), --watch (controller/runtime/watch.py),
deploy, rollback and promote (controller/cli/release.py).

    Settings ─> World (drivers.host.HostWorld: Docker, Nginx, probes)
                 ├─ accessories: AccessoryRunner   only with accessories, an app's dependsOn or network (--watch: always)
                 └─ apps: Reconciler(world, store, metrics, resolver, source, dependencies=accessories.dependencies)
    --git-url ─> GitSource (open_git; the reconciler's status and history name its commit)
    --notify-url ─> Notifier (open_notifier: drivers.notify; the reconciler and the source queue release events)

Drivers (Docker SDK, httpx, boto3) load here, at build time, not when the module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.app.reconcile import Reconciler
from controller.kernel.errors import InvalidInput
from controller.runtime.options import Settings, SourceOptions, state_dir_arg
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.secrets import SecretsResolver

if TYPE_CHECKING:
    from controller.accessory.reconcile import AccessoryRunner
    from controller.drivers.notify import Notifier
    from controller.runtime.source import GitSource
    from controller.spec.accessory import Accessory
    from controller.world.protocol import World


@dataclass
class Runtime:
    """One run's World, store, metrics and reconcilers (one per kind), shared by every pass of the run."""

    settings: Settings
    world: World
    store: StateStore
    metrics: Metrics
    apps: Reconciler
    accessories: AccessoryRunner | None
    source: GitSource | None
    docker: Any  # the Docker connection (events for --watch); None for a world without one
    close: Callable[[], None]  # the World's connections, when build() made it


def needs_accessories(accessories: Sequence[Accessory], apps: Sequence[Any]) -> bool:
    """Whether the accessory kind has anything to do: accessories, or an app's dependsOn or network."""
    return bool(accessories) or any(a.spec.dependsOn or a.spec.network for a in apps)


def build(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    accessories: Sequence[Accessory] | None = None,
    source: GitSource | None = None,
    world: World | None = None,
    notifier: Notifier | None = None,
) -> Runtime:
    """The run's parts. `metrics`: the run's registry (a new one unless given; the source's metrics are bound to it
    by the caller, before a run without a valid spec exports it). `accessories`: the accessories in force (None: no
    accessory reconciler; a list, even an empty one: one, whose facts feed the apps' dependsOn). `world`: the
    host's unless given (tests). `notifier`: --notify-url's (open_notifier), closed by its opener."""
    from controller.drivers.ssm import SsmSource  # boto3 itself only once an app has secrets

    close: Callable[[], None] = _nothing
    if world is None:
        from controller.drivers.host import HostWorld  # Docker SDK and httpx load here, not at import

        host = HostWorld(settings.docker_url)
        world, close = host, host.close
    docker = getattr(world, "docker", None)
    store = StateStore(settings.state_dir)
    metrics = metrics if metrics is not None else Metrics()
    runner = None
    if accessories is not None:
        from controller.accessory.reconcile import AccessoryRunner

        runner = AccessoryRunner(world, store, metrics.registry, SsmSource())
        runner.accessories = {a.name: a for a in accessories}
    apps = Reconciler(
        world,
        store,
        metrics,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
        resolver=SecretsResolver(world.write_file, SsmSource()),
        source=source,
        dependencies=runner.dependencies if runner is not None else None,
        notify=notifier,
        prune_every=settings.prune_interval,
    )
    if notifier is not None:
        notifier.on_failure = metrics.notification_failed
    return Runtime(settings, world, store, metrics, apps, runner, source, docker, close)


def _nothing() -> None:
    """A World given by the caller is closed by the caller."""


def open_git(opts: SourceOptions, settings: Settings, *, fetch: bool, notifier: Notifier | None = None) -> GitSource:
    """The --git-url source (--git-token-ssm read first, through the secrets code)."""
    from controller.runtime.source import open_source

    token = ssm_token(opts.token_ssm, opts.token_ssm_region) if opts.token_ssm is not None else None
    return open_source(opts, settings.state_dir, token=token, fetch=fetch, notify=notifier)


NOTIFY_CLOSE_WAIT = 10.0  # seconds a run gives what is still queued, after it released the lock


def open_notifier(settings: Settings) -> Notifier | None:
    """--notify-url: the one Notifier of the run (httpx loads here); None without a URL. Its opener closes it
    (`Notifier.close(NOTIFY_CLOSE_WAIT)`) once the run is over and the lock released."""
    if not settings.notify_urls:
        return None
    from controller.drivers.notify import Notifier

    return Notifier(settings.notify_urls, on_failure=lambda reason: None)  # counted once build() has the metrics


def git_checkout(url: str, ref: str, path: str, state_dir: Path) -> tuple[Path, str]:
    """`reconcile export --git-url`: the spec path in the checkout in force and its commit (read, never fetched)."""
    from controller.runtime.source import GitSource, config_from_options

    cfg = config_from_options(SourceOptions(url=url, ref=ref, path=path))
    src = GitSource(cfg, state_dir_arg(str(state_dir)))
    concrete = src.checkout_path()
    if concrete is None:
        raise InvalidInput(f"{cfg.shown_url} {ref}: no commit in force in {state_dir} (run reconcile --once --git-url ... first)")
    return concrete, concrete.relative_to(src.root / "checkouts").parts[0]


def ssm_token(name: str, region: str | None) -> str:
    """--git-token-ssm: the parameter's current value, through the secrets code (boto3 loads here only)."""
    import pydantic

    from controller.drivers.ssm import SsmSource
    from controller.spec.app import SsmSecrets

    parent, _, leaf = name.rpartition("/")
    try:
        cfg = SsmSecrets(path=parent + "/", names=[leaf], region=region, rename={leaf: "GIT_TOKEN"})
    except pydantic.ValidationError:
        raise InvalidInput(f"--git-token-ssm: {name!r} is not an SSM parameter name (/path/name; and --git-token-ssm-region)") from None
    if not name.startswith("/") or not leaf:
        raise InvalidInput(f"--git-token-ssm: {name!r} is not an SSM parameter name (/path/name)")
    ssm = SsmSource()
    return ssm.values(cfg, ssm.versions(cfg))["GIT_TOKEN"]  # registered with the log redactor on arrival
