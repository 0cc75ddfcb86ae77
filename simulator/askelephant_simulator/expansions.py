"""What ``expand=`` adds to an engagement (docs/askelephant-api.md §2.4 Engagement).

The docs name the expansions and a few types (``transcript`` string | null, ``media_url`` a
short-lived signed URL or null, ``owner`` a user or null, ``companies`` items of object type
``engagement_company``); the item shapes of ``companies``, ``contacts``, ``action_items``,
``signals`` and ``tags`` were not visible, so those below are simulator choices
(docs/simulator.md lists them).

Everything generated here is a pure function of (seed, engagement id, its fields), so a
record's transcript is the same on every page and every run, without storing megabytes: it is
rebuilt (and cached) when asked for.  A transcribed engagement is a COMPLETED meeting, call or
calendar event with a duration; a one-hour call gives some 300 segments and 50 KB of text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from askelephant_simulator.clock import Ts

TRANSCRIBED_TYPES: Final = ("MEETING", "CALL", "CALENDAR_EVENT")
# simulator inventions: signal (annotation) kinds of a sales conversation
SIGNAL_TYPES: Final = (
    "question",
    "objection",
    "next_step",
    "pricing",
    "competitor_mention",
    "risk",
    "buying_signal",
)
MEDIA_URL_TTL_S: Final = 900
"""docs/askelephant-api.md §2.4: media_url "expires after a short time" (15 min: our choice)."""

Lookup = Callable[[str, str], dict[str, Any] | None]
"""(resource, id) -> the rendered active record, or None (unknown or soft-deleted)."""

_OPENERS: Final = (
    "So", "Right,", "Okay,", "Honestly,", "From our side,", "Just to be clear,", "And", "Yeah,",
    "Well,", "I think", "To be fair,", "Quick question:",
)  # fmt: skip
_SUBJECTS: Final = (
    "the team", "our finance lead", "legal", "the pilot group", "procurement", "my manager",
    "the ops side", "our CFO", "the board", "our head of sales", "IT security", "the champion",
)  # fmt: skip
_VERBS: Final = (
    "needs to see", "is worried about", "would love", "already looked at", "keeps asking about",
    "is comparing", "wants to understand", "signed off on", "is blocked on", "cares most about",
)  # fmt: skip
_OBJECTS: Final = (
    "the pricing tiers", "the Salesforce integration", "call recording consent", "the rollout plan",
    "data residency in the EU", "the renewal terms", "a two-week pilot", "the security review",
    "seat-based licensing", "the onboarding timeline", "coaching scorecards", "the API limits",
    "the CRM sync", "next quarter's budget", "the competitor's demo",
)  # fmt: skip
_TAILS: Final = (
    "", "", "", " before we commit", " by the end of the month", " this quarter",
    " if that makes sense", " for the whole org", " first", " on Thursday",
)  # fmt: skip
_ACTIONS: Final = (
    "Send the pricing proposal", "Share the security questionnaire", "Book a follow-up demo",
    "Loop in legal on the MSA", "Set up the pilot workspace", "Send the recording and notes",
    "Confirm budget with finance", "Introduce the solutions engineer",
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """One transcript segment: who spoke, when (seconds from the start), what."""

    speaker_index: int
    speaker: str
    start_s: float
    end_s: float
    text: str


def is_transcribed(fields: dict[str, Any]) -> bool:
    return (
        fields.get("engagement_type") in TRANSCRIBED_TYPES
        and fields.get("processing_status") == "COMPLETED"
        and int(fields.get("duration_seconds") or 0) > 0
    )


def _sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_OPENERS)} {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
        f"{rng.choice(_OBJECTS)}{rng.choice(_TAILS)}{rng.choice('..?.')}"
    )


@functools.lru_cache(maxsize=256)
def transcript_segments(
    seed: int, engagement_id: str, duration_s: int, speakers: tuple[str, ...]
) -> tuple[Segment, ...]:
    """Turn-taking speech over the whole duration, ~2.6 words per second (about 150 wpm)."""
    rng = random.Random(f"{seed}:transcript:{engagement_id}")
    out: list[Segment] = []
    t = rng.uniform(0.5, 4.0)
    who = 0
    while t < duration_s - 1:
        text = " ".join(_sentence(rng) for _ in range(rng.choices((1, 2, 3, 4), (3, 4, 3, 2))[0]))
        end = min(t + len(text.split()) / rng.uniform(2.2, 3.0), float(duration_s))
        out.append(Segment(who, speakers[who], round(t, 2), round(end, 2), text))
        t = end + rng.uniform(0.1, 1.5)
        if len(speakers) > 1:  # the next turn goes to someone else
            who = rng.choice([i for i in range(len(speakers)) if i != who])
    return tuple(out)


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def transcript_text(segments: Sequence[Segment]) -> str:
    """docs/askelephant-api.md §2.4: ``transcript`` is the full text (a string).  Simulator
    choice: one line per segment, ``[HH:MM:SS.mmm --> HH:MM:SS.mmm] Speaker: text``."""
    return "\n".join(
        f"[{_clock(s.start_s)} --> {_clock(s.end_s)}] {s.speaker}: {s.text}" for s in segments
    )


def _ulid_like(prefix: str, rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return prefix + "".join(rng.choice(alphabet) for _ in range(26))


def signals(seed: int, engagement_id: str, segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """About one annotation per 40 segments, each quoting the segment it marks."""
    if not segments:
        return []
    rng = random.Random(f"{seed}:signals:{engagement_id}")
    picked = sorted(rng.sample(range(len(segments)), min(len(segments), 1 + len(segments) // 40)))
    out = []
    for i in picked:
        s = segments[i]
        out.append(
            {
                "object": "signal",
                "id": _ulid_like("sig_", rng),
                "type": rng.choice(SIGNAL_TYPES),
                "text": s.text.split("?")[0].split(".")[0].strip() + ".",
                "speaker": s.speaker,
                "start_seconds": s.start_s,
                "end_seconds": s.end_s,
                "confidence": round(rng.uniform(0.55, 0.99), 2),
            }
        )
    return out


def action_items(seed: int, engagement_id: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """0-4 follow-ups of a COMPLETED engagement, assigned to its owner."""
    if fields.get("processing_status") != "COMPLETED":
        return []
    rng = random.Random(f"{seed}:action_items:{engagement_id}")
    start: Ts = fields["start_at"]
    return [
        {
            "object": "action_item",
            "id": _ulid_like("act_", rng),
            "text": rng.choice(_ACTIONS),
            "assignee_user_id": fields["owner_user_id"],
            "due_at": Ts(start.us + rng.randint(1, 14) * 86_400_000_000),
            "is_completed": rng.random() < 0.4,
        }
        for _ in range(rng.choices((0, 1, 2, 3, 4), (2, 3, 3, 2, 1))[0])
    ]


def media_url(seed: int, engagement_id: str, now_us: int) -> str:
    """A signed, expiring URL (never a durable link: docs/askelephant-api.md §2.4)."""
    expires = now_us // 1_000_000 + MEDIA_URL_TTL_S
    message = f"{engagement_id}:{expires}".encode()
    signature = hmac.new(f"media:{seed}".encode(), message, hashlib.sha256).hexdigest()[:32]
    return (
        f"https://media.askelephant.example/v2/engagements/{engagement_id}/recording.mp4"
        f"?expires={expires}&signature={signature}"
    )


def _full_name(record: dict[str, Any] | None) -> str | None:
    if record is None:
        return None
    name = " ".join(p for p in (record.get("first_name"), record.get("last_name")) if p)
    return name or None


def speakers(
    fields: dict[str, Any], contacts: Sequence[dict[str, Any]], lookup: Lookup
) -> tuple[str, ...]:
    """The owner first, then the contact participants; unnamed ones become "Speaker n"."""
    names = [_full_name(lookup("users", fields["owner_user_id"])) or "Speaker 1"]
    names += [_full_name(c) or f"Speaker {i + 2}" for i, c in enumerate(contacts)]
    if len(names) == 1:
        names.append("Speaker 2")  # a participant who is not a known contact
    return tuple(names)


def render_expansions(
    seed: int,
    engagement_id: str,
    fields: dict[str, Any],
    expand: Sequence[str],
    lookup: Lookup,
    now_us: int,
) -> dict[str, Any]:
    """The ``expand`` keys of one engagement (links to records that are gone are left out)."""
    companies = [r for r in (lookup("companies", i) for i in fields["_company_ids"]) if r]
    contacts = [r for r in (lookup("contacts", i) for i in fields["_contact_ids"]) if r]
    out: dict[str, Any] = {}
    segments: tuple[Segment, ...] = ()
    if ("transcript" in expand or "signals" in expand) and is_transcribed(fields):
        segments = transcript_segments(
            seed, engagement_id, int(fields["duration_seconds"]), speakers(fields, contacts, lookup)
        )
    for name in expand:
        if name == "companies":
            out[name] = [
                {"object": "engagement_company", "id": c["id"], "name": c.get("name")}
                for c in companies
            ]
        elif name == "contacts":
            out[name] = [_participant(c) for c in contacts]
        elif name == "owner":
            out[name] = lookup("users", fields["owner_user_id"])
        elif name == "action_items":
            out[name] = action_items(seed, engagement_id, fields)
        elif name == "signals":
            out[name] = signals(seed, engagement_id, segments)
        elif name == "transcript":
            out[name] = transcript_text(segments) if segments else None
        elif name == "media_url":
            recorded = is_transcribed(fields)
            out[name] = media_url(seed, engagement_id, now_us) if recorded else None
        elif name == "tags":
            out[name] = [t for t in (lookup("tags", i) for i in fields["_tag_ids"]) if t]
    return out


def _participant(contact: dict[str, Any]) -> dict[str, Any]:
    out = {
        "object": "engagement_contact",
        "id": contact["id"],
        "first_name": contact.get("first_name"),
        "last_name": contact.get("last_name"),
    }
    primary = [e["email"] for e in contact.get("emails", []) if e.get("is_primary")]
    if primary:  # optional, omitted when empty (docs/askelephant-api.md §2.4)
        out["email"] = primary[0]
    return out
