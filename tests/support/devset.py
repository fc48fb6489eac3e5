"""The reply development set (tests/data/replies/): load its entries, build raw mail from them.

The set is text written for unsubd (see tests/data/replies/README.md). Each entry is
a table in a TOML file; this module turns one into the bytes a mail client would
send to reply@mail.example.org, deterministically (the same entry always gives the
same bytes): sender, dates, Message-IDs, boundaries and line endings are derived
from a hash of the entry's id, never from the clock or a random source.

* `load(holdout=False)` the entries of tests/data/replies/*.toml (or of holdout/);
* `build(entry)` the raw RFC 5322 message (bytes);
* `expected(entry)` the label in the shape of ../shared/corpus/mail/labels.jsonl,
  which bench/reply_accuracy.py reads (`kind`, `address`, `scope`, ...).

How a client quotes (`client`):

* plain: text/plain, 8bit; "On <date>, <name> wrote:" then "> " lines; a "-- "
  line before the signature;
* gmail: multipart/alternative (quoted-printable text, HTML with a blockquote);
  the attribution line wrapped as Gmail does, then "> " lines;
* outlook: multipart/alternative (base64); a line of underscores and the
  "From: / Sent: / To: / Subject:" block in the writer's language, the original
  text unquoted beneath it;
* iphone: text/plain, quoted-printable; "Sent from my iPhone" in the writer's
  language, then the attribution and the original, all behind "> ".

`quoted = "@<unit>"` quotes a newsletter (or, for events, an invitation) of that unit
written here, with its footer and unsubscribe link, in Swedish, Norwegian Bokmål or
English (the languages Nordvik universitet sends in); any other `quoted` text is
quoted as it stands. `forwarded = true` renders the history as a forwarded message
instead of a reply.
"""

from __future__ import annotations

import base64
import hashlib
import html
import quopri
import tomllib
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "replies"
HOLDOUT = DATA / "holdout"

NORDIC = ("sv", "nb", "nn", "da", "fi", "en", "de")          # the languages unsubd reads
OTHER = ("fr", "es", "pl", "it", "nl", "et")                 # languages it does not read (other.toml)
FILES = (*NORDIC, "other")
LABELS = ("optout", "optin", "erasure", "reply", "autoreply")
REQUESTS = ("optout", "optin", "erasure")                  # labels that carry units and channels
UNITS = ("alumni", "research-news", "student-comms", "events")
CHANNELS = ("email", "sms", "phone", "letter", "web")
CLIENTS = ("plain", "outlook", "gmail", "iphone")
REQUIRED = ("id", "lang", "label", "subject", "body", "client", "note")
OPTIONAL = ("units", "channels", "quoted", "signature", "sender", "address", "forwarded", "fresh", "headers",
            "auth")
# Minimum entries per language file (dev part): issue 21, "at least 40 emailed requests
# and ordinary replies per language", of which requests and non-requests:
MIN_ENTRIES = 40
MIN_REQUESTS = 25
MIN_OTHERS = 15

REPLY_ADDRESS = "reply@mail.example.org"
DOMAINS = {"sv": ("example.se",), "nb": ("example.no",), "nn": ("example.no",), "da": ("example.dk",),
           "fi": ("example.fi",), "de": ("example.de",)}
ANY_DOMAIN = ("example.se", "example.no", "example.fi", "example.dk", "example.de")

