"""Releases (issue 21): which revision served, from when, for how long, and how it ended. Pure.

A release is a revision that took traffic. The reconciler records one when a switch it made is confirmed
(`begin`), and, level-triggered, when a converged pass finds traffic on a revision the ledger does not name
live (a run killed between its switch and the ledger write, a switch by hand, the first run of this version:
`began` "observed"). The release that served before ends then, with how: replaced by the next deploy, rolled
back (the new one served before), switched back by verification (with its figures), failed over (with why).

    <state-dir>/apps/<app>/releases.json    RELEASES: the newest KEEP releases, oldest first; the local images
                                            of the app's repository with when the controller first saw each

Pruning keeps the releases' images (`keep_reason`), `reconcile releases` shows them (controller/cli/release.py),
`rollback --to` goes back to one; each release event is also a notification (`event`: one JSON object with a
`text` line, controller/drivers/notify.py posts it).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from annotated_types import Interval

from controller.kernel.document import MAX_INT, Alias, Document, Epoch, Stored
from controller.kernel.imageref import local_names
from controller.spec.base import Color

KEEP = 100  # releases kept per app (the newest)

Began = Literal["deploy", "rollback", "switch-back", "failover", "observed"]
Ended = Literal["live", "replaced", "rolled-back", "switched-back", "failed-over"]
# The notification kinds: a release began (by its `began`), a deploy failed, a source commit was refused.
EventKind = Literal["cutover", "rollback", "switch-back", "failover", "deploy-failed", "source-refused"]
EVENT_OF: dict[Began, EventKind] = {"deploy": "cutover", "rollback": "rollback", "switch-back": "switch-back", "failover": "failover"}


@dataclass(frozen=True)
class Origin:
    """Who or what put a release's spec in force: the git commit (--git-url), else the invoking user."""

    commit: str | None = None
    author: str | None = None
    signer: str | None = None
    subject: str | None = None
    actor: str | None = None


def local_actor() -> str:
    """The user who ran the controller: `SUDO_USER` when sudo did, else the process's user."""
    sudo = os.environ.get("SUDO_USER", "")
    if sudo and sudo.isprintable() and len(sudo) <= 64:
        return sudo
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class Release(Stored):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"digest", "imageId", "commit", "author", "signer", "subject", "actor", "endedAt", "detail"}
    )

    number: Annotated[int, Interval(ge=1, le=MAX_INT)]  # per app, 1, 2, ...; never reused
    revision: str
    image: str  # as the spec named it
    color: Color
    started_at: Annotated[float, Interval(ge=0, le=MAX_INT), Alias("startedAt")]  # took traffic (switch confirmed)
    began: Began
    digest: str | None = None  # repo@sha256:... the container's image had when it took traffic
    image_id: Annotated[str | None, Alias("imageId")] = None
    commit: str | None = None
    author: str | None = None
    signer: str | None = None
    subject: str | None = None
    actor: str | None = None
    ended_at: Annotated[float | None, Interval(ge=0, le=MAX_INT), Alias("endedAt")] = None
    ended: Ended = "live"
    detail: str | None = None  # how it ended, in figures: the verification's, the failover's reason

    def served(self, now: float) -> float:
        return max(0.0, (self.ended_at if self.ended_at is not None else now) - self.started_at)


@dataclass(frozen=True)
class Releases(Stored):
    """releases.json (the release ledger). `seen`: image id -> when a pass first saw it locally (pruning: "pulled after")."""

    releases: list[Release] = field(default_factory=list)  # oldest first
    seen: dict[str, Epoch] = field(default_factory=dict)

    @property
    def live(self) -> Release | None:
        last = self.releases[-1] if self.releases else None
        return last if last is not None and last.ended == "live" else None

    def find(self, ref: str) -> Release | None:
        """`ref`: a release number (`3`, `#3`), a revision, or an image as written or by digest; the newest that matches."""
        n = ref.removeprefix("#")
        if n.isdigit() and (found := next((r for r in self.releases if r.number == int(n)), None)) is not None:
            return found
        for r in reversed(self.releases):
            if ref in (r.revision, r.image, r.digest, r.image_id) or (r.digest is not None and r.digest.endswith("@" + ref)):
                return r
        return None


RELEASES = Document(Releases)


@dataclass(frozen=True)
class Taken:
    """A revision that takes traffic now, as the reconciler saw it (the container it switched to)."""

    revision: str
    image: str
    color: Color
    at: float
    digest: str | None = None
    image_id: str | None = None


def classify(ledger: Releases, revision: str, *, desired: bool, failover: bool) -> Began:
    """How a switch to `revision` began a release: a failover, a switch back to the previous color (not the
    desired one), a rollback (the revision served before: going back), else a deploy."""
    if failover:
        return "failover"
    if not desired:
        return "switch-back"
    live = ledger.live
    if any(r.revision == revision for r in ledger.releases if r is not live):
        return "rollback"
    return "deploy"


