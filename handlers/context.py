"""What deciding code knows about the organisation, built once at start (issue 20).

Handlers used to take the whole settings object as `Any` and read it with `getattr`.
They now take a `Context`: the units, our addresses and the routing table built from
them, the token keyring, the trusted authentication services and the bounce and
complaint policies, typed and frozen. `Context.from_settings` builds it; the worker
builds one per process (the parser processes build their own from the settings they
are given) and passes it to every `decide_*` and to `classify`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from config.settings import BounceSettings, ComplaintSettings, Settings, Unit
from handlers.routing import Router
from handlers.tokens import Keyring, keyring_from_settings


class ComplaintScope(enum.StrEnum):
    """What a spam complaint unsubscribes besides suppressing the address."""

    UNIT = "unit"   # email from the unit the complained-about mail came from
    ALL = "all"     # email from every unit


def _unit_names(units: Mapping[str, Unit]) -> dict[str, tuple[str, ...]]:
    """Unit key -> every name people use for it (configured names, aliases, the key)."""
    out: dict[str, tuple[str, ...]] = {}
    for key, unit in units.items():
        names = [unit.names.sv, unit.names.nb, unit.names.en, *unit.aliases, key, key.replace("-", " ")]
        out[key] = tuple(dict.fromkeys(n for n in names if n and len(n) >= 3))
    return out


@dataclass(frozen=True)
class Context:
    """The organisation as deciding code sees it. Build with `from_settings`."""

    mail_domain: str                       # where reply@, bounces@, fbl@ and unsubscribe@ live
    effective_bounce_domain: str           # the VERP return-path domain
    bounce_local: str = "bounces"
    reply_local: str = "reply"
    fbl_local: str = "fbl"
    unsubscribe_local: str = "unsubscribe"
    units: Mapping[str, Unit] = field(default_factory=dict)
    keyring: Keyring | None = None         # None: no keys, so no token verifies
    trusted_authserv_ids: tuple[str, ...] = ()
    bounces: BounceSettings = field(default_factory=BounceSettings)
    complaints: ComplaintSettings = field(default_factory=ComplaintSettings)
    complaint_scope: ComplaintScope = ComplaintScope.UNIT
    # Derived once from the fields above (see __post_init__).
    router: Router = field(init=False, repr=False, compare=False)
    unit_names: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))
        object.__setattr__(self, "router", Router(self))
        object.__setattr__(self, "unit_names", MappingProxyType(_unit_names(self.units)))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Pickled for the parser processes: rebuilt from its fields, derived parts anew.
        return (_rebuild, (self.mail_domain, self.effective_bounce_domain, self.bounce_local, self.reply_local,
                           self.fbl_local, self.unsubscribe_local, dict(self.units), self.keyring,
                           self.trusted_authserv_ids, self.bounces, self.complaints, self.complaint_scope))

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        """The context of `settings` (whose token keys the worker has filled in)."""
        return cls(
            mail_domain=settings.mail_domain,
            effective_bounce_domain=settings.effective_bounce_domain,
            bounce_local=settings.bounce_local,
            reply_local=settings.reply_local,
            fbl_local=settings.fbl_local,
            unsubscribe_local=settings.unsubscribe_local,
            units=settings.units,
            keyring=keyring_from_settings(settings),
            trusted_authserv_ids=tuple(settings.trusted_authserv_ids),
            bounces=settings.bounces,
            complaints=settings.complaints,
            complaint_scope=ComplaintScope(settings.complaint_scope),
        )


def _rebuild(*fields: object) -> Context:
    return Context(*fields)  # type: ignore[arg-type]
