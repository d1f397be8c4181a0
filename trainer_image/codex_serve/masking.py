"""Credential masking for completions, whole or streamed.

Each pattern anchors on a vendor prefix and a minimum length, so ordinary code
(``task-runner``, ``AKIA`` in prose, ``sk-learn``) stays untouched. A match becomes
``[SECRET]``.

Streaming: :class:`StreamMasker` holds back the tail of the text that could still
turn into a secret once more characters arrive, and releases the rest masked.
Every token-shaped secret is made only of ``[A-Za-z0-9_-]``, so a secret that
overlaps the end of the text lies inside the trailing run of those characters:
holding back that run (and any private-key block still open) is enough for a
secret split across any number of chunks to be masked whole.
"""

from __future__ import annotations

import re

REPLACEMENT = "[SECRET]"

# Characters a token-shaped secret is made of; a secret never spans anything else.
_TOKEN_CHARS = "A-Za-z0-9_-"
# A secret starts at a boundary: not in the middle of a longer identifier.
_START = rf"(?<![{_TOKEN_CHARS}])"

PATTERNS: dict[str, re.Pattern[str]] = {
    # OpenAI: sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...
    "openai": re.compile(_START + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    "aws": re.compile(_START + r"(?:AKIA|ASIA)[A-Z0-9]{16,}"),
    # Google API keys: AIza plus 35 characters.
    "google": re.compile(_START + r"AIza[0-9A-Za-z_-]{35}"),
    # GitHub classic tokens (ghp_ personal, gho_ OAuth, ghu_/ghs_ app, ghr_ refresh) and fine-grained PATs.
    "github": re.compile(_START + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    # Slack bot, app, user, refresh and workspace tokens.
    "slack": re.compile(_START + r"xox[baprs]-[A-Za-z0-9-]{10,}"),
    # PEM private keys (RSA, EC, OPENSSH, encrypted PKCS#8 ...), header to footer.
    "private_key": re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----", re.DOTALL
    ),
}

# A private-key header whose footer never came (generation stopped inside the key): mask to the end.
_OPEN_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*", re.DOTALL)
_TRAILING_TOKEN_RUN = re.compile(rf"[{_TOKEN_CHARS}]*\Z")
_PEM_BEGIN = "-----BEGIN"
# A block is closed only by a whole footer line; a footer still arriving keeps it open.
_PEM_FOOTER = re.compile(r"-----END [A-Z0-9 ]*-----")


def mask_secrets(text: str) -> str:
    """Replace every credential in a complete text with ``[SECRET]``."""
    for pattern in PATTERNS.values():
        text = pattern.sub(REPLACEMENT, text)
    return _OPEN_PRIVATE_KEY.sub(REPLACEMENT, text)


def _open_pem_start(text: str) -> int | None:
    """Where a ``-----BEGIN`` block starts that has no ``-----END`` after it, if any."""
    begin = text.rfind(_PEM_BEGIN)
    if begin < 0 or _PEM_FOOTER.search(text, begin) is not None:
        return None
    # An older BEGIN may still be open around this one (a key that quotes a header).
    earlier = _open_pem_start(text[:begin])
    return earlier if earlier is not None else begin


class StreamMasker:
    """Masks a text that arrives in chunks; ``feed`` returns what is safe to send now.

    >>> masker = StreamMasker()
    >>> masker.feed("key: sk-abc") + masker.feed("def" * 8 + " done") + masker.flush()
    'key: [SECRET] done'
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._pending = ""

    def feed(self, chunk: str) -> str:
        if not self.enabled:
            return chunk
        self._pending += chunk
        hold = self._hold_from(self._pending)
        ready, self._pending = self._pending[:hold], self._pending[hold:]
        return mask_secrets(ready) if ready else ""

    def flush(self) -> str:
        """Everything still held back, masked; call once when the text is complete."""
        ready, self._pending = self._pending, ""
        return mask_secrets(ready) if ready else ""

    @staticmethod
    def _hold_from(text: str) -> int:
        hold = _TRAILING_TOKEN_RUN.search(text).start()
        # Judge the blocks by the part that would go out: a footer cut by the hold keeps its block open.
        pem = _open_pem_start(text[:hold])
        return pem if pem is not None else hold