_ENDED_BY: dict[Began, Ended] = {
    "deploy": "replaced",
    "observed": "replaced",
    "rollback": "rolled-back",
    "switch-back": "switched-back",
    "failover": "failed-over",
}


def begin(ledger: Releases, taken: Taken, began: Began, origin: Origin, *, detail: str | None = None) -> Releases:
    """The ledger with `taken` live; the release live before ends as `began` says (with `detail`, the figures).

    The same revision already live on that color changes nothing (a pass that re-confirms a switch)."""
    live = ledger.live
    if live is not None and live.revision == taken.revision and live.color == taken.color:
        return ledger
    old = list(ledger.releases)
    if live is not None:
        old[-1] = replace(live, ended_at=max(taken.at, live.started_at), ended=_ENDED_BY[began], detail=detail)
    number = (old[-1].number + 1) if old else 1
    new = Release(
        number=number,
        revision=taken.revision,
        image=taken.image,
        color=taken.color,
        started_at=taken.at,
        began=began,
        digest=taken.digest,
        image_id=taken.image_id,
        commit=origin.commit,
        author=origin.author,
        signer=origin.signer,
        subject=origin.subject,
        actor=None if origin.commit else origin.actor,
    )
    return replace(ledger, releases=[*old, new][-KEEP:])


def note_seen(ledger: Releases, image_ids: Iterable[str], now: float) -> Releases:
    """`seen` for the images present now: a new id is seen `now`; ids no longer present are forgotten."""
    ids = set(image_ids)
    seen = {i: t for i, t in ledger.seen.items() if i in ids}
    seen.update({i: now for i in ids if i not in seen})
    return ledger if seen == ledger.seen else replace(ledger, seen=seen)


# ---------------------------------------------------------------------------------------------- pruning


def recent(ledger: Releases, keep: int) -> list[Release]:
    """The N most recent releases, newest first; a release of an image that served before counts once (going back
    to a release does not push another out)."""
    out: list[Release] = []
    images: set[str] = set()
    for r in reversed(ledger.releases):
        if len(images) >= keep:
            break
        if r.image not in images:
            images.add(r.image)
            out.append(r)
    return out


def keep_reason(ledger: Releases, keep: int, image_id: str, references: Iterable[str], created: float) -> str | None:
    """Why pruning keeps this unused image of the app's repository, or None (it may go). `spec.keepImages` = N:

    - it is the image of one of the N most recent releases (by id, or by a name or digest the release recorded);
    - it was created, or first seen here (pulled, loaded, tagged), after the newest release took traffic: it
      may be the next release;
    - no release is recorded yet: nothing is known to be old.
    """
    if not ledger.releases:
        return "no release recorded yet"
    refs = set(references)
    for r in recent(ledger, keep):
        names = local_names(r.image) | {r.image} | ({r.digest} if r.digest else set())
        if r.image_id == image_id or names & refs:
            return f"the image of release #{r.number} (one of the {keep} most recent)"
    newest = ledger.releases[-1].started_at
    if created > newest:
        return f"created {_iso(created)}, after release #{ledger.releases[-1].number} took traffic"
    seen = ledger.seen.get(image_id)
    if seen is None or seen >= newest:  # seen in the pass that recorded it: not known to be older
        return f"first seen {_iso(seen) if seen is not None else 'now'}, after release #{ledger.releases[-1].number} took traffic"
    return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- notifications