# Display names per language (invented); the sender of an entry without `sender`
# is picked from these by the hash of its id.
NAMES = {
    "sv": ["Anna Lindqvist", "Erik Johansson", "Karin Sjöberg", "Mats Öberg", "Sofia Åkerlund", "Per Nyström",
           "Lena Bergkvist", "Jonas Ekdahl", "Maria Holmberg", "Olof Strand", "Ingrid Wallin", "Henrik Ståhl"],
    "nb": ["Ingrid Haugen", "Ola Bakke", "Silje Dahl", "Torbjørn Lie", "Marit Solberg", "Håkon Berg",
           "Ragnhild Moe", "Espen Strand", "Nina Aasen", "Vegard Holm"],
    "nn": ["Sigrun Aasen", "Eirik Vik", "Solveig Myklebust", "Ivar Tveit", "Gunnhild Rørvik", "Ola Bø",
           "Brita Hauge", "Knut Fjeld", "Astrid Nes", "Lars Sande"],
    "da": ["Mette Sørensen", "Anders Kjær", "Louise Dam", "Søren Vestergaard", "Camilla Holm", "Jesper Thomsen",
           "Birgitte Lund", "Rasmus Bech", "Pernille Krogh", "Mads Østergaard"],
    "fi": ["Liisa Virtanen", "Juha Korhonen", "Aino Mäkinen", "Mikko Heikkinen", "Satu Laine", "Timo Järvinen",
           "Hanna Koskinen", "Pekka Lehtonen", "Riikka Salo", "Janne Mäkelä"],
    "de": ["Katrin Müller", "Jörg Schneider", "Sabine Weiß", "Thomas Becker", "Anja Hoffmann", "Lukas Schäfer",
           "Julia Krüger", "Stefan Wagner", "Claudia Fuchs", "Matthias Brandt"],
    "en": ["Emma Clarke", "James O'Neill", "Sarah Whitfield", "David Morgan", "Laura Bennett", "Michael Hughes",
           "Rachel Cooper", "Tom Fletcher", "Hannah Price", "Chris Doyle"],
    "fr": ["Claire Dubois", "Julien Moreau", "Élise Laurent"],
    "es": ["Lucía Fernández", "Javier Romero", "Carmen Ortega"],
    "pl": ["Agnieszka Nowak", "Piotr Wiśniewski", "Zofia Kamińska"],
    "it": ["Giulia Ricci", "Marco Bianchi", "Francesca Greco"],
    "nl": ["Sanne de Vries", "Pieter Jansen", "Femke Bakker"],
    "et": ["Kadri Tamm", "Mart Saar", "Liis Kask"],
}

# Unit key -> (sending address, display name per template language, subject per template language)
SENDERS = {
    "alumni": "alumni@mail.example.org",
    "research-news": "forskning@mail.example.org",
    "student-comms": "studentinfo@mail.example.org",
    "events": "events@mail.example.org",
}
OFFICE = {
    "sv": {"alumni": "Nordvik universitet Alumni", "research-news": "Nordvik universitet Forskningsnytt",
           "student-comms": "Nordvik universitet Studentinfo", "events": "Nordvik universitet Evenemang"},
    "nb": {"alumni": "Nordvik universitet Alumni", "research-news": "Nordvik universitet Forskningsnytt",
           "student-comms": "Nordvik universitet Studentinfo", "events": "Nordvik universitet Arrangementer"},
    "en": {"alumni": "Nordvik University Alumni", "research-news": "Nordvik University Research News",
           "student-comms": "Nordvik University Student Update", "events": "Nordvik University Events"},
}
MONTHS = {
    "sv": ["januari", "februari", "mars", "april"],
    "nb": ["januar", "februar", "mars", "april"],
    "en": ["January", "February", "March", "April"],
}
TEMPLATE_LANG = {"sv": "sv", "nb": "nb", "nn": "nb"}        # anyone else is sent English

