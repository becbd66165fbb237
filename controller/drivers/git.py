"""The git driver: every `git` command the controller runs (GitOps source, controller/runtime/source.py).

Thin on purpose: an argv list (never a shell), a timeout, and a clean environment so that nothing of the
host's or the invoking user's git set-up takes part: no system or global config, no terminal prompt, no
credential helper, no hooks from a config file, `LC_ALL=C` so that the messages we classify are stable.
Credentials never appear in an argument: an HTTPS token travels as an `http.extraHeader` in the
environment (GIT_CONFIG_COUNT/KEY/VALUE, read by git for this command only, never written to a config
file), an SSH deploy key as `GIT_SSH_COMMAND ... -i FILE` (a path, not the key).
"""

from __future__ import annotations

import base64
import os
import shlex
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.kernel.errors import SourceError, one_line

DEFAULT_TIMEOUT = 60.0
# The tools git runs must come from the system, not from an inherited PATH.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Failure classes, from git's own (LC_ALL=C) messages; the reason shown in the SourceUnavailable condition.
_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RefNotFound", ("couldn't find remote ref", "could not find remote ref", "unknown revision")),
    (
        "AuthFailed",
        (
            "authentication failed",
            "could not read username",
            "could not read password",
            "permission denied",
            "http basic: access denied",
            "the requested url returned error: 401",
            "the requested url returned error: 403",
            "host key verification failed",
        ),
    ),
    (
        "Unreachable",
        (
            "could not resolve host",
            "connection refused",
            "failed to connect",
            "unable to connect",
            "connection timed out",
            "network is unreachable",
            "could not read from remote repository",
            "the remote end hung up",
            "the requested url returned error",
            "does not appear to be a git repository",
        ),
    ),
)


@dataclass(frozen=True)
class Credentials:
    """What authenticates the fetch. Values, not paths, for the token: it is read from its trusted file by
    controller/runtime/source.py and must never be logged (it is registered with the log redactor there)."""

    token: str | None = None  # HTTPS: "TOKEN" or "USER:TOKEN"
    ssh_key: Path | None = None  # SSH deploy key file (root-only)
    known_hosts: Path | None = None  # SSH: the server's key; strict checking always

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.token is not None:
            user, _, secret = self.token.rpartition(":")
            pair = f"{user or 'x-access-token'}:{secret}"
            header = "Authorization: Basic " + base64.b64encode(pair.encode()).decode()
            # One config entry for this command only: not in argv (ps shows it), not in the clone's config.
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header})
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null"]
        if self.known_hosts is not None:
            ssh += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.ssh_key is not None:
            ssh += ["-o", "IdentitiesOnly=yes", "-i", str(self.ssh_key)]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        env["GIT_SSH_VARIANT"] = "ssh"
        return env


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def classify(stderr: str) -> str:
    """The reason for a failed remote command: RefNotFound, AuthFailed, Unreachable, or FetchFailed."""
    low = stderr.lower()
    for reason, needles in _CLASSES:
        if any(n in low for n in needles):
            return reason
    return "FetchFailed"


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a git command: nothing inherited but what is listed here."""
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(home),  # an empty directory of ours: no ~/.gitconfig, ~/.ssh, ~/.netrc of anybody
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ASKPASS": "/bin/false",  # no credential prompt helper either
        "SSH_ASKPASS": "/bin/false",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
    }
    env.update(extra or {})
    return env


class Git:
    """`git` with one repository (`git_dir`, bare) and a clean environment."""

    def __init__(self, git_dir: Path, home: Path, *, timeout: float = DEFAULT_TIMEOUT, binary: str = "git") -> None:
        self.git_dir = git_dir
        self.home = home
        self.timeout = timeout
        self.binary = binary

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        config: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        work_tree: Path | None = None,
    ) -> Result:
        """Run `git <args>`; a Result whatever the exit code. SourceError when git cannot run or times out."""
        argv = [self.binary, f"--git-dir={self.git_dir}"]
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
        # Safe defaults for a repository someone else fills: no symlinks checked out (a link in the repo must not
        # point the controller at a host file), no hooks, file transport allowed only where we say so.
        for key, value in (("core.symlinks", "false"), ("core.hooksPath", "/dev/null"), ("protocol.file.allow", "always"), *config):
            argv += ["-c", f"{key}={value}"]
        argv += list(args)
        t = self.timeout if timeout is None else timeout
        try:
            p = subprocess.run(
                argv,
                env=clean_env(self.home, env),
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=t,
                check=False,
                cwd="/",
            )
        except FileNotFoundError as e:
            raise SourceError("GitMissing", f"{self.binary}: command not found (install git)") from e
        except subprocess.TimeoutExpired:
            raise SourceError("Unreachable", f"git {args[0]}: timed out after {t:g}s") from None
        except OSError as e:
            raise SourceError("FetchFailed", f"git {args[0]}: {e.strerror}") from e
        return Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))

    def check(self, args: Sequence[str], **kw: object) -> str:
        """Run and return stdout; SourceError naming git's last message line otherwise."""
        r = self.run(args, **kw)  # type: ignore[arg-type]
        if r.code != 0:
            raise SourceError(classify(r.stderr), f"git {args[0]} failed: {last_line(r.stderr)}")
        return r.stdout

    def init_bare(self) -> None:
        os.makedirs(self.git_dir, mode=0o700, exist_ok=True)
        if not (self.git_dir / "HEAD").exists():
            self.check(["init", "--quiet", "--bare"])