def check_notify_url(url: str) -> str:
    """`--notify-url`: https://, or http:// to a loopback address only (a plain-HTTP body crosses no network)."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        _ = u.port  # a malformed port raises here
    except ValueError as e:
        raise ValueError(f"{e}") from None
    if u.username is not None or u.password is not None:
        raise ValueError("no user:password@ in the URL (put the credential in the path or query, as webhooks do)")
    if not host or not url.isprintable() or any(ch.isspace() for ch in url):
        raise ValueError("not an absolute http(s) URL")
    if u.scheme == "https":
        return url
    if u.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
        raise ValueError("http:// only to a loopback address (127.0.0.0/8, ::1, localhost); use https://")
    raise ValueError("https:// (or http:// to a loopback address) only")


def event(
    kind: EventKind,
    app: str,
    at: float,
    *,
    release: Release | None = None,
    previous: Release | None = None,
    figures: str | None = None,
    image: str | None = None,
    revision: str | None = None,
    message: str | None = None,
    origin: Origin | None = None,
) -> dict[str, Any]:
    """One notification body: the fields, and `text`, one line a Slack or Mattermost incoming webhook shows."""
    who = origin or Origin()
    if release is not None:
        who = Origin(release.commit, release.author, release.signer, release.subject, release.actor)
    body: dict[str, Any] = {"event": kind, "app": app or None, "at": _iso(at)}
    if release is not None:
        body["release"] = {"number": release.number, "revision": release.revision, "image": release.image, "color": release.color, "digest": release.digest}
    if previous is not None:
        body["previous"] = {"number": previous.number, "revision": previous.revision, "image": previous.image, "color": previous.color}
    for k, v in (("image", image), ("revision", revision), ("figures", figures), ("message", message)):
        if v is not None:
            body[k] = v
    body["actor"] = {"commit": who.commit, "author": who.author, "signer": who.signer, "user": who.actor}
    by = f" by {who.author or who.actor}" if (who.author or who.actor) else ""
    by += f" (commit {who.commit[:12]})" if who.commit else ""
    now = f"#{release.number} {release.image} on {release.color}" if release is not None else ""
    was = f" (was #{previous.number} {previous.image})" if previous is not None else ""
    lines = {
        "cutover": f"{app}: release {now} took traffic{was}{by}",
        "rollback": f"{app}: rolled back to {now}{was}{by}",
        "switch-back": f"{app}: verification failed, switched back to {now}{was}: {figures or ''}".rstrip(": "),
        "failover": f"{app}: failed over to {now}{was}: {figures or ''}".rstrip(": "),
        "deploy-failed": f"{app}: deploy of {image} failed: {message or ''}{by}".rstrip(": "),
        "source-refused": f"source commit refused: {message or ''}".rstrip(": "),
    }
    body["text"] = lines[kind]
    return body


# ---------------------------------------------------------------------------------------------- the table

Way = Literal["live", "switch", "deploy", "no"]


@dataclass(frozen=True)
class Row:
    """One release in `reconcile releases`, and what rolling back to it would be now."""

    release: Release
    way: Way
    why: str


@dataclass(frozen=True)
class Host:
    """What the table is judged against, observed by the caller (controller/cli/release.py)."""

    config_revision: Callable[[Release], str]  # the spec with the release's image: its revision on the release's color
    idle_revision: Callable[[Release], str]  # ... and on the idle color
    obtainable: Callable[[str], str | None]  # None when the image is present or pullable, else why not
    warm_revision: str | None  # the revision a warm standby (idle color) runs; None: no warm standby
    idle: Color


def assess(ledger: Releases, host: Host) -> list[Row]:
    """Newest first: the live release; for each other, whether `rollback --to` it is a switch (the idle color runs
    it, warm), a deploy (its image present or pullable, the spec's configuration unchanged since), or not possible."""
    rows: list[Row] = []
    checked: dict[str, str | None] = {}
    for r in reversed(ledger.releases):
        live = ledger.live
        if r is live:
            rows.append(Row(r, "live", f"serving on {r.color}"))
            continue
        if live is not None and r.revision == live.revision:
            rows.append(Row(r, "live", f"its revision serves: release #{live.number}"))
            continue
        if host.config_revision(r) != r.revision:
            rows.append(Row(r, "no", "the spec's configuration changed since (env, ports, labels, resources or secrets)"))
            continue
        if host.warm_revision is not None and host.warm_revision == host.idle_revision(r):
            rows.append(Row(r, "switch", f"{host.idle} runs it, warm: a switch"))
            continue
        if r.image not in checked:
            checked[r.image] = host.obtainable(r.image)
        why = checked[r.image]
        if why is not None:
            rows.append(Row(r, "no", why))
        else:
            rows.append(Row(r, "deploy", f"a deploy of {r.image} on {host.idle}, health-gated"))
    return rows


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def _ending(r: Release) -> str:
    how = {"live": "live", "replaced": "replaced", "rolled-back": "rolled back", "switched-back": "switched back",
           "failed-over": "failed over"}[r.ended]
    return f"{how} ({r.detail})" if r.detail else how


def render_table(app: str, rows: list[Row], now: float) -> str:
    """The human table, newest first (`reconcile releases`)."""
    head = ("#", "image", "revision", "color", "took traffic", "served", "began", "how it ended", "by", "rollback now")
    lines = [head]
    for row in rows:
        r = row.release
        by = (f"{r.author or '?'} {r.commit[:12]}" if r.commit else r.actor) or ""
        now_col = "LIVE" if row.way == "live" else f"{row.way}" + ("" if row.way != "no" else f": {row.why}")
        lines.append((f"{r.number}", r.image, r.revision[:12], r.color, _iso(r.started_at), _span(r.served(now)), r.began, _ending(r), by, now_col))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head) - 1)]
    out = [f"{app}: {len(rows)} release{'s' if len(rows) != 1 else ''} (newest first)"]
    out += ["  ".join(c.ljust(w) for c, w in zip(x[:-1], widths, strict=True)) + "  " + x[-1] for x in lines]
    return "\n".join(out) + "\n"


def table_json(app: str, rows: list[Row], now: float) -> dict[str, Any]:
    out = []
    for row in rows:
        doc = RELEASES.dump(Releases(releases=[row.release]))["releases"][0]
        doc.update(servedSeconds=round(row.release.served(now), 3), rollback={"way": row.way, "why": row.why})
        out.append(doc)
    return {"app": app, "releases": out}