# The mail Nordvik universitet sent, as quoted by `quoted = "@<unit>"`: written for this
# set. {first} is the recipient's first name, {month} the month, {token} a link token.
NEWSLETTERS = {
    ("sv", "alumni"): ("Alumninytt {month} 2026", """Alumninytt – {month} 2026

Hej {first}!

Det här händer i alumninätverket den här månaden:

* Alumnikväll i Uppsala med föredrag om havsforskning
* Vi söker mentorer till höstens masterstudenter
* Porträtt: Linnea Falk, biolog, om åtta år på Svalbard

Hela brevet finns på https://www.example.org/alumni/brev

Hälsningar
Alumnikontoret, Nordvik universitet

--
Du får Alumninytt eftersom du är alumn från Nordvik universitet.
Vill du inte ha fler utskick? Avregistrera dig här: https://mail.example.org/u/{token}
Nordvik universitet, Universitetsvägen 1, 452 80 Strömstad"""),
    ("sv", "research-news"): ("Forskningsnytt {month} 2026", """Forskningsnytt – {month} 2026

Nytt från forskningen vid Nordvik universitet:

* Nya rön om ålgräsängarnas roll för kustens kolinlagring
* Doktorand utvecklar sensorer som mäter isens tjocklek
* Öppen föreläsning om artificiell intelligens i vården

Läs mer: https://www.example.org/forskning/nytt

--
Du prenumererar på Forskningsnytt från Nordvik universitet.
Avsluta prenumerationen: https://mail.example.org/u/{token}
Hantera dina utskick: https://www.example.org/mina-utskick"""),
    ("sv", "student-comms"): ("Studentinfo vecka 12", """Studentinfo – vecka 12

Hej {first}!

* Tentamensanmälan för omtentorna stänger på fredag
* Biblioteket har utökade öppettider under tentaveckan
* Studenthälsan bjuder in till samtalsgrupp om stress

Alla nyheter: https://www.example.org/student

--
Du får Studentinfo eftersom du är registrerad student vid Nordvik universitet.
Avregistrera dig från utskicket: https://mail.example.org/u/{token}"""),
    ("sv", "events"): ("Inbjudan: Vårmottagning för alumner", """Inbjudan: Vårmottagning för alumner

Hej {first}!

Välkommen till vårens mottagning för alumner och vänner till universitetet.

När: torsdag 16 april 2026 kl. 17.00–19.30
Var: Aulan, Nordvik universitet, Strömstad
Program: prorektor Karl Lundin hälsar välkommen, musik och buffé.

Anmäl dig senast 2 april: https://www.example.org/evenemang/varmottagning
Vi skickar en påminnelse med sms dagen före.

--
Du får den här inbjudan eftersom du finns i Nordvik universitets evenemangsregister.
Vill du inte få fler inbjudningar? Avregistrera dig här: https://mail.example.org/u/{token}"""),
    ("nb", "alumni"): ("Alumninytt {month} 2026", """Alumninytt – {month} 2026

Hei {first}!

Dette skjer i alumninettverket denne måneden:

* Alumnikveld i Bergen med foredrag om havvind
* Vi trenger mentorer for høstens masterstudenter
* Portrett: Jon Rustad, ingeniør, om ti år i Nordsjøen

Les hele brevet på https://www.example.org/alumni/brev-nb

Hilsen
Alumnikontoret, Nordvik universitet

--
Du mottar Alumninytt fordi du er alumn fra Nordvik universitet.
Ønsker du ikke flere utsendelser? Meld deg av her: https://mail.example.org/u/{token}"""),
    ("nb", "research-news"): ("Forskningsnytt {month} 2026", """Forskningsnytt – {month} 2026

Nytt fra forskningen ved Nordvik universitet:

* Ny kunnskap om tareskogens rolle for kystens karbonlager
* Stipendiat utvikler sensorer som måler istykkelse
* Åpen forelesning om kunstig intelligens i helsetjenesten

Les mer: https://www.example.org/forskning/nytt-nb

--
Du abonnerer på Forskningsnytt fra Nordvik universitet.
Avslutt abonnementet: https://mail.example.org/u/{token}"""),
    ("nb", "student-comms"): ("Studentinfo uke 12", """Studentinfo – uke 12

Hei {first}!

* Påmeldingen til kontinuasjonseksamen stenger fredag
* Biblioteket har utvidet åpningstid i eksamensperioden
* Studenthelsa inviterer til samtalegruppe om stress

Alle nyheter: https://www.example.org/student-nb

--
Du får Studentinfo fordi du er registrert student ved Nordvik universitet.
Meld deg av utsendelsen: https://mail.example.org/u/{token}"""),
    ("nb", "events"): ("Invitasjon: Vårmottakelse for alumner", """Invitasjon: Vårmottakelse for alumner

Hei {first}!

Velkommen til vårens mottakelse for alumner og venner av universitetet.

Når: torsdag 16. april 2026 kl. 17.00–19.30
Hvor: Aulaen, Nordvik universitet, Halden
Program: prorektor Karl Lundin ønsker velkommen, musikk og buffet.

Meld deg på innen 2. april: https://www.example.org/arrangementer/varmottakelse
Vi sender en påminnelse på SMS dagen før.

--
Du får denne invitasjonen fordi du står i arrangementsregisteret til Nordvik universitet.
Vil du ikke ha flere invitasjoner? Meld deg av her: https://mail.example.org/u/{token}"""),
    ("en", "alumni"): ("Alumni News {month} 2026", """Alumni News – {month} 2026

Dear {first},

Here is what is happening in the alumni network this month:

* An alumni evening in Copenhagen with a talk on offshore wind
* We are looking for mentors for next autumn's master's students
* Profile: Dr Amira Said on eight years of Arctic fieldwork

Read the full issue at https://www.example.org/alumni/news

Best wishes,
The Alumni Office, Nordvik University

--
You receive Alumni News because you are a graduate of Nordvik University.
No longer interested? Unsubscribe here: https://mail.example.org/u/{token}
Nordvik University, Universitetsvägen 1, SE-452 80 Strömstad, Sweden"""),
    ("en", "research-news"): ("Research News {month} 2026", """Research News – {month} 2026

New from research at Nordvik University:

* Seagrass meadows store more coastal carbon than we thought
* A doctoral student builds sensors that measure sea ice thickness
* Public lecture: artificial intelligence in healthcare

Read more: https://www.example.org/research/news

--
You are subscribed to Research News from Nordvik University.
Unsubscribe: https://mail.example.org/u/{token} | Manage your subscriptions"""),
    ("en", "student-comms"): ("Student Update week 12", """Student Update – week 12

Hi {first},

* Registration for resit exams closes on Friday
* The library has extended opening hours during exam week
* Student Health invites you to a discussion group on stress

All news: https://www.example.org/student/news

--
You receive Student Update because you are a registered student at Nordvik University.
Unsubscribe from this mailing: https://mail.example.org/u/{token}"""),
    ("en", "events"): ("Invitation: Spring reception for alumni", """Invitation: Spring reception for alumni

Dear {first},

You are warmly invited to the spring reception for alumni and friends of the university.

When: Thursday 16 April 2026, 5–7.30 pm
Where: The Great Hall, Nordvik University, Strömstad
Programme: welcome by Pro-Vice-Chancellor Karl Lundin, music and a buffet.

Please register by 2 April: https://www.example.org/events/spring-reception
We will send you a text message reminder the day before.

--
You receive this invitation because you are in Nordvik University's events register.
Don't want any more invitations? Unsubscribe here: https://mail.example.org/u/{token}"""),
}

