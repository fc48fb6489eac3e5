"""The reply reader's rules (issue 21), one test per rule, on sentences written here.

None of these texts is from the development set (tests/data/replies) or the shared
corpus: each tests a rule (lemma rules, negation scope, channel verbs, enumerated
channels, informal unit names with exceptions, erasure, no silent drops), not an
example. The property tests at the end state two rules in general form.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import Kind
from handlers.replies.intent import _match_rule, _negated_before, read_intent
from handlers.replies.phrases import LEMMA_LISTS, LemmaRule, languages, lemma_rules, lemma_table
from tests.support.reply_samples import decide, mail, scope

QUOTE_EN = ("\n\nOn Mon, 2 Feb 2026 at 10:00, Nordvik University <alumni@mail.example.org> wrote:\n"
            "> Alumni News, February\n> To unsubscribe click here: https://mail.example.org/u/x\n")
QUOTE_SV = ("\n\nDen mån 2 feb. 2026 kl 10:00 skrev Nordvik universitet <alumni@mail.example.org>:\n"
            "> Alumninytt februari\n> Avregistrera dig här: https://mail.example.org/u/x\n")
SENDER = "anna.berg@example.se"


def acted(body: str, subject: str = "Re: Alumninytt") -> tuple[object, object]:
    decision = decide(mail(body, subject=subject))
    assert decision.kind is Kind.OPTOUT and not decision.review, decision.reason
    assert decision.actions[0].address == SENDER
    return scope(decision)


# --- lemma rules: one dictionary word covers its inflections and word order -------------

def test_rule_tokens_match_in_order_with_gaps() -> None:
    rule = LemmaRule("slippa *samtal", (("slippa",), ("*samtal",)))
    words = "jag skulle vilja slippa alla era samtal".split()
    assert _match_rule(rule, words, words) == 3
    assert _match_rule(rule, list(reversed(words)), list(reversed(words))) is None
    far = "slippa a b c d samtal".split()          # more than LEMMA_GAP words apart
    assert _match_rule(rule, far, far) is None


def test_every_lemma_rule_parses_and_every_table_lemma_is_a_rule_word() -> None:
    for name in LEMMA_LISTS:
        for lang, rule in lemma_rules(name):
            assert rule.tokens and all(rule.tokens), (lang, rule.source)
    for lang in languages():
        words = {a for name in LEMMA_LISTS for _l, rule in lemma_rules(name, lang) for token in rule.tokens
                 for a in token}
        assert set(lemma_table(lang).values()) <= words, lang


def test_lemma_table_was_built_for_the_current_rules() -> None:
    import json
    from importlib import resources

    from bench.lemma_table import rule_words

    data = json.loads(resources.files("handlers").joinpath("data/phrases/_lemmas.json").read_text("utf-8"))
    current = {lang: sorted(words) for lang, words in rule_words().items()}
    assert data["_words"] == current, "a lemma rule changed: run .venv/bin/python -m bench.lemma_table"


def test_lemma_table_holds_inflected_forms() -> None:
    # bench/lemma_table.py reads them out of simplemma's dictionaries.
    assert lemma_table("sv").get("slipper") == "slippa"
    assert lemma_table("da").get("frabeder") == "frabede"
    assert lemma_table("de").get("widerspreche") == "widersprechen"


@pytest.mark.parametrize("body,channels", [
    ("Jag slipper gärna era telefonsamtal i fortsättningen.", ("phone",)),          # sv: slippa + channel
    ("Ni behöver inte ringa mig mer om insamlingen.", ("phone",)),                  # sv: need not + verb
    ("De kan slutte å ringe meg, takk.", ("phone",)),                              # nb
    ("Ring mig venligst ikke op igen om donationer.", ("phone",)),                 # da
    ("Lopettakaa soittaminen minulle, kiitos.", ("phone",)),                       # fi
    ("Bitte nehmen Sie mich aus dem Verteiler für Rundschreiben.", ("email",)),    # de: list idiom
    ("Ich möchte weder Briefe noch SMS von Ihnen.", ("sms", "letter")),           # de: enumerated
    ("Please stop the text messages and the phone calls.", ("sms", "phone")),     # en
])
def test_channel_verbs_and_enumerations(body: str, channels: tuple[str, ...]) -> None:
    assert acted(body) == ("all", channels)


@pytest.mark.parametrize("body", [
    "Jag reserverar mig inte, men jag motsätter mig all direktreklam från er.",   # sv objection
    "Jeg reserverer meg herved mot all kontakt fra universitetet.",               # nb
    "Jeg frabeder mig al kontakt fra jeres side.",                                # da
    "Ich widerspreche der Nutzung meiner Kontaktdaten für Ihre Werbung.",          # de
    "I withdraw my consent to hearing from you.",                                 # en
])
def test_objection_to_all_contact_is_every_channel(body: str) -> None:
    assert acted(body) == ("all", "all")


# --- erasure: no contact on any channel, and marked for the rights process --------------

@pytest.mark.parametrize("body", [
    "Stryk mig helt ur ert register, tack.",
    "Slett meg fra registeret deres.",
    "Please erase me from your records entirely.",
    "Löschen Sie mich bitte aus Ihrer Datenbank.",
    "Under GDPR Art. 17 I ask you to erase my personal data, including anything the Alumni office holds.",
])
def test_erasure_is_all_units_all_channels_and_marked(body: str) -> None:
    decision = decide(mail(body))
    assert decision.kind is Kind.OPTOUT and not decision.review, decision.reason
    assert scope(decision) == ("all", "all")
    assert decision.evidence.get("erasure") is True
    assert decision.evidence["rights_request"]["type"] == "erasure"


def test_an_ordinary_optout_carries_no_erasure_marker() -> None:
    decision = decide(mail("Please unsubscribe me from the newsletter."))
    assert "erasure" not in decision.evidence


# --- negation has a scope ----------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "I really don't want to unsubscribe, I just moved house.",
    "Please never stop sending the research newsletter!",
    "Ikke slutt å sende meg nyhetsbrevet, det er flott.",
    "Sluta aldrig skicka Forskningsnytt – jag läser varje nummer.",
    "Hören Sie bitte nie auf, mir den Newsletter zu schicken.",
])
def test_a_negated_request_is_no_request(body: str) -> None:
    decision = decide(mail(body + QUOTE_EN))
    assert decision.kind is Kind.REPLY and decision.actions == (), decision.reason


def test_negation_scope_stops_at_a_clause_boundary() -> None:
    sentence = "I am not a student any more, please unsubscribe me"
    assert not _negated_before(sentence, sentence.index("unsubscribe"))
    assert acted(sentence + ".") == ("all", ("email",))


def test_past_tense_is_no_request() -> None:
    decision = decide(mail("Jeg afmeldte nyhedsbrevet i fjor, men jeg vil gerne modtage det igen."))
    assert decision.actions == () and decision.review, decision.reason


# --- units named informally, with exceptions --------------------------------------------

@pytest.mark.parametrize("body,units", [
    ("Studentmejlen behöver jag inte längre, tack.", ("student-comms",)),
    ("Forskningsnyhetene kan dere slutte å sende.", ("research-news",)),
    ("Please stop the event invitations, I live abroad now.", ("events",)),
    ("Unsubscribe me from everything but Research News.", ("alumni", "events", "student-comms")),
    ("Meld meg av alt annet enn Alumninytt.", ("events", "research-news", "student-comms")),
])
def test_informal_units_and_exceptions(body: str, units: tuple[str, ...]) -> None:
    assert acted(body)[0] == units


@pytest.mark.parametrize("body", ["Inga mejl, sms eller brev från er i fortsättningen.",
                                  "Ikke send meg e-post, SMS eller brev lenger.",
                                  "Ei sähköposteja, tekstiviestejä eikä kirjeitä enää.",
                                  "Keine E-Mails, keine SMS und keine Briefe mehr."])
def test_enumerated_channels(body: str) -> None:
    assert acted(body) == ("all", ("email", "sms", "letter"))


@pytest.mark.parametrize("body", ["Perukaa kaikki paitsi tapahtumakutsut.", "Afmeld mig alt undtagen invitationerne.",
                                  "Bitte melden Sie mich von allem ab außer den Veranstaltungseinladungen."])
def test_everything_except_a_unit(body: str) -> None:
    assert acted(body)[0] == ("alumni", "research-news", "student-comms")


def test_a_unit_the_sender_keeps_is_not_opted_out() -> None:
    units, _channels = acted("Sluta skicka alumnibrevet, men fortsätt gärna med Forskningsnytt.")
    assert units == ("alumni",)


def test_what_still_arrives_is_a_reason_not_the_scope() -> None:
    # The request names no channel; "I still get your post" only says why.
    assert acted("Bitte melden Sie mich endlich ab, ich bekomme immer noch Post von Ihnen.") == ("all", ("email",))


def test_printed_edition_is_the_letter_channel() -> None:
    assert acted("Please cancel the printed copy of Alumni News.") == (("alumni",), ("letter",))


# --- no silent drops ----------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "Bonjour, je souhaite me désinscrire de votre liste de diffusion, merci.",
    "Hola, por favor quiero darme de baja de sus correos.",
    "Dzień dobry, proszę mnie wypisać z listy mailingowej.",
    "Buongiorno, vorrei cancellarmi dalla vostra newsletter.",
    "Graag wil ik geen e-mails meer ontvangen.",
    "Palun eemaldage mind nimekirjast.",
    "Prosím, odhlaste mě z odběru.",
])
def test_a_request_in_a_language_not_read_goes_to_review_with_the_reason(body: str) -> None:
    decision = decide(mail(body + QUOTE_EN))
    assert decision.review and decision.actions == (), decision.reason
    assert "does not read" in decision.reason


@pytest.mark.parametrize("body", [
    "Thanks, see you there!",
    "Merci beaucoup, à bientôt à Nordvik.",
    "Takk for sist, vi ses på treffet.",
    "Grazie mille per l'invito, ci sarò.",
])
def test_an_ordinary_reply_is_not_queued(body: str) -> None:
    decision = decide(mail(body + QUOTE_EN))
    assert decision.kind is Kind.REPLY and not decision.review and decision.actions == (), decision.reason


@pytest.mark.parametrize("body", [
    "Jag behöver inte mejla er igen om detta, allt är löst.",       # "I needn't", not "you needn't"
    "Jeg har ikke brug for hjælp længere, tak.",
    "En enää tarvitse apua, kiitos.",
    "Ich brauche keine Hilfe mehr, danke.",
    "I'll stop reading the newsletter on the train, too distracting!",
    "Jeg ville ikke gå glipp av nyhetsbrevet for noe.",
    "Mejlet vill jag inte missa!",
    "Ich trage die Zeitung jeden Morgen aus.",
    "Please cancel my seat at the dinner, I am ill.",
    "Fjern gjerne bildet av meg fra nettsiden.",
])
def test_rule_words_in_ordinary_sentences_are_not_acted_on(body: str) -> None:
    decision = decide(mail(body + QUOTE_EN))
    assert decision.kind is Kind.REPLY and decision.actions == (), decision.reason


def test_request_words_not_read_with_confidence_go_to_review() -> None:
    decision = decide(mail("Jeg har prøvd å melde meg av flere ganger uten hell."))
    assert decision.review and decision.actions == (), decision.reason
    assert "request" in decision.reason


def test_a_forward_with_no_request_is_ordinary_and_with_one_goes_to_review() -> None:
    quoted = "\n\n---------- Forwarded message ---------\nFrom: Nordvik University <alumni@mail.example.org>\n" \
             "Subject: Alumni News\n\nAlumni News, February\n"
    plain = decide(mail("Look at the second item, Per!" + quoted, subject="Fwd: Alumni News"))
    assert plain.kind is Kind.REPLY and not plain.review, plain.reason
    asking = decide(mail("Please unsubscribe my old work address." + quoted, subject="Fwd: Alumni News"))
    assert asking.review, asking.reason


def test_spam_instruction_to_reply_stop_is_no_request() -> None:
    body = "Congratulations, you won a voucher! Claim it at http://win.example/now\nReply STOP to opt out."
    decision = decide(mail(body, subject="You are a winner", sender="Prizes <win@prizes.example>"),
                      mail_from="win@prizes.example")
    assert decision.actions == (), decision.reason


@pytest.mark.parametrize("body", ["avregistrea mig tack", "Unsubsribe me please", "Abmelen bitte", "afmled mig"])
def test_typos_of_the_request_word_are_read(body: str) -> None:
    assert acted(body)[1] == ("email",)


@pytest.mark.parametrize("body", ["Nej tack, inget mer sånt.", "Nei takk, ikke mer slikt.",
                                  "Nein danke, nichts mehr davon.", "No thanks, no more of these.",
                                  "Ei kiitos, ei enää.", "Nok nå. Slutt."])
def test_terse_refusals_are_requests(body: str) -> None:
    assert acted(body) == ("all", ("email",))


@pytest.mark.parametrize("subject", ["Tilauksen peruminen", "Abmeldung", "Opsigelse af nyhedsbrev", "Stopp"])
def test_a_request_only_in_the_subject(subject: str) -> None:
    assert acted("", subject=subject) == ("all", ("email",))


@pytest.mark.parametrize("body", ["Jeg ber om å bli fjernet fra alle e-postlister.",
                                  "Toivon, että minut poistetaan kaikilta postituslistoilta.",
                                  "Ich bitte darum, aus allen Verteilern gestrichen zu werden.",
                                  "Undertecknad önskar avregistreras från samtliga utskick."])
def test_formal_passives(body: str) -> None:
    assert acted(body) == ("all", ("email",))


def test_text_alone_is_sms() -> None:
    assert acted("Do not text me again please.") == ("all", ("sms",))


# --- auto-replies by their text, and people who mention being away ----------------------

@pytest.mark.parametrize("body", [
    "Takk for e-posten. Dette er et automatisk svar, og saken din er registrert.",
    "Vielen Dank. Diese Nachricht wurde automatisch erzeugt, bitte antworten Sie nicht.",
])
def test_auto_reply_recognised_by_its_text(body: str) -> None:
    assert decide(mail(body)).kind is Kind.AUTOREPLY


def test_a_person_mentioning_leave_is_not_an_auto_reply() -> None:
    decision = decide(mail("I'm on study leave until June, but I'd love to join the alumni dinner." + QUOTE_EN))
    assert decision.kind is Kind.REPLY


# --- properties -----------------------------------------------------------------------------

REQUESTS = ["unsubscribe me", "stop sending me emails", "remove me from your list", "opt me out of the newsletter"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REQUESTS), st.sampled_from(["I don't want to", "Never", "Please never", "I do not wish to"]),
       st.sampled_from(["", " today", " now"]))
def test_property_a_negated_request_is_never_acted_on(request: str, negation: str, tail: str) -> None:
    decision = decide(mail(f"{negation} {request}{tail}." + QUOTE_EN))
    assert not [a for a in decision.actions if not decision.review], decision.reason


BODIES = ["Avregistrera mig från Forskningsnytt.", "Tack för brevet, vi ses!", "Inga fler sms, tack.",
          "Jag vill inte ha alumnibrevet längre.", "Radera mina uppgifter.", "Kommer ni att sända föredraget?",
          "Please stop calling me.", "Thanks, see you there!"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BODIES), st.sampled_from([QUOTE_SV, QUOTE_EN, QUOTE_SV + QUOTE_EN]))
def test_property_a_quoted_newsletter_below_never_changes_the_decision(body: str, quote: str) -> None:
    alone, quoted = decide(mail(body)), decide(mail(body + quote))
    assert (alone.kind, alone.review, [a.to_json() for a in alone.actions]) == \
        (quoted.kind, quoted.review, [a.to_json() for a in quoted.actions])


def test_intent_reports_request_cues_for_review() -> None:
    intent = read_intent(["Jeg har prøvd å melde meg av flere ganger uten hell."], {})
    assert not intent.optout and intent.cues
