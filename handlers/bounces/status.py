"""The bounce reason taxonomy: why a recipient bounced, in one word (issue 3).

Recipient-side reasons (user_unknown, host_unknown, has_moved, not_accepting) are hard
when the failure is permanent (class 5); every other reason is about the message, the
sender or the moment (mailbox_full, rate_limited, blocked, policy, spam, reputation...)
and is soft.
"""

from __future__ import annotations

import enum


class BounceReason(enum.StrEnum):
    """Why a recipient bounced, in one word; from the diagnostic text or the RFC 3463 code."""

    USER_UNKNOWN = "user_unknown"
    HOST_UNKNOWN = "host_unknown"
    HAS_MOVED = "has_moved"
    NOT_ACCEPTING = "not_accepting"
    MAILBOX_FULL = "mailbox_full"
    MESSAGE_TOO_BIG = "message_too_big"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    SYSTEM_ERROR = "system_error"
    NETWORK_ERROR = "network_error"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    POLICY = "policy"
    SPAM = "spam"
    REPUTATION = "reputation"
    SENDER_ADDRESS = "sender_address"
    PROTOCOL_ERROR = "protocol_error"
    CONTENT_ERROR = "content_error"
    OTHER = "other"