# Client-specific words in the writer's language; languages not listed use English.
SENT_FROM_IPHONE = {"sv": "Skickat från min iPhone", "nb": "Sendt fra min iPhone", "nn": "Sendt frå min iPhone",
                    "da": "Sendt fra min iPhone", "fi": "Lähetetty iPhonesta", "de": "Von meinem iPhone gesendet",
                    "en": "Sent from my iPhone", "fr": "Envoyé de mon iPhone", "es": "Enviado desde mi iPhone",
                    "pl": "Wysłane z iPhone'a", "it": "Inviato da iPhone", "nl": "Verstuurd vanaf mijn iPhone",
                    "et": "Saadetud minu iPhone'ist"}
OUTLOOK_BLOCK = {"sv": ("Från", "Skickat", "Till", "Ämne"), "nb": ("Fra", "Sendt", "Til", "Emne"),
                 "nn": ("Fra", "Sendt", "Til", "Emne"), "da": ("Fra", "Sendt", "Til", "Emne"),
                 "fi": ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"), "de": ("Von", "Gesendet", "An", "Betreff"),
                 "en": ("From", "Sent", "To", "Subject"), "fr": ("De", "Envoyé", "À", "Objet"),
                 "es": ("De", "Enviado", "Para", "Asunto"), "pl": ("Od", "Wysłane", "Do", "Temat"),
                 "it": ("Da", "Inviato", "A", "Oggetto"), "nl": ("Van", "Verzonden", "Aan", "Onderwerp"),
                 "et": ("Saatja", "Saadetud", "Adressaat", "Teema")}
FORWARD_LINE = {"sv": "---------- Vidarebefordrat meddelande ---------",
                "nb": "---------- Videresendt melding ----------", "nn": "---------- Vidaresendt melding ----------",
                "da": "---------- Videresendt besked ----------", "fi": "---------- Välitetty viesti ---------",
                "de": "---------- Weitergeleitete Nachricht ---------",
                "en": "---------- Forwarded message ---------"}
WEEKDAYS = {"sv": ["mån", "tis", "ons", "tors", "fre", "lör", "sön"],
            "nb": ["man.", "tir.", "ons.", "tor.", "fre.", "lør.", "søn."],
            "da": ["man.", "tir.", "ons.", "tor.", "fre.", "lør.", "søn."],
            "de": ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."],
            "fi": ["ma", "ti", "ke", "to", "pe", "la", "su"],
            "en": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}
SHORT_MONTHS = {"sv": ["jan.", "feb.", "mars", "apr."], "nb": ["jan.", "feb.", "mar.", "apr."],
                "da": ["jan.", "feb.", "mar.", "apr."], "de": ["Jan.", "Feb.", "März", "Apr."],
                "en": ["Jan", "Feb", "Mar", "Apr"]}


@dataclass(frozen=True)
class Entry:
    """One entry of the set: the TOML table as written, plus the file it came from."""

    data: dict[str, Any]
    source: str                    # file name relative to tests/data/replies/

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def holdout(self) -> bool:
        return self.source.startswith("holdout/")


def files(holdout: bool = False) -> list[Path]:
    """The TOML files of the dev part (or of holdout/), in FILES order; missing ones skipped."""
    folder = HOLDOUT if holdout else DATA
    return [folder / f"{name}.toml" for name in FILES if (folder / f"{name}.toml").exists()]


def load(holdout: bool = False, langs: tuple[str, ...] | None = None) -> list[Entry]:
    """Every entry of the dev part (holdout=False) or of the part kept aside (True).

    `langs` keeps only entries whose `lang` is listed. Each file is a TOML document
    with an array of tables `[[entry]]`. Raises on a file that is not valid TOML.
    """
    out: list[Entry] = []
    for path in files(holdout):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(DATA).as_posix()
        for item in data.get("entry", []):
            if langs is None or item.get("lang") in langs:
                out.append(Entry(item, rel))
    return out


