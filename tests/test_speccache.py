"""The validated-spec cache (controller/spec/cache.py): a hit, a miss on any change of the file or of the models, entries
that are corrupt or hostile (a miss, never followed, never blocking), its bound, and the cached form answering
everything the controller asks of a spec exactly as the model does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from controller.kernel.errors import SpecError
from controller.spec import cache as speccache
from controller.spec.app import BlueGreenApp
from controller.spec.base import COLORS, preview_app
from controller.spec.cache import RECORDS, CachedApp, Record, SpecCache, decode, encode, same
from controller.spec.directory import load_document, select
from tests.factories import app_doc, make_app

ROOT = Path(__file__).resolve().parent.parent

# Specs that use every kind of field: nested models, optional ones, paths, lists, maps, floats and limits.
RICH = app_doc(
    env={"A": "1", "B": "x y"},
    labels={"team": "core", "m": "a label named like a tag"},
    network="dialogue",
    dependsOn=["redis"],
    resources={"memory": "1g", "memoryReservation": "512m", "cpus": 1.5, "pidsLimit": 100},
    secrets={"ssm": {"path": "/dialogue/prod/", "region": "eu-west-1", "names": ["DB"], "rename": {"DB": "DB_URL"}},
             "envFile": "/run/dialogue.env"},
    preview={"image": "dialogue:2", "env": {"B": "preview"}},
    checks={"beforeSwitch": [{"http": {"path": "/ready", "bodyContains": "ok"}}, {"command": ["/bin/true"], "timeoutSeconds": 5}]},
    hooks={"beforeSwitch": {"command": ["migrate"]}, "afterSwitch": {"command": ["warm"], "timeoutSeconds": 30}},
    verify={"windowSeconds": 30, "maxLatencyP99Ms": 250.5, "accessLog": "/var/log/nginx/d.log",
            "prometheus": {"url": "https://prom.example:9090", "query": "rate(x{app=\"{app}\"}[1m])", "max": 0.5}},
    failover="previous",
    healthCheck={"intervalSeconds": 1, "timeoutSeconds": 10, "stableSeconds": 0},
)  # fmt: skip
CORPUS = [app_doc(), RICH, app_doc(nginx={"switch": "reload", "upstreamFile": "/nginx/x.conf"}, standby="stop", keepImages=10)]


def _spec_file(tmp_path: Path, doc: dict[str, Any], name: str = "dialogue.yaml") -> tuple[Path, bytes]:
    path = tmp_path / "specs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, path.read_bytes()


def _filled(tmp_path: Path, doc: dict[str, Any] | None = None) -> tuple[SpecCache, bytes, BlueGreenApp]:
    cache = SpecCache(tmp_path / "state")
    data = yaml.safe_dump(doc or app_doc(), sort_keys=False).encode()
    app = BlueGreenApp.model_validate(yaml.safe_load(data))
    assert cache.store(data, app)
    return cache, data, app


def _entry(cache: SpecCache, data: bytes) -> Path:
    key = cache.key(data)
    assert key is not None
    return cache.dir / f"{key}.json"


# ------------------------------------------------------------------------------------------ the cached form


@pytest.mark.parametrize("doc", CORPUS, ids=["minimal", "every-field", "reload-stop"])
def test_the_cached_form_answers_as_the_model_does(doc: dict[str, Any]) -> None:
    app = BlueGreenApp.model_validate(doc)
    cached = decode(json.loads(json.dumps(encode(app))))
    assert isinstance(cached, CachedApp)
    assert same(cached, app)
    assert cached.model_dump(mode="json") == app.model_dump(mode="json")
    assert cached.model_dump() == app.model_dump()  # python mode: paths stay Path objects
    for color in COLORS:
        assert cached.revision(color, {"DB": "v3"}) == app.revision(color, {"DB": "v3"})
        assert cached.container_name(color) == app.container_name(color) and cached.spec.ports.of(color) == app.spec.ports.of(color)
    assert (cached.name, cached.marker_path, cached.upstream_file, cached.flag_file, cached.access_log, cached.preview_flag_file) == (
        app.name, app.marker_path, app.upstream_file, app.flag_file, app.access_log, app.preview_flag_file)
    pv_cached, pv_app = preview_app(cached), preview_app(app)
    assert pv_cached.model_dump(mode="json") == pv_app.model_dump(mode="json")
    assert [pv_cached.revision(c) for c in COLORS] == [pv_app.revision(c) for c in COLORS]
    r, m = cached.spec.resources, app.spec.resources
    if r is not None and m is not None:
        assert (r.memory_bytes, r.reservation_bytes, r.nano_cpus, r.limits(), r.revision_input(), r.describe()) == (
            m.memory_bytes, m.reservation_bytes, m.nano_cpus, m.limits(), m.revision_input(), m.describe())
    with pytest.raises(AttributeError):
        setattr(cached.spec, "image", "other:1")  # noqa: B010  (frozen, like the model)


def test_every_method_and_property_a_spec_model_has_a_cached_record_has_too() -> None:
    """A rule added to a model (say `Ports.describe`) must be added to its record (controller/spec/base.py), or a cron
    run whose spec is cached would fail where a validated one works."""
    found: dict[str, type[BaseModel]] = {}

    def walk(v: Any) -> None:
        if isinstance(v, BaseModel):
            found[type(v).__name__] = type(v)
            for k in type(v).model_fields:
                walk(getattr(v, k))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(BlueGreenApp.model_validate(RICH))
    assert {"BlueGreenApp", "AppSpec", "Ports", "Resources", "VerifySpec", "PrometheusVerify", "HookSpec"} <= set(found)
    for name, cls in found.items():
        own = {n for n in dir(cls) if not n.startswith("_") and n not in dir(BaseModel) and n not in cls.model_fields}
        record = RECORDS.get(name, Record)
        assert {n for n in own if not hasattr(record, n)} == set(), f"{name}: the cached record lacks these"


def test_a_label_or_env_key_shaped_like_a_tag_stays_data() -> None:
    app = make_app(labels={"m": "x", "f": "y"}, env={"p": "/etc", "d": "1", "l": "2"})
    cached = decode(json.loads(json.dumps(encode(app))))
    assert cached.spec.labels == {"m": "x", "f": "y"} and cached.spec.env == {"p": "/etc", "d": "1", "l": "2"}


# --------------------------------------------------------------------------------------------- hit and miss


def test_a_hit_returns_the_cached_app_a_changed_byte_misses(tmp_path: Path) -> None:
    cache, data, app = _filled(tmp_path)
    hit = cache.load(data)
    assert isinstance(hit, CachedApp) and same(hit, app)
    assert cache.load(data + b"\n") is None  # any byte: a new key
    assert cache.load(data.replace(b"dialogue:1", b"dialogue:2")) is None
    entry = json.loads(_entry(cache, data).read_text())
    assert set(entry) == {"format", "key", "sha256", "app"} and _entry(cache, data).stat().st_mode & 0o777 == 0o600


def test_another_controller_version_or_models_schema_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert all((speccache._PACKAGE / name).is_file() for name in speccache._FINGERPRINT_FILES)  # else: no cache at all
    cache, data, _ = _filled(tmp_path)
    assert cache.load(data) is not None
    monkeypatch.setattr(speccache, "_fingerprint", None)
    monkeypatch.setattr(speccache, "__version__", "99.0.0")
    assert cache.load(data) is None  # an upgrade validates again

    monkeypatch.undo()
    package = tmp_path / "package"
    for name in speccache._FINGERPRINT_FILES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speccache._PACKAGE / name, package / name)
    monkeypatch.setattr(speccache, "_PACKAGE", package)
    monkeypatch.setattr(speccache, "_fingerprint", None)
    assert cache.load(data) is not None  # the same schema and code: the same key
    schema = package / "schema" / "bluegreen.schema.json"
    schema.write_text(schema.read_text().replace('"BlueGreenApp"', '"BlueGreenApp2"', 1))
    monkeypatch.setattr(speccache, "_fingerprint", None)
    assert cache.load(data) is None  # another schema: a miss
    monkeypatch.setattr(speccache, "_fingerprint", None)
    (package / "spec" / "app.py").write_text((package / "spec" / "app.py").read_text() + "\n# a validator changed\n")
    schema.write_text((speccache._PACKAGE / "schema" / "bluegreen.schema.json").read_text())
    assert cache.load(data) is None  # the same schema, other validating code: a miss too


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text(p.read_text()[:40]),  # torn
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "app": json.loads(p.read_text())["app"].replace("dialogue:1", "dialogue:9")})),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": 2})),
        lambda p: p.write_text("[]"),
        lambda p: p.write_bytes(b"\xff\xfe" * 10),
    ],
    ids=["torn", "payload-edited", "other-format", "not-an-entry", "not-utf8"],
)
def test_a_corrupt_entry_is_a_miss_and_the_next_store_replaces_it(tmp_path: Path, damage: Any) -> None:
    cache, data, app = _filled(tmp_path)
    damage(_entry(cache, data))
    assert cache.load(data) is None
    assert cache.store(data, app) and isinstance(cache.load(data), CachedApp)


def test_a_well_formed_payload_of_the_wrong_shape_or_of_another_key_is_a_miss(tmp_path: Path) -> None:
    import hashlib

    cache, data, _ = _filled(tmp_path)
    path = _entry(cache, data)
    entry = json.loads(path.read_text())
    for payload in ('{"m": "Ports", "f": {"blue": 1, "green": 2}}', '{"x": 1}', "[1, 2]", '{"m": "BlueGreenApp", "f": {"spec": {"q": 1}}}'):
        path.write_text(json.dumps({**entry, "app": payload, "sha256": hashlib.sha256(payload.encode()).hexdigest()}))
        assert cache.load(data) is None, payload
    other = data + b"# another file\n"
    _entry(cache, other).write_text(json.dumps(entry))  # a valid entry under another key's name
    assert cache.load(other) is None


def test_a_hostile_entry_is_never_followed_and_never_blocks(tmp_path: Path) -> None:
    cache, data, _ = _filled(tmp_path)
    path = _entry(cache, data)
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)  # a link to a valid entry: not followed
    assert cache.load(data) is None
    path.unlink()
    os.mkfifo(path)  # a FIFO: never opened for reading (no writer would hang the run)
    assert cache.load(data) is None
    path.unlink()
    path.mkdir()
    assert cache.load(data) is None


def test_an_untrusted_cache_directory_is_a_miss_and_is_not_written(tmp_path: Path) -> None:
    cache, data, app = _filled(tmp_path)
    cache.dir.chmod(0o777)  # anybody could have put an entry there
    try:
        assert cache.load(data) is None
        assert cache.store(data, app) is False
    finally:
        cache.dir.chmod(0o755)


def test_the_cache_keeps_at_most_max_entries_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speccache, "MAX_ENTRIES", 3)
    cache = SpecCache(tmp_path / "state")
    stored = []
    for i in range(5):
        data = yaml.safe_dump(app_doc(image=f"dialogue:{i}"), sort_keys=False).encode()
        assert cache.store(data, BlueGreenApp.model_validate(yaml.safe_load(data)))
        os.utime(_entry(cache, data), ns=(10**18 + i, 10**18 + i))  # a distinct, increasing mtime each
        stored.append(data)
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(_entry(cache, d).name for d in stored[-3:])
    assert [cache.load(d) is not None for d in stored] == [False, False, True, True, True]


# ------------------------------------------------------------------------------------------- through specdir


def test_select_through_the_cache_checks_the_host_on_a_hit_too(tmp_path: Path) -> None:
    path, _ = _spec_file(tmp_path, app_doc())
    state = tmp_path / "state"
    first = select(path, state_dir=state, cache=SpecCache(state))
    second = select(path, state_dir=state, cache=SpecCache(state))
    assert [type(a).__name__ for a in first.apps] == ["BlueGreenApp"] and [type(a).__name__ for a in second.apps] == ["CachedApp"]
    assert same(second.apps[0], first.apps[0])
    cache_dir = SpecCache(state).dir
    # The host changed (its nginx is gone from PATH): the cached spec is refused like a validated one.
    _spec_file(tmp_path, app_doc(nginx={"testCommand": ["no-such-nginx", "-t"]}))
    for _ in range(2):
        sel = select(path, state_dir=state, cache=SpecCache(state))
        assert sel.apps == [] and "no-such-nginx: command not found" in sel.problems[0].message
    # A read-only cache (--plan, --status) reads entries and writes none.
    other, _ = _spec_file(tmp_path, app_doc(name="other", ports={"blue": 18091, "green": 18092}), "other.yaml")
    before = sorted(cache_dir.iterdir())
    assert [type(a).__name__ for a in select(other, state_dir=state, cache=SpecCache(state, store=False)).apps] == ["BlueGreenApp"]
    assert sorted(cache_dir.iterdir()) == before
    # Without a cache (--watch) every load validates.
    _spec_file(tmp_path, app_doc())
    assert [type(a) for a in select(path, state_dir=state).apps] == [BlueGreenApp]


def test_an_invalid_spec_is_not_cached_and_still_reported(tmp_path: Path) -> None:
    path, _ = _spec_file(tmp_path, app_doc(keepImages=0))
    for _ in range(2):
        sel = select(path, state_dir=tmp_path / "state", cache=SpecCache(tmp_path / "state"))
        assert sel.apps == [] and "keepImages" in sel.problems[0].message
    assert not (tmp_path / "state" / "cache").exists()
    with pytest.raises(SpecError):
        load_document(path, None, SpecCache(tmp_path / "state"))


def test_a_hit_loads_neither_pyyaml_nor_the_spec_models(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(RICH))
    del doc["spec"]["dependsOn"]  # an accessory this directory lacks
    doc["spec"]["checks"]["beforeSwitch"][1]["command"] = [sys.executable]  # a command found on this host
    path, _ = _spec_file(tmp_path, doc)
    state = tmp_path / "state"
    assert select(path, state_dir=state, cache=SpecCache(state)).apps  # fills the cache (this process has both loaded anyway)
    code = (
        "import sys, json; from pathlib import Path; from controller.spec.directory import select; "
        "from controller.spec.cache import SpecCache; "
        f"sel = select(Path({str(path)!r}), state_dir=Path({str(state)!r}), cache=SpecCache(Path({str(state)!r}), store=False)); "
        "print(json.dumps([type(sel.apps[0]).__name__, sorted(m for m in ('yaml', 'controller.spec.app', 'controller.spec.resources', 'controller.spec.accessory') if m in sys.modules)]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == ["CachedApp", []]
