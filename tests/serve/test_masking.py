"""Secret masking: each pattern, secrets split across stream chunks, and no false positives on code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codex_serve.masking import REPLACEMENT, StreamMasker, mask_secrets

# Shaped like real credentials; none is live.
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
SECRETS = {
    "openai": "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0UvWx",
    "openai-project": "sk-proj-" + "Zx9_Yw8-Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa",
    "aws-akia": "AKIAIOSFODNN7EXAMPLE",
    "aws-asia": "ASIAY34FZKBOKMUTVV7A",
    "google": "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "github-ghp": "ghp_" + "wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx",
    "github-gho": "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github-pat": "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "slack-bot": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack-user": "xoxp-" + "1234567890-0987654321-abcdef0123",
    "private-key": PEM,
}


def stream(text: str, chunk_sizes) -> str:
    masker, out, start = StreamMasker(), [], 0
    for size in chunk_sizes:
        out.append(masker.feed(text[start:start + size]))
        start += size
    out.append(masker.feed(text[start:]))
    return "".join(out) + masker.flush()


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_each_pattern_is_masked_in_context(secret):
    text = f"config = {{'key': '{secret}'}}\nprint(config)"
    assert mask_secrets(text) == f"config = {{'key': '{REPLACEMENT}'}}\nprint(config)"


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_secret_split_at_every_point_across_chunks_is_masked(secret):
    text = f"token: {secret} (rotate it)"
    for split in range(1, len(text)):
        assert stream(text, [split]) == f"token: {REPLACEMENT} (rotate it)", split


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_secret_streamed_one_character_at_a_time_is_never_released(secret):
    masker, released = StreamMasker(), ""
    for char in f"export KEY={secret}\n":
        released += masker.feed(char)
        # Whatever went out so far never holds more than a few leading characters of the secret.
        assert secret[:8] not in released
    assert released + masker.flush() == f"export KEY={REPLACEMENT}\n"


def test_unterminated_private_key_is_masked_to_the_end():
    cut = PEM[: PEM.index("-----END")]
    assert mask_secrets("key:\n" + cut) == "key:\n" + REPLACEMENT
    assert stream("key:\n" + cut, [7, 40, 3]) == "key:\n" + REPLACEMENT


def test_public_certificate_and_text_around_a_key_are_kept():
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert mask_secrets(f"{cert}\n{PEM}\nbye") == f"{cert}\n{REPLACEMENT}\nbye"
    assert stream(f"{cert}\n{PEM}\nbye", [10] * 30) == f"{cert}\n{REPLACEMENT}\nbye"


def test_text_is_released_as_soon_as_it_cannot_be_a_secret():
    masker = StreamMasker()
    assert masker.feed("def add(a, b):\n    return a") == "def add(a, b):\n    return "
    assert masker.feed(" + b\n") == "a + b\n"
    assert masker.flush() == ""


def test_disabled_masker_passes_everything_through():
    masker = StreamMasker(enabled=False)
    assert masker.feed(SECRETS["aws-akia"]) == SECRETS["aws-akia"]
    assert masker.flush() == ""


ORDINARY_CODE = [
    "import sklearn\nfrom sk_learn import thing\nclass TaskRunner: pass",
    "task-runner-for-the-nightly-build = 1  # ends with sk- in the middle",
    "def ask-for-permissions-and-continue(): ...",
    "AKIA = 'prefix'\nASIA_REGION = 'ap-southeast-1'",
    "const AIza = 'short'; let ghp = 'ghp_short';",
    "github_pat_ = None  # a variable, not a token",
    "xoxb = 'bot'; slack_channel = 'xoxo-hugs'",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "sha = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'",
    "uuid = 'f47ac10b-58cc-4372-a567-0e02b2c3d479'",
    "path = '/var/run/codex/adapter'; url = 'https://huggingface.co/org/model'",
]


@pytest.mark.parametrize("code", ORDINARY_CODE, ids=range(len(ORDINARY_CODE)))
def test_ordinary_code_is_untouched(code):
    assert mask_secrets(code) == code
    assert stream(code, [3] * 100) == code


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(list(SECRETS.values())),
                             st.text(alphabet=st.characters(codec="utf-8"), max_size=12)), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=20),
)
def test_streaming_equals_masking_the_whole_text(parts, cuts):
    text = " ".join(parts)
    assert stream(text, cuts) == mask_secrets(text)
