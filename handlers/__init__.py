"""Pure decision logic: bytes and plain values in, Decisions out. Never imports worker."""

from handlers.classify import READERS, classify
from handlers.model import ALL, Action, ActionType, Channel, Decision, Inbound, Kind, State

__all__ = ["ALL", "READERS", "Action", "ActionType", "Channel", "Decision", "Inbound", "Kind", "State", "classify"]
