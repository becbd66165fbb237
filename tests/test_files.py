"""Files the controller reads and writes as root, among hostile ones (issue 10, items 3-5).

Real files in real directories, the real CLI (`python -m controller` against the real dockerd), and a second,
unprivileged user (`bgtest-nobody`, created when missing) who plants links, FIFOs, `/dev/zero` and writable
directories. Each test states what must hold: no root file truncated or appended to, no read that blocks
(every run is bounded), no file content echoed by --plan/--status/status.json, refusals in one line naming
the path.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from controller.app.plan import describe_file
from controller.kernel import files
from controller.kernel.errors import HostError, SpecError
from controller.spec.app import parse_app
from controller.store.metrics import Metrics
from controller.store.state import Lock, StateStore
from tests.support.containers import LABEL_APP, LABEL_TEST, remove_containers
from tests.support.controller_run import ROOT, command, subprocess_env
from tests.support.net import free_port

INTRUDER = "bgtest-nobody"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Intruder:
    uid: int
    gid: int

    def sh(self, script: str) -> None:
        """Run `script` as the unprivileged user (its own uid and gid, no supplementary groups)."""
        subprocess.run(
            ["sh", "-c", script], user=self.uid, group=self.gid, extra_groups=[], cwd="/", check=True, timeout=10,
            capture_output=True, stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="session")
def intruder() -> Intruder:
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root (the controller runs as root)")
    try:
        pw = pwd.getpwnam(INTRUDER)
    except KeyError:
        # check=False: another session may have made it meanwhile (useradd then exits 9); getpwnam decides.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER],
            check=False, capture_output=True, timeout=60,
        )
        pw = pwd.getpwnam(INTRUDER)
    assert pw.pw_uid != 0
    return Intruder(pw.pw_uid, pw.pw_gid)


@pytest.fixture
def arena() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp: the intruder can reach it (pytest's tmp_path sits under 0700
    directories), and it is trusted (root-owned, /tmp above it root-owned and sticky)."""
    d = Path(tempfile.mkdtemp(prefix="bgtest-files-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def secret(arena: Path) -> tuple[Path, str]:
    """A root-only file whose content must never appear anywhere."""
    value = f"TOPSECRET-{uuid.uuid4().hex}"
    path = arena / "root-only"
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return path, value


def root_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def victim(path: Path, content: str = "precious\n") -> tuple[Path, str, int]:
    path.write_text(content)
    return path, content, path.stat().st_mtime_ns


def intact(v: tuple[Path, str, int]) -> bool:
    return v[0].read_text() == v[1] and v[0].stat().st_mtime_ns == v[2]


def bounded(fn: Callable[[], T], seconds: float = 5.0) -> T:
    """Run `fn` in a thread; fail if it has not returned within `seconds` (a read that blocks)."""
    out: list[T] = []
    errs: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # handed to the test thread
            errs.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for more than {seconds:g}s"
    if errs:
        raise errs[0]
    return out[0]


def one_line(e: BaseException, *needles: str) -> None:
    text = str(e)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"


# ------------------------------------------------------------------------------------------------ the CLI


def _limit_memory() -> None:
    # A controller that read /dev/zero would take the machine's memory before the timeout: cap it.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def cli(spec: Path, state: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(spec, state, *args), capture_output=True, text=True, timeout=timeout, env=subprocess_env(None),
        cwd=str(ROOT), stdin=subprocess.DEVNULL, preexec_fn=_limit_memory, check=False,
    )


def messages(p: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr lines meant for people (not structlog's JSON lines)."""
    return [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("{")]


def explain(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr[-4000:]}"


@dataclass
class Site:
    """One app whose every path is under `base`: marker in base/run, include and flag in base/nginx."""

    base: Path
    app: str

    @property
    def marker(self) -> Path:
        return self.base / "run" / "active"

    @property
    def include(self) -> Path:
        return self.base / "nginx" / f"{self.app}.upstream.conf"

    @property
    def flag(self) -> Path:
        return self.base / "nginx" / f"{self.app}.green"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def spec(self) -> Path:
        return self.base / "specs" / f"{self.app}.yaml"

    def doc(self) -> dict[str, Any]:
        return {
            "apiVersion": "bluegreen/v1",
            "kind": "BlueGreenApp",
            "metadata": {"name": self.app},
            "spec": {
                # Never pulled by these tests; were it, the pull would go to a closed loopback port.
                "image": "127.0.0.1:9/bgtest-files:none",
                "activeColor": "blue",
                "ports": {"blue": free_port(), "green": free_port()},
                "marker": str(self.marker),
                "labels": {LABEL_TEST: "files"},
                "nginx": {
                    "upstreamFile": str(self.include),
                    "testCommand": ["/bin/true"],
                    "reloadCommand": ["/bin/true"],
                    "controlUrl": "http://127.0.0.1:9",
                },
            },
        }

    def write(self) -> Path:
        for d in (self.base / "run", self.base / "nginx", self.base / "specs"):
            root_dir(d)
        self.spec.write_text(yaml.safe_dump(self.doc(), sort_keys=False))
        return self.spec

    def backing_off(self) -> None:
        """Memory of a failed deploy of the wanted revision: --once then only observes and writes status."""
        app = parse_app(self.spec.read_text(), str(self.spec))
        rev = app.revision("blue")
        failure = {"revision": rev, "color": "blue", "count": 1, "last_failed_at": time.time(), "reason": "HealthCheckFailed", "message": "x"}
        d = root_dir(self.state / "apps" / self.app)
        (d / "memory.json").write_text(json.dumps({"failures": {rev: failure}, "convergedGeneration": None}))


@pytest.fixture
def site(arena: Path, docker_client: Any) -> Iterator[Site]:
    s = Site(arena / "site", f"t{uuid.uuid4().hex[:8]}")
    root_dir(s.base)
    yield s
    remove_containers(docker_client, [{"label": f"{LABEL_APP}={s.app}"}])


# ------------------------------------------------------------------------------------------------ reads


HOSTILE: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    # name: (plant(path, secret), how the file must be shown)
    "link-to-root-only-file": (lambda p, s: os.symlink(s, p), "garbage, a symbolic link"),
    "fifo": (lambda p, s: os.mkfifo(p), "garbage, a FIFO"),
    "link-to-dev-zero": (lambda p, s: os.symlink("/dev/zero", p), "garbage, a symbolic link"),
    "big-file": (lambda p, s: p.write_text(s.read_text() * 4000), "garbage, "),
    "small-file": (lambda p, s: p.write_text(s.read_text()), "garbage, 43 bytes"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_marker_is_shown_as_a_classification_never_read_through_never_blocks(
    kind: str, site: Site, secret: tuple[Path, str]
) -> None:
    """The marker is a link to a root-only file, a FIFO, /dev/zero, a huge or a garbage file: --plan, --status,
    --status --json and status.json (--once) say what it is, finish, and never show a byte of it."""
    plant, shown = HOSTILE[kind]
    spec = site.write()
    plant(site.marker, secret[0])
    before = os.lstat(site.marker)

    runs = {"plan": ("--plan",), "status": ("--status",), "status-json": ("--status", "--json")}
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(runs, pool.map(lambda a: cli(spec, site.state, *a, timeout=45), runs.values()), strict=True))
    site.backing_off()  # --once then only observes and writes status.json: the marker stays as planted
    done["once"] = cli(spec, site.state, "--once", timeout=45)

    for name, p in done.items():
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr, explain(p)
        assert secret[1] not in p.stdout + p.stderr, f"{name} echoed the file\n{explain(p)}"
        assert p.returncode in (0, 1), f"{name}: {explain(p)}"
    assert f"marker {site.marker}: {shown}" in done["plan"].stdout, explain(done["plan"])  # the diff names it
    assert f"marker    {site.marker}: {shown}" in done["status"].stdout, explain(done["status"])
    assert json.loads(done["status-json"].stdout)[0]["observed"]["marker"]["value"].startswith(shown)
    status_text = (site.state / "apps" / site.app / "status.json").read_text()
    assert secret[1] not in status_text
    assert json.loads(status_text)["observed"]["marker"]["value"].startswith(shown)
    # --once was backing off: the marker is still the planted thing, and the secret untouched.
    after = os.lstat(site.marker)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert secret[0].read_text() == secret[1] + "\n"


def test_the_marker_is_described_never_echoed() -> None:
    assert describe_file(None) == "missing"
    assert describe_file(" green\n") == "green"
    assert describe_file("root:$6$secret\n") == "garbage, 15 bytes"
    assert describe_file("blue\nmore") == "garbage, 9 bytes"
    assert describe_file(files.Garbage("a FIFO")) == "garbage, a FIFO"


def test_fifo_include_and_flag_and_dev_zero_do_not_hold_a_pass(site: Site, secret: tuple[Path, str]) -> None:
    """Observation reads the include and the flag too: neither a FIFO nor /dev/zero holds --plan."""
    spec = site.write()
    os.mkfifo(site.include)
    os.symlink("/dev/zero", site.flag)
    p = cli(spec, site.state, "--plan", "--json", timeout=45)
    assert p.returncode == 1, explain(p)
    plan = json.loads(p.stdout)[0]
    assert any(d.startswith(f"upstream include {site.include}: differs") for d in plan["diffs"]), plan


def test_safe_read_on_real_files(arena: Path, secret: tuple[Path, str]) -> None:
    d = root_dir(arena / "d")
    (d / "ok").write_text("blue\n")
    assert files.read_text(d / "ok") == "blue\n"
    assert files.read_text(d / "missing") is None
    assert files.read_text(arena / "no-dir" / "x") is None
    os.mkfifo(d / "fifo")
    os.symlink(secret[0], d / "link")
    os.symlink("/dev/zero", d / "zero")
    (d / "dir").mkdir()
    (d / "big").write_bytes(b"x" * (files.SMALL + 1))
    expect = {"fifo": "a FIFO", "link": "a symbolic link", "zero": "a symbolic link", "dir": "a directory", "big": f"{files.SMALL + 1} bytes"}
    for name, what in expect.items():
        got = bounded(partial(files.read_text, d / name))
        assert isinstance(got, files.Garbage) and got == "" and got.what == what, (name, got)
    # A directory on the way that a link replaces is followed only when root made the link (/var/run -> /run).
    os.symlink(d, arena / "root-link")
    assert files.read_text(arena / "root-link" / "ok") == "blue\n"


def test_reads_in_a_directory_another_user_controls_are_refused(arena: Path, intruder: Intruder, secret: tuple[Path, str]) -> None:
    d = root_dir(arena / "theirs")
    os.chown(d, intruder.uid, intruder.gid)
    sticky = root_dir(arena / "sticky", 0o1777)
    intruder.sh(
        f"ln -s {secret[0]} {d}/active && mkfifo {d}/fifo && ln -s /dev/zero {d}/zero"
        f" && mkdir {sticky}/sub && mkfifo {sticky}/sub/fifo && ln -s {d} {sticky}/link"
    )
    for path, why in {
        d / "active": f"directory {d} is owned by uid {intruder.uid}",
        d / "fifo": f"directory {d} is owned by uid {intruder.uid}",
        d / "zero": f"directory {d} is owned by uid {intruder.uid}",
        sticky / "fifo": f"directory {sticky} is writable by group and others (mode 1777)",
        sticky / "sub" / "fifo": f"directory {sticky}/sub is owned by uid {intruder.uid}",
        sticky / "link" / "active": f"{sticky}/link is a symbolic link owned by uid {intruder.uid}",
    }.items():
        with pytest.raises(HostError) as e:
            bounded(partial(files.read_text, path))
        one_line(e.value, f"cannot read {path}", why)
        assert secret[1] not in str(e.value)


# ------------------------------------------------------------------------------------------------ writes


def test_the_atomic_write_replaces_a_link_and_never_writes_through_it(arena: Path) -> None:
    d = root_dir(arena / "d")
    v = victim(arena / "victim")
    os.symlink(v[0], d / "marker")
    files.write_atomic(d / "marker", "green\n")
    assert intact(v)
    assert stat.S_ISREG(os.lstat(d / "marker").st_mode) and (d / "marker").read_text() == "green\n"
    assert stat.S_IMODE((d / "marker").stat().st_mode) == 0o644
    files.write_atomic(d / "env", "K=v\n", 0o600)
    assert stat.S_IMODE((d / "env").stat().st_mode) == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["env", "marker"]  # no temporary file left


def test_the_atomic_write_makes_missing_directories_0755_whatever_the_umask(arena: Path) -> None:
    old = os.umask(0o077)
    try:
        files.write_atomic(arena / "a" / "b" / "marker", "blue\n")
    finally:
        os.umask(old)
    for p in (arena / "a", arena / "a" / "b"):
        st = p.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o755), p


def test_writes_into_directories_another_user_can_change_are_refused(arena: Path, intruder: Intruder) -> None:
    theirs = root_dir(arena / "theirs")
    os.chown(theirs, intruder.uid, intruder.gid)
    world = root_dir(arena / "world", 0o777)
    group = root_dir(arena / "group", 0o775)
    sticky = root_dir(arena / "sticky", 0o1777)
    mine = root_dir(arena / "mine")
    # In a sticky directory another user can still plant a link to a root directory.
    intruder.sh(f"ln -s {mine} {sticky}/evil && mkdir {sticky}/made && ln -s {mine} {theirs}/sub")
    cases = {
        theirs / "marker": f"directory {theirs} is owned by uid {intruder.uid}",
        theirs / "sub" / "marker": f"directory {theirs} is owned by uid {intruder.uid}",
        world / "marker": f"directory {world} is writable by group and others (mode 0777)",
        group / "marker": f"directory {group} is writable by group (mode 0775)",
        sticky / "marker": f"directory {sticky} is writable by group and others (mode 1777)",
        sticky / "evil" / "marker": f"{sticky}/evil is a symbolic link owned by uid {intruder.uid}",
        sticky / "made" / "marker": f"directory {sticky}/made is owned by uid {intruder.uid}",
        world / "new" / "marker": f"directory {world} is writable",
    }
    for path, why in cases.items():
        with pytest.raises(HostError) as e:
            files.write_atomic(path, "blue\n")
        one_line(e.value, f"cannot write {path}", why)
    assert sorted(p.name for p in mine.iterdir()) == []  # nothing written through a planted link
    assert sorted(p.name for p in world.iterdir()) == []
    with pytest.raises(HostError) as e:
        Metrics().write_textfile(world / "bluegreen.prom")
    one_line(e.value, f"directory {world} is writable")
    # The same directories are fine once only root can change them.
    os.chown(theirs, 0, 0)
    files.write_atomic(theirs / "marker", "blue\n")


def test_the_pytest_tmp_path_is_trusted(tmp_path: Path) -> None:
    """The suite writes markers and includes under tmp_path: its parents must pass the directory check."""
    files.write_atomic(tmp_path / "x" / "marker", "blue\n")
    assert files.read_text(tmp_path / "x" / "marker") == "blue\n"


# ------------------------------------------------------------------------------------------------ lock and history


def test_lock_and_history_never_truncate_or_append_to_a_planted_file(arena: Path) -> None:
    """Root-made links, FIFOs and hard links in a trusted state dir (a mistake, or an old compromise): refused."""
    state = root_dir(arena / "state")
    v1, v2, v3 = victim(arena / "v1"), victim(arena / "v2"), victim(arena / "v3")
    os.symlink(v1[0], state / "lock")
    os.symlink(v2[0], state / "history.jsonl")
    with pytest.raises(HostError) as e:
        Lock(state, 0).__enter__()
    one_line(e.value, f"{state}/lock is a symbolic link")
    with pytest.raises(HostError) as e:
        StateStore(state).append_history({"app": "a"})
    one_line(e.value, f"{state}/history.jsonl is a symbolic link")
    assert intact(v1) and intact(v2)

    for name in ("lock", "history.jsonl"):
        (state / name).unlink()
    os.link(v3[0], state / "lock")
    with pytest.raises(HostError) as e:
        Lock(state, 0).__enter__()
    one_line(e.value, "has 2 hard links")
    assert intact(v3)
    (state / "lock").unlink()
    os.mkfifo(state / "lock")
    os.mkfifo(state / "history.jsonl")
    with pytest.raises(HostError):
        bounded(lambda: Lock(state, 0).__enter__())
    with pytest.raises(HostError):
        bounded(lambda: StateStore(state).append_history({"app": "a"}))

    # status.json and memory.json read through the safe read: a FIFO does not block, a link is not read.
    apps = root_dir(state / "apps" / "a")
    os.mkfifo(apps / "memory.json")
    os.symlink(v1[0], apps / "status.json")
    assert bounded(lambda: StateStore(state).load_memory("a").failures) == {}
    assert bounded(lambda: StateStore(state).load_last_deploy("a")) is None
    assert bounded(lambda: StateStore(state).load_status("a")) is None


@pytest.mark.parametrize("how", ["owned-by-them", "world-writable"])
def test_a_state_dir_another_user_can_write_is_refused_and_no_root_file_changes(
    how: str, site: Site, intruder: Intruder, secret: tuple[Path, str]
) -> None:
    spec = site.write()
    state = root_dir(site.state, 0o755 if how == "owned-by-them" else 0o777)
    if how == "owned-by-them":
        os.chown(state, intruder.uid, intruder.gid)
    v1, v2 = victim(site.base / "v1"), victim(site.base / "v2")
    intruder.sh(f"ln -s {v1[0]} {state}/lock && ln -s {v2[0]} {state}/history.jsonl && mkdir -p {state}/apps/{site.app}"
                f" && ln -s {secret[0]} {state}/apps/{site.app}/status.json")
    textfile_dir = root_dir(site.base / "textfile")
    p = cli(spec, state, "--once", "--metrics-textfile", str(textfile_dir / "bluegreen.prom"), timeout=45)
    assert p.returncode == 1, explain(p)
    assert messages(p) == [messages(p)[0]] and f"directory {state} is " in messages(p)[0], explain(p)
    assert intact(v1) and intact(v2), "a root file was truncated or appended to"
    assert secret[1] not in p.stdout + p.stderr
    for name in ("--plan", "--status"):
        r = cli(spec, state, name, timeout=45)
        assert r.returncode == 2 and len(messages(r)) == 1 and f"directory {state} is " in messages(r)[0], explain(r)
        assert secret[1] not in r.stdout + r.stderr
    assert intact(v1) and intact(v2)


def test_a_marker_directory_another_user_controls_is_refused_in_one_line(site: Site, intruder: Intruder, secret: tuple[Path, str]) -> None:
    spec = site.write()
    run = site.marker.parent
    os.chown(run, intruder.uid, intruder.gid)
    intruder.sh(f"ln -s {secret[0]} {site.marker}")
    p = cli(spec, site.state, "--plan", timeout=45)
    assert p.returncode == 2 and len(messages(p)) == 1, explain(p)
    assert f"directory {run} is owned by uid {intruder.uid}" in messages(p)[0], explain(p)
    assert secret[1] not in p.stdout + p.stderr
    assert not site.state.exists()


# ------------------------------------------------------------------------------------------------ spec files


def _spec_case(case: str, site: Site, intruder: Intruder) -> tuple[Path, str]:
    """Make the spec of `site` hostile one way; returns the -f path and what the refusal must say."""
    spec = site.write()
    specs = spec.parent
    if case == "world-writable":
        os.chmod(spec, 0o666)
        return spec, f"{spec}: refused: {spec} is writable by group and others (mode 0666)"
    if case == "group-writable":
        os.chmod(spec, 0o664)
        return spec, f"{spec}: refused: {spec} is writable by group (mode 0664)"
    if case == "owned-by-them":
        os.chown(spec, intruder.uid, intruder.gid)
        return spec, f"{spec}: refused: {spec} is owned by uid {intruder.uid}"
    if case == "directory-world-writable":
        os.chmod(specs, 0o777)
        return specs, f"{spec}: refused: directory {specs} is writable by group and others"
    if case == "directory-owned-by-them":
        os.chown(specs, intruder.uid, intruder.gid)
        return spec, f"{spec}: refused: directory {specs} is owned by uid {intruder.uid}"
    if case == "root-link-to-their-file":
        theirs = root_dir(site.base / "theirs")
        os.chown(theirs, intruder.uid, intruder.gid)
        intruder.sh(f"cp {spec} {theirs}/app.yaml")
        link = site.base / "link.yaml"
        os.symlink(theirs / "app.yaml", link)
        return link, f"{link}: refused: directory {theirs} is owned by uid {intruder.uid}"
    if case == "their-link":
        sticky = root_dir(site.base / "sticky", 0o1777)
        intruder.sh(f"ln -s {spec} {sticky}/app.yaml")
        return sticky / "app.yaml", f"refused: directory {sticky} is writable by group and others (mode 1777)"
    raise AssertionError(case)


SPEC_CASES = [
    "world-writable", "group-writable", "owned-by-them", "directory-world-writable", "directory-owned-by-them",
    "root-link-to-their-file", "their-link",
]


@pytest.mark.parametrize("case", SPEC_CASES)
def test_a_spec_others_could_have_written_is_refused(case: str, site: Site, intruder: Intruder) -> None:
    """A spec is root-equivalent (testCommand runs as root): exit 2, one line naming the path, nothing done."""
    target, needle = _spec_case(case, site, intruder)
    p = cli(target, site.state, "--plan", timeout=45)
    assert p.returncode == 2, explain(p)
    assert len(messages(p)) == 1 and needle in messages(p)[0], explain(p)
    assert p.stdout == "" and not site.state.exists()
    with pytest.raises(SpecError):
        files.check_spec_file(target if target.is_file() or target.is_symlink() else site.spec)


def test_a_root_spec_and_a_root_link_to_it_are_accepted(site: Site) -> None:
    spec = site.write()
    link = site.base / "link.yaml"
    os.symlink(spec, link)
    files.check_spec_file(spec)
    files.check_spec_file(link)
    p = cli(link, site.state, "--plan", timeout=45)
    assert p.returncode == 1 and messages(p) == [], explain(p)  # changes pending: a fresh app
