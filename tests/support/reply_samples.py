"""Helpers for the reply tests: build a message, classify it with the example settings."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import config
from handlers.context import Context
from handlers import Decision, Inbound, classify

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SETTINGS = config.load({}, Path(__file__).resolve().parents[2] / "config" / "example.toml")


def mail(body: str = "", subject: str = "Re: Alumninytt", sender: str = "Anna Berg <anna.berg@example.se>",
         to: str = "reply@mail.example.org", extra: str = "", content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = f"From: {sender}\nTo: {to}\nSubject: {subject}\nMIME-Version: 1.0\nContent-Type: {content_type}\n{extra}"
    return (head.rstrip("\n") + "\n\n" + body).encode("utf-8")


def decide(raw: bytes, rcpt: tuple[str, ...] = ("reply@mail.example.org",), mail_from: str | None = "x@example.se"
           ) -> Decision:
    return classify(Inbound.from_smtp(raw, mail_from, rcpt, NOW), Context.from_settings(SETTINGS), NOW)


def scope(decision: Decision) -> tuple[object, object]:
    (action,) = [a for a in decision.actions if a.type.value == "unsubscribe"]
    units = action.units if action.units == "all" else tuple(action.units)
    channels = action.channels if action.channels == "all" else tuple(action.channels)
    return units, channels
