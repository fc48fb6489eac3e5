"""config.load: defaults, environment over file, and errors that name the setting."""

from pathlib import Path

import pytest

import config
from tests.conftest import EXAMPLE_TOML


def test_defaults_are_the_documented_ones():
    s = config.load({})
    assert s.database_url == "sqlite+aiosqlite:///./unsubd.db"
    assert (s.smtp_host, s.smtp_port) == ("127.0.0.1", 2525)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8025)
    assert s.amqp_url is None and s.embedded_queue
    assert s.smtp.max_message_size == 10 * 1024 * 1024


def test_settings_are_frozen():
    s = config.load({})
    with pytest.raises(Exception):
        s.smtp_port = 1                                       # type: ignore[misc]
    with pytest.raises(Exception):
        s.smtp.idle_timeout = 1                                # type: ignore[misc]


def test_example_file_defines_the_corpus_units():
    s = config.load({}, EXAMPLE_TOML)
    assert set(s.units) == {"alumni", "research-news", "student-comms", "events"}
    alumni = s.units["alumni"]
    assert alumni.key == "alumni" and alumni.names.en == "Alumni News"
    assert "Alumninytt" in alumni.aliases
    assert s.effective_bounce_domain == "mail.example.org"


def test_environment_wins_over_the_file_and_nests_with_double_underscore():
    s = config.load({"UNSUBD_SMTP_PORT": "2600", "UNSUBD_CONSUMER__MAX_ATTEMPTS": "9",
                     "UNSUBD_MAIL_DOMAIN": "Other.Example"}, EXAMPLE_TOML)
    assert s.smtp_port == 2600 and s.consumer.max_attempts == 9 and s.mail_domain == "other.example"
    assert s.parse.workers == 2                                # from the file


def test_config_path_can_come_from_the_environment():
    s = config.load({"UNSUBD_CONFIG": str(EXAMPLE_TOML)})
    assert "alumni" in s.units


@pytest.mark.parametrize("env, named", [
    ({"UNSUBD_SMTP_PORT": "abc"}, "UNSUBD_SMTP_PORT"),
    ({"UNSUBD_SMTP_PORT": "70000"}, "UNSUBD_SMTP_PORT"),
    ({"UNSUBD_CONSUMER__MAX_ATTEMPTS": "0"}, "UNSUBD_CONSUMER__MAX_ATTEMPTS"),
    ({"UNSUBD_DATABASE_URL": "mysql://x"}, "UNSUBD_DATABASE_URL"),
    ({"UNSUBD_MAIL_DOMAIN": "not a domain"}, "UNSUBD_MAIL_DOMAIN"),
    ({"UNSUBD_LOG_LEVEL": "chatty"}, "UNSUBD_LOG_LEVEL"),
    ({"UNSUBD_HTTP_HOST": "0.0.0.0"}, "api_keys"),
    ({"UNSUBD_AMQP__INBOUND_BATCH": "0"}, "UNSUBD_AMQP__INBOUND_BATCH"),
    ({"UNSUBD_AMQP__INBOUND_BATCH_BYTES": "-5"}, "UNSUBD_AMQP__INBOUND_BATCH_BYTES"),
])
def test_an_invalid_setting_names_its_key(env, named):
    with pytest.raises(config.ConfigError, match=named):
        config.load(env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text('smtp_prot = 25\n')
    with pytest.raises(config.ConfigError, match="smtp_prot"):
        config.load({}, f)


def test_bad_unit_definitions_are_refused(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text('[units.Alumni]\nnames = {sv="a", nb="a", en="a"}\n')
    with pytest.raises(config.ConfigError, match="units"):
        config.load({}, f)
    f.write_text('[units.alumni]\nnames = {sv="a", nb="a", en="a"}\nfrom_addresses = ["not-an-address"]\n')
    with pytest.raises(config.ConfigError, match="from_addresses"):
        config.load({}, f)
    f.write_text('[units.alumni]\nnames = {sv="a", en="a"}\n')
    with pytest.raises(config.ConfigError, match="nb"):
        config.load({}, f)


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load({}, tmp_path / "nope.toml")
    f = tmp_path / "bad.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load({}, f)


def test_api_keys_allow_a_public_http_host():
    s = config.load({"UNSUBD_HTTP_HOST": "0.0.0.0", "UNSUBD_API_KEYS": '["k1-0123456789abcdef"]'})
    assert [(k.name, k.key.get_secret_value(), k.scopes) for k in s.api_keys] == [
        ("key-1", "k1-0123456789abcdef", ("read", "write"))]
