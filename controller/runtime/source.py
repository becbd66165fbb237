"""The git source (GitOps): the controller fetches the committed desired state itself.

    reconcile --watch --git-url URL [--git-ref main] [--git-path specs] [--git-interval 60]
              [--git-verify ALLOWED_SIGNERS] [--git-token-file FILE | --git-ssh-key FILE --git-known-hosts FILE]

In the state dir:

    <state-dir>/source/repo.git          a bare clone: refs/bluegreen/head (last fetched), refs/bluegreen/applied
    <state-dir>/source/checkouts/<sha>/  the tree at one commit, made aside, then renamed in
    <state-dir>/source/current           symlink -> checkouts/<sha>: the commit in force, switched atomically
    <state-dir>/source/source.json       what status shows: applied commit, last fetch, the problem if any
    <state-dir>/source/lock              flock: one fetch at a time (cron --once and --watch share the clone)

`sync()` fetches the ref, checks that the new commit descends from the applied one (a force-push is refused),
verifies signatures when `--git-verify` is given (SSH signatures, git's gpg.ssh.allowedSignersFile): every
commit after the one in force up to the fetched one, at most MAX_VERIFIED_COMMITS of them (a longer range is
refused), or the fetched commit alone when none is in force yet; then checks it out into a new directory and
switches `current`. Any failure keeps the last good commit in force and is recorded with a reason (the
`SourceUnavailable` condition): Unreachable, AuthFailed, RefNotFound, FetchFailed, HistoryRewritten,
SignatureRefused, PathNotFound. The spec files are then read by the one spec-dir policy
(`specdir.select`) at that exact commit: `select()` below resolves `current` once per read, and keys the
result by the stable path, so an app whose spec is invalid at a new commit keeps its last valid spec (watch
mode), exactly as for a local invalid edit; the problem's message names the checkout, i.e. the commit.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.drivers import git as gitdrv
from controller.kernel import files
from controller.kernel.backoff import backoff
from controller.kernel.errors import InvalidInput, SourceError, SpecError, one_line
from controller.kernel.logs import get_logger, register_secret
from controller.runtime.options import SourceOptions
from controller.spec.app import BlueGreenApp
from controller.spec.directory import Problem, Selection
from controller.spec.directory import select as select_specs
from controller.store.documents import Condition, InvalidAt, SourceStatus, iso
from controller.store.metrics import SourceMetrics
from controller.store.releases import Origin, event

HEAD_REF = "refs/bluegreen/head"
APPLIED_REF = "refs/bluegreen/applied"
KEEP_CHECKOUTS = 3  # the one in force and the two before it (a reader that resolved an older one still finds it)
JITTER = 0.1
FAILURE_CAP_FACTOR = 5  # a failing fetch is retried after min(interval, 5 s), doubling, up to 5 intervals
MAX_VERIFIED_COMMITS = 200  # with --git-verify: commits since the one in force verified by one sync, at most

_SAFE_PATH = re.compile(r"^[A-Za-z0-9._@+-]+$")
_SCP = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!/)[A-Za-z0-9._~/+-]+$")
_SCHEMES = ("https", "http", "ssh", "git", "file")
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class SourceConfig:
    url: str
    ref: str = "main"
    path: str = "."  # inside the repository, normalised, never escaping it
    interval: float = 60.0
    verify: Path | None = None  # allowed-signers file
    credentials: gitdrv.Credentials = field(default_factory=gitdrv.Credentials)
    timeout: float = gitdrv.DEFAULT_TIMEOUT

    @property
    def shown_url(self) -> str:
        return shown_url(self.url)


def shown_url(url: str) -> str:
    """The URL without credentials (user:password@ becomes user@; a password is refused anyway)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username and not parts.password:
        host = f"{parts.username}@{host}"
    return parts._replace(netloc=host, query="", fragment="").geturl()