def problems(entry: Entry) -> list[str]:
    """What is wrong with one entry (missing or unknown fields, invalid labels or scopes); [] if nothing."""
    found = [f"missing {k}" for k in REQUIRED if k not in entry.data]
    found += [f"unknown field {k}" for k in entry.data if k not in REQUIRED and k not in OPTIONAL]
    label = entry.get("label")
    if label not in LABELS:
        found.append(f"label {label!r}")
    if entry.get("client") not in CLIENTS:
        found.append(f"client {entry.get('client')!r}")
    if label in REQUESTS:
        for key, allowed in (("units", UNITS), ("channels", CHANNELS)):
            value = entry.get(key)
            if value == "all":
                continue
            if not isinstance(value, list) or not value or any(v not in allowed for v in value) \
                    or len(set(value)) != len(value):
                found.append(f"{key} {value!r}")
        if label == "erasure" and (entry.get("units"), entry.get("channels")) != ("all", "all"):
            found.append("an erasure request is all units and all channels")
    elif entry.get("units") not in (None, [], "all") or entry.get("channels") not in (None, []):
        found.append("units/channels given for a non-request")
    if not str(entry.get("body", "")).strip() and not str(entry.get("subject", "")).strip():
        found.append("neither body nor subject")
    quoted = entry.get("quoted")
    if isinstance(quoted, str) and quoted.startswith("@") and quoted[1:] not in UNITS:
        found.append(f"quoted {quoted!r}")
    if entry.get("forwarded") and not quoted:
        found.append("forwarded without quoted history")
    return found


# ---------------------------------------------------------------------------------------
# Building a message


def _digest(entry_id: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"{salt}|{entry_id}".encode()).digest()


def _pick(entry_id: str, salt: str, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[int.from_bytes(_digest(entry_id, salt)[:4], "big") % len(options)]


def _ascii(text: str) -> str:
    table = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss", "å": "a", "Å": "A", "'": ""})
    folded = unicodedata.normalize("NFKD", text.translate(table))
    return "".join(c for c in folded if not unicodedata.combining(c))


def sender(entry: Entry) -> tuple[str, str]:
    """(display name, address) of the entry's From: its `sender`, or one made from its id."""
    given = entry.get("sender")
    if given:
        from email.utils import parseaddr
        name, address = parseaddr(given)
        return name, address.lower()
    lang = entry["lang"]
    name = _pick(entry.id, "name", NAMES.get(lang, NAMES["en"]))
    domain = _pick(entry.id, "domain", DOMAINS.get(lang, ANY_DOMAIN))
    first, *rest = name.split()
    local = ".".join(_ascii(p).lower() for p in (first, rest[-1] if rest else ""))
    return name, f"{local.strip('.')}@{domain}"


def target(entry: Entry) -> str:
    """The address a request concerns: `address` when given, else the sender's."""
    return str(entry.get("address") or sender(entry)[1]).lower()


def _dates(entry: Entry) -> tuple[datetime, datetime]:
    """(when our mail went out, when the reply was sent): January to April 2026, Stockholm time."""
    digest = _digest(entry.id, "date")
    day = digest[0] % 110                                   # 5 Jan .. 24 Apr
    sent = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=1))) + timedelta(days=day)
    sent += timedelta(minutes=5 * (digest[1] % 4))
    delay = timedelta(minutes=3 + digest[2] * 7 + digest[3] % 60, seconds=digest[4] % 60)
    return sent, sent + delay


def _ids(entry: Entry, domain: str) -> tuple[str, str]:
    """(our Message-ID, the reply's Message-ID) for the entry."""
    digest = _digest(entry.id, "mid").hex()
    sent, _ = _dates(entry)
    ours = f"<{sent:%Y%m%d%H%M%S}.{digest[:16]}@mail.example.org>"
    client = entry["client"]
    if client == "gmail":
        own = f"<CA{base64.b32encode(bytes.fromhex(digest[16:46])).decode().rstrip('=')}@mail.gmail.example>"
    elif client == "outlook":
        own = f"<AM0PR05MB{digest[16:48].upper()}@AM0PR05MB{digest[48:52].upper()}.eurprd05.prod.outlook.example>"
    elif client == "iphone":
        d = digest[16:48].upper()
        own = f"<{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}@{domain}>"
    else:
        own = f"<{digest[16:40]}@{domain}>"
    return ours, own


