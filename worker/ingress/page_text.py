"""The words of the /u/{token} pages in Swedish, Norwegian bokmål and English."""

from __future__ import annotations

LANGUAGES = ("sv", "nb", "en")
LANGUAGE_NAMES = {"sv": "Svenska", "nb": "Norsk (bokmål)", "en": "English"}
DEFAULT_LANGUAGE = "sv"
# Accept-Language tags that mean one of our languages (Norwegian without a variant reads bokmål).
ALIASES = {"sv": "sv", "nb": "nb", "no": "nb", "nn": "nb", "en": "en"}

TEXT: dict[str, dict[str, str]] = {
    "sv": {
        "title": "Dina utskick",
        "intro": "Välj vad {org} får skicka till {address}. Ibockad ruta betyder att du vill få det.",
        "preselected": "Vi har redan tagit bort bocken för {unit}. Tryck på Spara för att bekräfta.",
        "saved": "Dina val är sparade.",
        "stop_all": "Stoppa all kontakt från {org}",
        "stop_all_help": "Ingen e-post, sms, telefon, brev eller webbgrupp från någon del av organisationen.",
        "not_on": "Du finns inte med i utskicken från: {units}. Därifrån får du ingenting.",
        "stop_all_on": "All kontakt är stoppad: du får ingenting från oss. Valen nedan gäller när du tar bort bocken.",
        "save": "Spara",
        "all_units": "hela organisationen",
        "channel.email": "E-post", "channel.sms": "Sms", "channel.phone": "Telefon",
        "channel.letter": "Brev", "channel.web": "Webbgrupper",
        "dpo": "Frågor om dina personuppgifter: kontakta dataskyddsombudet, {dpo}.",
        "language": "Språk",
        "invalid_title": "Länken fungerar inte",
        "invalid": "Länken är ogiltig eller ofullständig. Kopiera hela länken från meddelandet, "
                   "eller skriv till {dpo}.",
        "expired_title": "Formuläret är för gammalt",
        "expired": "Inget har ändrats. Öppna sidan igen och spara på nytt.",
        "cross_site_title": "Formuläret skickades från en annan webbplats",
        "cross_site": "Inget har ändrats: dina val kan bara sparas från vår egen sida. Öppna sidan igen och spara där.",
        "used_title": "Formuläret är redan sparat",
        "used": "Det här formuläret har redan använts, så inget ändrades nu. Öppna sidan igen för att göra en ny ändring.",
        "again": "Öppna sidan igen",
        "done_title": "Du är avregistrerad",
        "done": "Du får inte längre dessa utskick.",
    },
    "nb": {
        "title": "Dine utsendelser",
        "intro": "Velg hva {org} kan sende til {address}. Avkrysset boks betyr at du vil motta det.",
        "preselected": "Vi har allerede fjernet krysset for {unit}. Trykk Lagre for å bekrefte.",
        "saved": "Valgene dine er lagret.",
        "stop_all": "Stopp all kontakt fra {org}",
        "stop_all_help": "Ingen e-post, SMS, telefon, brev eller nettgruppe fra noen del av organisasjonen.",
        "not_on": "Du står ikke på utsendelseslistene til: {units}. Derfra får du ingenting.",
        "stop_all_on": "All kontakt er stoppet: du får ingenting fra oss. Valgene nedenfor gjelder når du fjerner krysset.",
        "save": "Lagre",
        "all_units": "hele organisasjonen",
        "channel.email": "E-post", "channel.sms": "SMS", "channel.phone": "Telefon",
        "channel.letter": "Brev", "channel.web": "Nettgrupper",
        "dpo": "Spørsmål om personopplysningene dine: kontakt personvernombudet, {dpo}.",
        "language": "Språk",
        "invalid_title": "Lenken virker ikke",
        "invalid": "Lenken er ugyldig eller ufullstendig. Kopier hele lenken fra meldingen, "
                   "eller skriv til {dpo}.",
        "expired_title": "Skjemaet er for gammelt",
        "expired": "Ingenting er endret. Åpne siden igjen og lagre på nytt.",
        "cross_site_title": "Skjemaet ble sendt fra et annet nettsted",
        "cross_site": "Ingenting er endret: valgene dine kan bare lagres fra vår egen side. Åpne siden igjen og lagre der.",
        "used_title": "Skjemaet er allerede lagret",
        "used": "Dette skjemaet er allerede brukt, så ingenting ble endret nå. Åpne siden igjen for å gjøre en ny endring.",
        "again": "Åpne siden igjen",
        "done_title": "Du er avmeldt",
        "done": "Du får ikke lenger disse utsendelsene.",
    },
    "en": {
        "title": "Your mailings",
        "intro": "Choose what {org} may send to {address}. A ticked box means you want to receive it.",
        "preselected": "We have already unticked {unit} for you. Press Save to confirm.",
        "saved": "Your choices are saved.",
        "stop_all": "Stop all contact from {org}",
        "stop_all_help": "No email, text messages, phone calls, letters or web groups from any part of the organisation.",
        "not_on": "You are not on the mailing lists of: {units}. You get nothing from them.",
        "stop_all_on": "All contact is stopped: you get nothing from us. The choices below apply once you untick it.",
        "save": "Save",
        "all_units": "the whole organisation",
        "channel.email": "Email", "channel.sms": "Text messages", "channel.phone": "Phone",
        "channel.letter": "Letters", "channel.web": "Web groups",
        "dpo": "Questions about your personal data: contact the data protection officer, {dpo}.",
        "language": "Language",
        "invalid_title": "This link does not work",
        "invalid": "The link is not valid or is incomplete. Copy the whole link from the message, "
                   "or write to {dpo}.",
        "expired_title": "This form is too old",
        "expired": "Nothing was changed. Open the page again and save once more.",
        "cross_site_title": "This form was sent from another website",
        "cross_site": "Nothing was changed: your choices can only be saved from our own page. Open the page again and save there.",
        "used_title": "This form was already saved",
        "used": "This form has been used once already, so nothing was changed now. Open the page again to make another change.",
        "again": "Open the page again",
        "done_title": "You are unsubscribed",
        "done": "You will no longer receive these mailings.",
    },
}


def choose_language(query_lang: str | None, accept_language: str | None) -> str:
    """?lang= if it is one of ours, else the best of Accept-Language (RFC 9110 section 12.5.4), else sv."""
    if query_lang in LANGUAGES:
        return query_lang
    best: tuple[float, int, str] | None = None
    for i, part in enumerate((accept_language or "").split(",")[:30]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        lang = ALIASES.get(tag.strip().lower().split("-")[0])
        if lang and q > 0 and (best is None or (q, -i) > (best[0], best[1])):
            best = (q, -i, lang)
    return best[2] if best else DEFAULT_LANGUAGE