def check_url(url: str) -> str:
    if not url or len(url) > 2048 or not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidInput(f"--git-url: {url!r} is not a git URL (no spaces or control characters)")
    if url.startswith("-") or "::" in url:
        raise InvalidInput(f"--git-url: {url!r} is not a git URL (no options, no transport helpers)")
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise InvalidInput(f"--git-url: {shown_url(url)!r}: scheme must be one of {', '.join(_SCHEMES)}")
        if parts.scheme != "file" and not parts.hostname:
            raise InvalidInput(f"--git-url: {shown_url(url)!r} names no host")
        if parts.password is not None:
            raise InvalidInput("--git-url: credentials in the URL would show in process arguments; use --git-token-file")
        if parts.query or parts.fragment or not parts.path.strip("/"):
            raise InvalidInput(f"--git-url: {shown_url(url)!r} names no repository path (or has a query)")
        return url
    if _SCP.match(url):
        return url
    raise InvalidInput(f"--git-url: {url!r} is not a git URL (https://, ssh://, git://, file:// or user@host:path)")


def check_ref(ref: str) -> str:
    """git check-ref-format's rules (one-level names allowed), and no revision syntax."""
    bad = (
        not ref
        or len(ref) > 255
        or ".." in ref
        or "@{" in ref
        or "//" in ref
        or ref == "@"
        or ref.startswith(("-", "/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or any(c in ref for c in " ~^:?*[\\")
        or not ref.isprintable()
        or any(part.startswith(".") for part in ref.split("/"))
    )
    if bad:
        raise InvalidInput(f"--git-ref: {ref!r} is not a branch or tag name (no '..', '@{{', spaces, ~^:?*[\\)")
    return ref


def check_repo_path(path: str) -> str:
    """A directory (or file) inside the repository: relative, no '..', plain characters."""
    raw = path.strip()
    if raw in ("", ".", "./"):
        return "."
    if raw.startswith("/"):
        raise InvalidInput(f"--git-path: {path!r} must be relative to the repository root")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInput(f"--git-path: {path!r} escapes the repository ('..')")
    if any(not _SAFE_PATH.match(p) or p.startswith("-") for p in parts) or parts[0] == ".git":
        raise InvalidInput(f"--git-path: {path!r}: use letters, digits and ._@+- in each component")
    return "/".join(parts)


def check_allowed_signers(path: Path) -> Path:
    """The allowed-signers file must be trusted (root's) and parse: `principals [options] keytype base64-key`."""
    import base64
    import binascii

    text = files.read_text(Path(os.path.abspath(path)), files.SPEC)
    if text is None:
        raise InvalidInput(f"--git-verify: {path}: no such file")
    if isinstance(text, files.Garbage):
        raise InvalidInput(f"--git-verify: {path}: not a readable file ({text.what})")
    try:
        files.check_spec_file(path)  # as trusted as a spec: it decides which specs are applied
    except SpecError as e:
        raise InvalidInput(f"--git-verify: {e}") from None
    keys = 0
    for no, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        at = next((i for i, w in enumerate(words) if i >= 1 and w in _KEY_TYPES), None)
        ok = at is not None and at + 1 < len(words)
        if ok and at is not None:
            try:
                blob = base64.b64decode(words[at + 1], validate=True)
                ok = blob[4 : 4 + len(words[at])] == words[at].encode()
            except (binascii.Error, ValueError):
                ok = False
        if not ok:
            raise InvalidInput(f"--git-verify: {path}: line {no} is not 'principals [options] key-type base64-key'")
        keys += 1
    if not keys:
        raise InvalidInput(f"--git-verify: {path}: no allowed signer in it")
    return Path(os.path.abspath(path))


def config_from_options(opts: SourceOptions, token: str | None = None) -> SourceConfig:
    """The source from the command line; InvalidInput (exit 2, one line) for anything malformed. `token`: the
    --git-token-ssm value, read by the composition root (boto3 stays out of here)."""
    url = check_url(opts.url)
    ref = check_ref(opts.ref)
    path = check_repo_path(opts.path)
    verify = check_allowed_signers(opts.verify) if opts.verify is not None else None
    if token is not None and opts.token_file is not None:
        raise InvalidInput("--git-token-file and --git-token-ssm: give one")
    if token is not None:
        if not url.startswith(("https://", "http://")):
            raise InvalidInput("--git-token-ssm: only for https:// (or http://) URLs")
        register_secret(token)
        register_secret(token.rpartition(":")[2])
    if opts.token_file is not None:
        if not url.startswith(("https://", "http://")):
            raise InvalidInput("--git-token-file: only for https:// (or http://) URLs")
        token = gitdrv.read_secret_file(opts.token_file, "--git-token-file")
        register_secret(token)  # masked in every log line, status and history, as a last line of defence
        register_secret(token.rpartition(":")[2])
    key = None
    if opts.ssh_key is not None:
        gitdrv.read_secret_file(opts.ssh_key, "--git-ssh-key")  # trusted and root-only; ssh reads it itself
        key = Path(os.path.abspath(opts.ssh_key))
    known = Path(os.path.abspath(opts.known_hosts)) if opts.known_hosts is not None else None
    if known is not None and files.read_text(known) is None:
        raise InvalidInput(f"--git-known-hosts: {known}: no such file")
    return SourceConfig(
        url=url,
        ref=ref,
        path=path,
        interval=opts.interval,
        verify=verify,
        credentials=gitdrv.Credentials(token=token, ssh_key=key, known_hosts=known),
    )


# ------------------------------------------------------------------------------------------------ the source


@dataclass(frozen=True)
class Commit:
    sha: str
    author_date: str
    subject: str
    signer: str | None = None
    author: str = ""  # "Name <email>"

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.sha, "authorDate": self.author_date, "subject": self.subject, "signer": self.signer, "author": self.author}

    @classmethod
    def from_json(cls, raw: Any) -> Commit | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("commit"), str) or not re.fullmatch(r"[0-9a-f]{40,64}", raw["commit"]):
            return None
        text = {k: str(raw[k]) if isinstance(raw.get(k), str) else "" for k in ("authorDate", "subject", "author")}
        signer = raw.get("signer") if isinstance(raw.get("signer"), str) else None
        return cls(raw["commit"], text["authorDate"], text["subject"], signer, text["author"])


@dataclass
class SourceState:
    """source.json: what the last sync left (read back by --status and by the next run)."""

    url: str = ""
    ref: str = ""
    applied: Commit | None = None
    head: str | None = None  # last fetched commit (may be refused)
    last_fetch_at: float | None = None
    last_fetch_ok_at: float | None = None
    failing_since: float | None = None
    failures: int = 0
    problem_reason: str | None = None
    problem_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ref": self.ref,
            "applied": self.applied.to_json() if self.applied else None,
            "head": self.head,
            "lastFetchAt": self.last_fetch_at,
            "lastFetchOkAt": self.last_fetch_ok_at,
            "failingSince": self.failing_since,
            "failures": self.failures,
            "problem": {"reason": self.problem_reason, "message": self.problem_message} if self.problem_reason else None,
        }

    @classmethod
    def from_json(cls, raw: Any) -> SourceState:
        if not isinstance(raw, dict):
            return cls()

        def num(k: str) -> float | None:
            v = raw.get(k)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        problem: dict[str, Any] = raw["problem"] if isinstance(raw.get("problem"), dict) else {}
        head = raw.get("head")
        failures = raw.get("failures")
        return cls(
            url=str(raw["url"]) if isinstance(raw.get("url"), str) else "",
            ref=str(raw["ref"]) if isinstance(raw.get("ref"), str) else "",
            applied=Commit.from_json(raw.get("applied")),
            head=head if isinstance(head, str) and re.fullmatch(r"[0-9a-f]{40,64}", head) else None,
            last_fetch_at=num("lastFetchAt"),
            last_fetch_ok_at=num("lastFetchOkAt"),
            failing_since=num("failingSince"),
            failures=failures if isinstance(failures, int) and not isinstance(failures, bool) and failures >= 0 else 0,
            problem_reason=problem.get("reason") if isinstance(problem.get("reason"), str) else None,
            problem_message=problem.get("message") if isinstance(problem.get("message"), str) else None,
        )