def last_line(text: str) -> str:
    """git's most telling line: the last `fatal:`/`error:` one, else the last line (one line, shortened)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
    return one_line(tail) or "no message"


# ------------------------------------------------------------------------------------------------ files of the source

KEY_MAX = 64 * 1024


def read_secret_file(path: Path, what: str) -> str:
    """A token or key file: a regular file owned by root (or the running uid), readable by its owner only, in
    trusted directories (drivers/files.py); its first line, stripped. InvalidInput (exit 2) otherwise; the
    content is never part of a message."""
    from controller.kernel import files
    from controller.kernel.errors import InvalidInput

    p = Path(os.path.abspath(path))
    try:
        with files.directory(p.parent, purpose=f"read {what} {p}") as dfd:
            fd = os.open(p.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                problem = (
                    "is not a regular file" if not stat.S_ISREG(st.st_mode)
                    else f"is owned by uid {st.st_uid}, not root" if st.st_uid not in files.trusted_uids()
                    else f"is readable or writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600)"
                    if st.st_mode & 0o077
                    else "is too big" if st.st_size > KEY_MAX
                    else None
                )
                if problem is not None:
                    raise InvalidInput(f"{what} {p}: {problem}")
                data = os.read(fd, KEY_MAX + 1)
            finally:
                os.close(fd)
    except InvalidInput:
        raise
    except files.Untrusted as e:
        raise InvalidInput(f"{what} {p}: refused: {e.detail}") from None
    except OSError as e:
        raise InvalidInput(f"{what} {p}: cannot read: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise InvalidInput(f"{what} {p}: empty")
    return text


class FileLock:
    """flock on `path` (the source's own lock: a cron --once and a --watch never fetch into one clone at once)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> FileLock:

        from controller.kernel import files

        fd = files.open_state_file(self.path, os.O_RDWR | os.O_CREAT, purpose=f"open lock {self.path}")
        if not files.flock_within(fd, self.timeout):
            os.close(fd)
            raise SourceError("LockBusy", f"{self.path}: another run is fetching")
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only fd releases the flock
            self._fd = None


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """`path` and its parents, checked like the state dir (drivers/files.py trust rules), then chmod `mode`."""
    from controller.kernel import files

    with files.directory(path, purpose=f"use {path}", create=True) as fd:
        os.fchmod(fd, mode)


def seal_tree(root: Path) -> None:
    """Make a fresh checkout read-only for everyone but its owner's writes: go-w on every entry (git honours
    the umask, and a spec must not be group-writable to be trusted). Links are not expected (core.symlinks
    is false) and never followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o022)
    st = os.lstat(root)
    os.chmod(root, stat.S_IMODE(st.st_mode) & ~0o022)


def switch_link(link: Path, target: str) -> None:
    """Point symlink `link` at `target` atomically (a new link renamed over the old one), directory fsync'd."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with suppress_missing():
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    dfd = os.open(link.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_link(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def is_dir(path: Path) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def list_dir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def suppress_missing() -> Any:
    from contextlib import suppress

    return suppress(FileNotFoundError)