def _fill(text: str, entry: Entry) -> str:
    name, address = sender(entry)
    first = name.split()[0] if name else ""
    return (text.replace("{name}", name).replace("{first}", first).replace("{address}", address)
            .replace("{target}", target(entry)))


def _original(entry: Entry) -> tuple[str, str, str, str] | None:
    """(from name, from address, subject, text) of the quoted history, or None."""
    quoted = entry.get("quoted")
    if not quoted:
        return None
    name, _address = sender(entry)
    sent, _ = _dates(entry)
    if isinstance(quoted, str) and quoted.startswith("@"):
        unit = quoted[1:]
        tlang = TEMPLATE_LANG.get(entry["lang"], "en")
        subject, text = NEWSLETTERS[(tlang, unit)]
        month = MONTHS[tlang][min(sent.month - 1, 3)]
        token = base64.urlsafe_b64encode(_digest(entry.id, "token")[:12]).decode()
        first = (name.split() or [""])[0]
        fill = {"first": first, "month": month, "token": token}
        return OFFICE[tlang][unit], SENDERS[unit], subject.format(**fill), text.format(**fill)
    office = "Nordvik universitet" if entry["lang"] in ("sv", "nb", "nn", "da") else "Nordvik University"
    return office, "reply@mail.example.org", _fill(str(entry["subject"]), entry), _fill(str(quoted), entry)


def _attribution(entry: Entry, name: str, address: str, when: datetime) -> str:
    lang = entry["lang"] if entry["lang"] in WEEKDAYS or entry["lang"] == "nn" else "en"
    lang = "nb" if lang == "nn" else lang
    wd = WEEKDAYS[lang][when.weekday()]
    hm = f"{when:%H:%M}"
    if entry["client"] == "iphone":
        month = SHORT_MONTHS.get(lang, SHORT_MONTHS["en"])[when.month - 1]
        return {"sv": f"{when.day} {month} {when.year} kl. {hm} skrev {name} <{address}>:",
                "nb": f"{when.day}. {month} {when.year} kl. {hm} skrev {name} <{address}>:",
                "da": f"{when.day}. {month} {when.year} kl. {when:%H.%M} skrev {name} <{address}>:",
                "de": f"Am {when.day:02d}.{when.month:02d}.{when.year} um {hm} schrieb {name} <{address}>:",
                "fi": f"{when.day}.{when.month}.{when.year} kello {when.hour}.{when:%M} {name} <{address}> kirjoitti:",
                }.get(lang, f"On {when.day} {month} {when.year}, at {hm}, {name} <{address}> wrote:")
    if entry["client"] == "plain":
        return {"sv": f"Den {when:%Y-%m-%d} kl. {hm}, skrev {name}:",
                "nb": f"Den {when:%d.%m.%Y} {hm}, skrev {name}:",
                "da": f"Den {when:%d.%m.%Y} kl. {hm} skrev {name}:",
                "de": f"Am {when:%d.%m.%y} um {hm} schrieb {name}:",
                "fi": f"{name} kirjoitti {when.day}.{when.month}.{when.year} klo {when.hour}.{when:%M}:",
                }.get(lang, f"On {when:%d/%m/%Y} {hm}, {name} wrote:")
    month = SHORT_MONTHS.get(lang, SHORT_MONTHS["en"])[when.month - 1]
    line = {"sv": f"Den {wd} {when.day} {month} {when.year} kl {hm} skrev {name} <{address}>:",
            "nb": f"{wd} {when.day}. {month} {when.year} kl. {hm} skrev {name} <{address}>:",
            "da": f"Den {wd} {when.day}. {month} {when.year} kl. {when:%H.%M} skrev {name} <{address}>:",
            "de": f"Am {wd}, {when.day}. {month} {when.year} um {hm} Uhr schrieb {name} <{address}>:",
            "fi": f"{wd} {when.day}.{when.month}.{when.year} klo {when.hour}.{when:%M} {name} ({address}) kirjoitti:",
            }.get(lang, f"On {wd}, {when.day} {month} {when.year} at {hm}, {name} <{address}> wrote:")
    if len(line) > 76 and "<" in line:                      # Gmail breaks the line before the address
        head, _, tail = line.partition("<")
        line = head + "<\n" + tail
    return line