REFUSALS = ("HistoryRewritten", "SignatureRefused", "PathNotFound")  # a fetched commit refused, not a failed fetch


class GitSource:
    """One git source in one state dir; thread-safe (`sync` from the poll thread, the rest from workers)."""

    def __init__(self, cfg: SourceConfig, state_dir: Path, *, now: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.root = state_dir / "source"
        self.repo = self.root / "repo.git"
        self.current = self.root / "current"
        self.state_file = self.root / "source.json"
        self.now = now
        self.git = gitdrv.Git(self.repo, self.root / "home", timeout=cfg.timeout)
        self.log = get_logger()
        self._mutex = threading.Lock()  # one sync at a time (held through a fetch: never taken by readers)
        self._apps_lock = threading.Lock()  # app_commit / app_invalid, updated by select() from any thread
        self._metrics: SourceMetrics | None = None
        self.state = self._load()
        # app -> commit its spec in force was read at; app -> (commit, problem) when its spec is invalid at a newer one
        self.app_commit: dict[str, Commit] = {}
        self.app_invalid: dict[str, tuple[str, str]] = {}
        self.poke_event = threading.Event()
        self.notify: Callable[[dict[str, Any]], None] = lambda body: None  # release events (drivers/notify.py)

    # State ------------------------------------------------------------------------------------
    def _load(self) -> SourceState:
        text = files.read_text(self.state_file, files.STATE)
        if not text:
            return SourceState()
        try:
            return SourceState.from_json(json.loads(text))
        except ValueError:
            return SourceState()

    def _save(self) -> None:
        files.write_atomic(self.state_file, json.dumps(self.state.to_json(), indent=2, sort_keys=True) + "\n", 0o644)
        self.export()

    def bind_metrics(self, metrics: SourceMetrics) -> None:
        self._metrics = metrics
        self.export()

    def export(self) -> None:
        m, s = self._metrics, self.state
        if m is None:
            return
        m.set(
            url=self.cfg.shown_url,
            ref=self.cfg.ref,
            commit=s.applied.sha if s.applied else None,
            last_fetch_ok=s.last_fetch_ok_at,
            ok=s.problem_reason is None,
            refused=s.problem_reason in REFUSALS,
        )

    @property
    def stable_path(self) -> Path:
        """What --watch watches: `current/<path>`, the same name whatever the commit."""
        return self.current if self.cfg.path == "." else self.current / self.cfg.path

    def checkout_path(self) -> Path | None:
        """The spec path inside the checkout in force (resolved now: it names the commit), None before the first."""
        target = gitdrv.read_link(self.current)
        if target is None or not re.fullmatch(r"checkouts/[0-9a-f]{40,64}", target):
            return None
        base = self.root / target
        return base if self.cfg.path == "." else base / self.cfg.path

    @property
    def problem(self) -> tuple[str, str] | None:
        s = self.state
        return (s.problem_reason, s.problem_message or "") if s.problem_reason else None

    # Sync -------------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Fetch the ref and put its commit in force if it may be; True when the commit in force changed.

        Never raises for the source's own failures: they are recorded (the condition, source.json, metrics)
        and the last good commit stays in force. HostError (the state dir not trusted) propagates."""
        with self._mutex:
            before = self.state.applied.sha if self.state.applied else None
            gitdrv.make_dirs(self.root, 0o755)
            gitdrv.make_dirs(self.root / "home", 0o700)
            now = self.now()
            self.state.last_fetch_at = now
            try:
                with gitdrv.FileLock(self.root / "lock", self.cfg.timeout):
                    self.state = self._load()  # another process (cron, watch) may have synced meanwhile
                    self.state.last_fetch_at = now
                    self._sync_locked()
            except SourceError as e:
                self._failed(e.reason, str(e), now)
            else:
                self.state.problem_reason = self.state.problem_message = None
                self.state.failing_since = None
                self.state.failures = 0
            self._save()
            after = self.state.applied.sha if self.state.applied else None
            return after != before

    def _failed(self, reason: str, message: str, now: float) -> None:
        s = self.state
        if s.failing_since is None:
            s.failing_since = now
        s.failures += 1
        if s.problem_reason != reason or s.problem_message != message:
            kept = s.applied.sha[:12] if s.applied else None
            self.log.error("source.unavailable", reason=reason, error=message, url=self.cfg.shown_url, ref=self.cfg.ref, in_force=kept)
            if reason in REFUSALS:
                self.notify(event("source-refused", "", now, message=f"{self.cfg.shown_url} {self.cfg.ref}: {reason}: {message}"))
        s.problem_reason, s.problem_message = reason, message

    def _sync_locked(self) -> None:
        cfg, s = self.cfg, self.state
        self.git.init_bare()
        r = self.git.run(
            ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", "--force", "--", cfg.url, f"+{cfg.ref}:{HEAD_REF}"],
            env=cfg.credentials.env(),
            config=(("http.followRedirects", "false"),),  # the token goes to the URL's host, never to where it redirects
        )
        if r.code != 0:
            raise SourceError(gitdrv.classify(r.stderr), f"fetch {cfg.ref} from {cfg.shown_url} failed: {gitdrv.last_line(r.stderr)}")
        s.last_fetch_ok_at = self.now()
        head = self.git.check(["rev-parse", "--verify", "--quiet", f"{HEAD_REF}^{{commit}}"]).strip()
        s.head = head
        same_source = s.url == cfg.shown_url and s.ref == cfg.ref
        applied = s.applied if same_source else None
        if applied is not None and head == applied.sha and self.checkout_path() is not None:
            return
        if applied is not None:
            r = self.git.run(["merge-base", "--is-ancestor", applied.sha, head])
            if r.code != 0:
                raise SourceError(
                    "HistoryRewritten",
                    f"commit {head[:12]} on {cfg.ref} does not descend from the commit in force {applied.sha[:12]} "
                    "(force-push?): refused; push a new commit on top, or remove the state dir's source/ to start over",
                )
        signer = self._verify_range(applied, head) if cfg.verify is not None else None
        commit = self._describe(head, signer)
        self._checkout(commit)
        s.url, s.ref, s.applied = cfg.shown_url, cfg.ref, commit
        self.log.info("source.applied", commit=head, subject=commit.subject, author_date=commit.author_date, signer=signer, url=cfg.shown_url, ref=cfg.ref)

    def _verify_range(self, applied: Commit | None, head: str) -> str:
        """Every commit `head` brings over the one in force must be signed by an allowed key (a signed commit on
        top of an unsigned one does not vouch for it), oldest first, so a refusal names the first that is not.
        With none in force (the first sync, another URL or ref), `head` alone: the first commit put in force is
        the anchor. The signer of `head`."""
        if applied is None or applied.sha == head:  # (the same commit, its checkout gone: made again)
            return self._verify(head)
        ref = self.cfg.ref
        # Newest first, one more than the limit: whether the range is too long, without listing all of it.
        shas = self.git.check(["rev-list", f"--max-count={MAX_VERIFIED_COMMITS + 1}", f"{applied.sha}..{head}", "--"]).split()
        if len(shas) > MAX_VERIFIED_COMMITS:
            raise SourceError(
                "SignatureRefused",
                f"{ref} at {head[:12]} is more than {MAX_VERIFIED_COMMITS} commits ahead of the commit in force {applied.sha[:12]}, "
                "more than one sync verifies: refused; after checking them, remove the state dir's source/ to put the head in force",
            )
        where = f" (one of the {len(shas)} commits from the commit in force {applied.sha[:12]} to {head[:12]}, each must be signed)"
        signers = {sha: self._verify(sha, "" if sha == head else where) for sha in reversed(shas)}
        return signers[head]

    def _verify(self, sha: str, where: str = "") -> str:
        assert self.cfg.verify is not None
        r = self.git.run(
            ["verify-commit", "--raw", sha],
            config=(("gpg.format", "ssh"), ("gpg.ssh.allowedSignersFile", str(self.cfg.verify)), ("gpg.minTrustLevel", "fully")),
        )
        out = r.stderr + "\n" + r.stdout
        good = re.search(r'Good "git" signature for (\S+) with (\S+) key (\S+)', out)
        if r.code == 0 and good is not None:
            return f"{good.group(1)} ({good.group(2)} {good.group(3)})"
        if "no principal matched" in out.lower() or (good is not None and r.code != 0):
            why = f"signed by a key not in {self.cfg.verify}"
        elif not out.strip() or "no signature" in out.lower():
            why = "not signed"
        else:
            why = f"signature not valid: {gitdrv.last_line(out)}"
        raise SourceError("SignatureRefused", f"commit {sha[:12]} on {self.cfg.ref}: {why}: refused{where}")

    def _describe(self, sha: str, signer: str | None) -> Commit:
        out = self.git.check(["log", "-1", "--no-show-signature", "--format=%aI%x00%an <%ae>%x00%s", sha])
        date, _, rest = out.rstrip("\n").partition("\x00")
        author, _, subject = rest.partition("\x00")
        return Commit(sha, date, one_line(subject, 200), signer, one_line(author, 200))

    def _checkout(self, c: Commit) -> None:
        """The tree of `c` in checkouts/<sha>, made aside and renamed in; then `current` switched (if it has --git-path)."""
        checkouts = self.root / "checkouts"
        gitdrv.make_dirs(checkouts, 0o755)
        final = checkouts / c.sha
        if not gitdrv.is_dir(final):
            tmp = checkouts / f".tmp-{c.sha[:12]}-{os.getpid()}"
            gitdrv.remove_tree(tmp)
            os.mkdir(tmp, 0o755)
            index = self.root / f".index-{os.getpid()}"
            try:
                r = self.git.run(
                    ["checkout", "--quiet", "--force", c.sha, "--", "."], env={"GIT_INDEX_FILE": str(index)}, work_tree=tmp
                )  # the whole tree: a later --git-path change finds its directory in the same checkout
                if r.code != 0:
                    if "did not match any file" in r.stderr:
                        raise SourceError("PathNotFound", f"commit {c.sha[:12]}: no {self.cfg.path} in it: refused")
                    raise SourceError("CheckoutFailed", f"checkout of {c.sha[:12]} failed: {gitdrv.last_line(r.stderr)}")
                gitdrv.seal_tree(tmp)
                gitdrv.rename(tmp, final)
            finally:
                gitdrv.remove_tree(tmp)
                with gitdrv.suppress_missing():
                    os.unlink(index)
        if not os.path.lexists(final / self.cfg.path):
            raise SourceError("PathNotFound", f"commit {c.sha[:12]}: no {self.cfg.path} in it: refused")
        gitdrv.switch_link(self.current, f"checkouts/{c.sha}")
        self.git.run(["update-ref", APPLIED_REF, c.sha])  # keeps the commit (and its tree) from any gc
        keep = {c.sha}
        entries = [n for n in gitdrv.list_dir(checkouts) if not n.startswith(".")]
        entries.sort(key=lambda n: os.stat(checkouts / n).st_mtime, reverse=True)
        keep |= set(entries[:KEEP_CHECKOUTS])
        for n in entries:
            if n not in keep:
                gitdrv.remove_tree(checkouts / n)

    # Reading specs at the commit in force --------------------------------------------------------
    def select(self, path: Path, in_force: Mapping[Path, BlueGreenApp] | None = None, *, state_dir: Path | None = None) -> Selection:
        """`specdir.select` at the checkout in force, keyed by the stable path (`path`, i.e. `stable_path`)."""
        concrete = self.checkout_path()
        if concrete is None:
            problem = self.problem
            raise SpecError(f"{self.cfg.shown_url} {self.cfg.ref}: no commit fetched yet" + (f" ({problem[1]})" if problem else ""))
        stable = path

        def to_concrete(f: Path) -> Path:
            return concrete / f.relative_to(stable) if f.is_relative_to(stable) else f

        def to_stable(f: Path) -> Path:
            return stable / f.relative_to(concrete) if f.is_relative_to(concrete) else f

        previous = {to_concrete(f): a for f, a in (in_force or {}).items()}
        sel = select_specs(concrete, previous, state_dir=state_dir)
        # The commit these files are from is the checkout's name (a sync may have switched `current` since).
        sha = concrete.relative_to(self.root / "checkouts").parts[0]
        applied = self.state.applied
        commit = applied if applied is not None and applied.sha == sha else Commit(sha, "", "")
        out = Selection(
            apps_by_file={to_stable(f): a for f, a in sel.apps_by_file.items()},
            problems=[Problem(to_stable(p.file), p.app, p.message, p.conflict) for p in sel.problems],
            accessories_by_file={to_stable(f): a for f, a in sel.accessories_by_file.items()},
        )
        with self._apps_lock:
            troubled = {p.app for p in sel.problems if p.app}
            kept_old = {a.name for f, a in sel.apps_by_file.items() if previous.get(f) is a and a.name in troubled}
            for a in sel.apps_by_file.values():
                if a.name not in kept_old:
                    self.app_commit[a.name] = commit
                    self.app_invalid.pop(a.name, None)
            for p in sel.problems:
                if p.app:
                    self.app_invalid[p.app] = (commit.sha, p.message)
        return out

    # Status, history ---------------------------------------------------------------------------
    def history_fields(self, app: str) -> dict[str, Any]:
        c = self.app_commit.get(app) or self.state.applied
        return {"commit": c.sha} if c is not None else {}

    def origin(self, app: str) -> Origin:
        """Where `app`'s spec in force came from (a release records it)."""
        c = self.app_commit.get(app) or self.state.applied
        if c is None:
            return Origin()
        return Origin(commit=c.sha, author=c.author or None, signer=c.signer, subject=c.subject)

    def status_for(self, app: str) -> tuple[SourceStatus, Condition]:
        s = self.state
        c = self.app_commit.get(app) or s.applied
        invalid = self.app_invalid.get(app)
        st = SourceStatus(
            url=self.cfg.shown_url,
            ref=self.cfg.ref,
            path=self.cfg.path,
            commit=c.sha if c else None,
            author_date=c.author_date if c else None,
            subject=c.subject if c else None,
            signer=c.signer if c else None,
            head=s.head,
            last_fetch_ok_at=iso(s.last_fetch_ok_at) if s.last_fetch_ok_at else None,
            invalid=InvalidAt(*invalid) if invalid else None,
        )
        if s.problem_reason:
            since = f" (failing since {iso(s.failing_since)})" if s.failing_since else ""
            kept = f"; commit {c.sha[:12]} stays in force" if c else "; no commit in force yet"
            cond = Condition("SourceUnavailable", True, s.problem_reason, f"{s.problem_message}{kept}{since}")
        else:
            cond = Condition("SourceUnavailable", False, "Current", f"{self.cfg.ref} at {c.sha[:12]}" if c else "")
        return st, cond

    # Watch mode --------------------------------------------------------------------------------
    def poke(self) -> None:
        """SIGHUP: fetch now."""
        self.poke_event.set()

    def next_delay(self, rng: random.Random) -> float:
        interval = self.cfg.interval
        if self.state.problem_reason is not None and self.state.failures:
            delay = backoff(self.state.failures, min(interval, 5.0), interval * FAILURE_CAP_FACTOR)
        else:
            delay = interval
        return delay * (1 + rng.uniform(-JITTER, JITTER))

    def poll_loop(self, stop: threading.Event, on_change: Callable[[], object], rng: random.Random | None = None) -> None:
        """Fetch every --git-interval (jittered; after failures: backoff), or at once when poked (SIGHUP).
        `on_change` runs after a sync that put a new commit in force or changed the source's condition."""
        rng = rng or random.Random()
        while not stop.is_set():
            deadline = time.monotonic() + self.next_delay(rng)
            while not stop.is_set() and not self.poke_event.is_set() and time.monotonic() < deadline:
                self.poke_event.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            if stop.is_set():
                return
            self.poke_event.clear()
            before = (self.state.applied, self.problem)
            try:
                self.sync()
            except Exception as e:  # the state dir refused, a bug: logged, retried; the commit in force stays
                self.log.error("source.sync_crashed", error=f"{type(e).__name__}: {one_line(e)}")
                continue
            if (self.state.applied, self.problem) != before:
                on_change()  # a new commit, or the source's condition changed: status must say so


def open_source(
    opts: SourceOptions,
    state_dir: Path,
    *,
    token: str | None = None,
    fetch: bool,
    notify: Callable[[dict[str, Any]], None] | None = None,
) -> GitSource:
    """The source from the command line; fetched once now when `fetch` (--once and --watch: --plan/--status read
    the commit in force without touching the network). InvalidInput (exit 2) for malformed options. `notify`: a
    refused commit's release event (drivers/notify.py)."""
    src = GitSource(config_from_options(opts, token), state_dir)
    if notify is not None:
        src.notify = notify
    if fetch:
        src.sync()
    return src