def _history(entry: Entry, to_name: str) -> tuple[str, list[str]]:
    """(plain text of the history as the client writes it, its lines for HTML quoting)."""
    original = _original(entry)
    if original is None:
        return "", []
    name, address, subject, text = original
    sent, _ = _dates(entry)
    lang = entry["lang"]
    client = entry["client"]
    to = f"{to_name} <{target(entry)}>" if to_name else target(entry)
    if entry.get("forwarded"):
        if client == "outlook":
            labels = OUTLOOK_BLOCK.get(lang, OUTLOOK_BLOCK["en"])
            head = (f"________________________________\n{labels[0]}: {name} <{address}>\n"
                    f"{labels[1]}: {format_datetime(sent)}\n{labels[2]}: {to}\n{labels[3]}: {subject}\n\n")
        elif client == "iphone":
            head = ("Begin forwarded message:\n\n" if lang not in ("sv", "nb", "nn", "da", "de") else
                    {"sv": "Vidarebefordrat brev:\n\n", "nb": "Videresendt melding:\n\n",
                     "nn": "Vidaresendt melding:\n\n", "da": "Videresendt besked:\n\n",
                     "de": "Anfang der weitergeleiteten Nachricht:\n\n"}[lang])
            head += f"> From: {name} <{address}>\n> Date: {format_datetime(sent)}\n> To: {to}\n> Subject: {subject}\n>\n"
            return head + "\n".join(f"> {line}".rstrip() for line in text.split("\n")), []
        else:
            head = (f"{FORWARD_LINE.get(lang, FORWARD_LINE['en'])}\nFrom: {name} <{address}>\n"
                    f"Date: {format_datetime(sent)}\nSubject: {subject}\nTo: {to}\n\n")
        return head + text, []
    if client == "outlook":
        labels = OUTLOOK_BLOCK.get(lang, OUTLOOK_BLOCK["en"])
        head = (f"________________________________\n{labels[0]}: {name} <{address}>\n"
                f"{labels[1]}: {sent:%d.%m.%Y %H:%M}\n{labels[2]}: {to}\n{labels[3]}: {subject}\n\n")
        return head + text, []
    attribution = _attribution(entry, name, address, sent)
    lines = text.split("\n")
    if client == "iphone":
        body = f"> {attribution}\n>\n" + "\n".join(f"> {line}".rstrip() for line in lines)
        return body, []
    quoted = "\n".join(f"> {line}".rstrip() for line in lines)
    return f"{attribution}\n\n{quoted}", [attribution, *lines]


def plain_text(entry: Entry) -> str:
    """The text/plain body of the message built from `entry` (LF line endings)."""
    name, _address = sender(entry)
    client = entry["client"]
    parts = [_fill(str(entry["body"]).strip("\n"), entry)]
    signature = entry.get("signature")
    if signature:
        sig = _fill(str(signature).strip("\n"), entry)
        parts.append(("-- \n" + sig) if client == "plain" else sig)
    if client == "iphone":
        parts.append(SENT_FROM_IPHONE.get(entry["lang"], SENT_FROM_IPHONE["en"]))
    history, _ = _history(entry, name)
    if history:
        parts.append(history)
    return "\n\n".join(p for p in parts if p) + "\n"


def _html(entry: Entry) -> str:
    """The text/html alternative: the same text, the history in a blockquote (gmail) or under an <hr> (outlook)."""
    name, _address = sender(entry)
    own = [_fill(str(entry["body"]).strip("\n"), entry)]
    if entry.get("signature"):
        own.append(_fill(str(entry["signature"]).strip("\n"), entry))

    def paras(text: str) -> str:
        return "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>' + chr(10))}</p>"
                         for p in text.split("\n\n") if p.strip())

    out = [f'<html lang="{entry["lang"]}"><head><meta http-equiv="Content-Type" '
           'content="text/html; charset=utf-8"></head>', "<body>", *(paras(t) for t in own if t)]
    history, lines = _history(entry, name)
    if history and lines and not entry.get("forwarded") and entry["client"] == "gmail":
        attribution, *rest = lines
        out.append(f'<div class="gmail_quote"><div class="gmail_attr">{html.escape(attribution)}</div>')
        out.append('<blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px #ccc solid;'
                   'padding-left:1ex">')
        out.append(paras("\n".join(rest)))
        out.append("</blockquote></div>")
    elif history:
        out.append('<div id="appendonsend"></div><hr style="display:inline-block;width:98%">')
        out.append(paras(history))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _encode(text: str, cte: str) -> str:
    data = text.encode("utf-8")
    if cte == "base64":
        return base64.encodebytes(data).decode("ascii")
    if cte == "quoted-printable":
        return quopri.encodestring(data).decode("ascii")
    return text


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def build(entry: Entry) -> bytes:
    """The raw message a mail client would send for `entry` (RFC 5322, MIME per RFC 2045-2049).

    Deterministic: the same entry gives the same bytes. About one message in eight
    uses bare LF line endings (as some gateways deliver), the rest CRLF.
    """
    name, address = sender(entry)
    domain = address.rpartition("@")[2]
    client = entry["client"]
    _sent, replied = _dates(entry)
    ours, own = _ids(entry, domain)
    subject = _fill(str(entry["subject"]), entry)
    headers: list[tuple[str, str]] = [
        ("Return-Path", f"<{address}>"),
        ("Delivered-To", REPLY_ADDRESS),
        ("Received", f"from smtp.{domain} (smtp.{domain} [198.51.100.{_digest(entry.id, 'ip')[0] % 250 + 1}])\n"
                     f"\tby mx1.mail.example.org (Postfix) with ESMTPS id {_digest(entry.id, 'q').hex()[:10].upper()}\n"
                     f"\tfor <{REPLY_ADDRESS}>; {format_datetime(replied + timedelta(seconds=9))}"),
    ]
    auth = entry.get("auth", "pass")
    if auth != "none":
        verdict = "pass" if auth == "pass" else "fail"
        headers.append(("Authentication-Results", f"mx1.mail.example.org;\n\tdkim={verdict} header.d={domain};\n"
                                                  f"\tspf={verdict} smtp.mailfrom={domain};\n"
                                                  f"\tdmarc={verdict} header.from={domain}"))
    headers += [
        ("From", formataddr((name, address), charset="utf-8") if name else address),
        ("To", REPLY_ADDRESS),
        ("Subject", _header(subject)),
        ("Date", format_datetime(replied)),
        ("Message-ID", own),
    ]
    if not entry.get("fresh"):
        headers += [("In-Reply-To", ours), ("References", ours)]
    if client == "iphone":
        headers.append(("X-Mailer", "iPhone Mail (22D82)"))
    elif client == "plain":
        headers.append(("User-Agent", "Mozilla Thunderbird"))
    elif client == "outlook":
        headers.append(("Content-Language", {"sv": "sv-SE", "nb": "nb-NO", "nn": "nn-NO", "da": "da-DK",
                                             "fi": "fi-FI", "de": "de-DE"}.get(entry["lang"], "en-US")))
    for key, value in (entry.get("headers") or {}).items():
        headers.append((str(key), str(value)))
    headers.append(("MIME-Version", "1.0"))
    text = plain_text(entry)
    if client in ("gmail", "outlook"):
        cte = "base64" if client == "outlook" else "quoted-printable"
        boundary = ("_000_" if client == "outlook" else "0000000000") + _digest(entry.id, "b").hex()[:24]
        headers.append(("Content-Type", f'multipart/alternative;\n\tboundary="{boundary}"'))
        body = (f"--{boundary}\nContent-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: {cte}\n\n"
                f"{_encode(text, cte).rstrip()}\n"
                f"--{boundary}\nContent-Type: text/html; charset=\"utf-8\"\nContent-Transfer-Encoding: {cte}\n\n"
                f"{_encode(_html(entry), cte).rstrip()}\n--{boundary}--\n")
    else:
        cte = "quoted-printable" if client == "iphone" else "8bit"
        headers.append(("Content-Type", "text/plain; charset=utf-8" + ("; format=flowed" if client == "plain" else "")))
        headers.append(("Content-Transfer-Encoding", cte))
        body = _encode(text, cte)
    raw = "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + body
    newline = "\n" if _digest(entry.id, "eol")[0] % 8 == 0 else "\r\n"
    return raw.replace("\r\n", "\n").replace("\n", newline).encode("utf-8")


def expected(entry: Entry) -> dict[str, Any]:
    """The entry's label in the shape of ../shared/corpus/mail/labels.jsonl (bench/reply_accuracy.py).

    optout and erasure give kind "optout" (an erasure with scope all units, all
    channels, as the corpus labels "remove me from all registers"); optin gives kind
    "reply" (the corpus labels a re-subscribe request so: no opt-out may follow), with
    what is asked for under "optin"; reply and autoreply keep their names. `address`
    is the address to act on for an opt-out, else the sender. The entry's own label
    is kept as `label`.
    """
    label = entry["label"]
    kind = {"optout": "optout", "erasure": "optout", "optin": "reply"}.get(label, label)
    scope = None
    if label in ("optout", "erasure"):
        scope = {"units": entry["units"], "channels": entry["channels"]}
    out: dict[str, Any] = {
        "file": entry.id, "kind": kind, "address": target(entry) if kind == "optout" else sender(entry)[1],
        "hard": None, "status": None, "scope": scope, "lang": entry["lang"], "note": entry["note"], "label": label,
    }
    if label == "optin":
        out["optin"] = {"units": entry["units"], "channels": entry["channels"]}
    return out


def new_text(entry: Entry) -> str:
    """The text the sender wrote (subject when not a reply prefix, then the body), for language measures."""
    return _fill(str(entry["body"]), entry)
