"""The content rules of the secrets check, and the pure-Python engine that applies them.

A file's bytes hold a high-confidence secret when one of :data:`CHECKS` matches: a private
key block (reported as ``gcp-service-account`` inside service-account JSON) or a token whose
format is published by its issuer (:data:`RULES`). Only a rule's name is ever returned, never
the matched value. Two engines apply the same checks and must give the same answer:

* :func:`scan_python` (here): pure Python, works everywhere. Each group of rules is gated by a
  cheap C-level test that every match of the group needs (see "Gates" below), so a file with
  no secret costs a few ``translate``/``find`` passes (~270 MB/s here).
* :mod:`.secrets_hs`: one Hyperscan database of every check's pattern (SIMD, ~1.3 GB/s);
  a file it flags goes through :func:`confirm`, the same exact rules as here.

:data:`CHECKS` is in reporting order: when a file holds several secrets, both engines name
the first check (by index) that finds one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CHECKS",
    "KEY_BLOCK",
    "RULES",
    "SCAN_LIMIT",
    "Rule",
    "confirm",
    "is_text",
    "scan_python",
]

#: files larger than this are not content-scanned (secrets live in small files; the cap bounds
#: the cost of a huge generated file)
SCAN_LIMIT = 1 << 20


@dataclass(frozen=True)
class Rule:
    """A content rule: a name to report and a pattern for the secret (never reported).

    ``anchors`` are literal substrings one of which every match contains: a C-level ``in``
    test on them decides whether the regular expression needs to run at all. Group 1 of
    ``pattern`` is the token, checked against placeholders.
    """

    name: str
    anchors: tuple[bytes, ...]
    pattern: re.Pattern[bytes]


def _r(name: str, anchors: tuple[bytes, ...], pattern: bytes) -> Rule:
    return Rule(name, anchors, re.compile(pattern))


# Token formats as published by their issuers (and as used by gitleaks / detect-secrets),
# anchored on their fixed prefixes and exact alphabets so ordinary code never matches. Three
# groups by what every match needs (see the gates below).
_ALNUM_RULES: tuple[Rule, ...] = (
    _r("aws-access-key-id", (b"AKIA", b"ASIA", b"ABIA", b"ACCA"),
       rb"(?<![A-Za-z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?![A-Za-z0-9])"),
    _r("github-token", (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
       rb"(?<![A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])"),
    _r("github-token", (b"github_pat_",),
       rb"(?<![A-Za-z0-9_])(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})(?![A-Za-z0-9_])"),
    _r("slack-webhook", (b"hooks.slack.com",),
       rb"hooks\.slack\.com/services/(T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,})"),
    _r("stripe-secret-key", (b"k_live_",),
       rb"(?<![A-Za-z0-9])([rs]k_live_[A-Za-z0-9]{24,})(?![A-Za-z0-9])"),
    _r("openai-api-key", (b"T3BlbkFJ",),
       rb"(?<![A-Za-z0-9_-])(sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})(?![A-Za-z0-9])"),
    _r("npm-token", (b"npm_",), rb"(?<![A-Za-z0-9_])(npm_[A-Za-z0-9]{36})(?![A-Za-z0-9])"),
    _r("e2b-api-key", (b"e2b_",), rb"(?<![A-Za-z0-9_])(e2b_[0-9a-f]{40})(?![A-Za-z0-9])"),
    _r("huggingface-token", (b"hf_",), rb"(?<![A-Za-z0-9_])(hf_[A-Za-z]{34})(?![A-Za-z0-9_])"),
    _r("digitalocean-token", (b"_v1_",),
       rb"(?<![A-Za-z0-9_])(do[opr]_v1_[a-f0-9]{64})(?![A-Za-z0-9])"),
)  # fmt: skip
_B64URL_RULES: tuple[Rule, ...] = (
    # the Slack tail may hold '-', so its guaranteed run is one of [A-Za-z0-9_-] (>= 32)
    _r("slack-token", (b"xox",), rb"(?<![A-Za-z0-9])(xox[abposr]-[0-9]{6,}-[0-9A-Za-z-]{20,})"),
    _r("gitlab-token", (b"glpat-", b"gldt-", b"glrt-", b"glptt-"),
       rb"(?<![A-Za-z0-9_-])(gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,})"),
    _r("google-api-key", (b"AIza",),
       rb"(?<![A-Za-z0-9_-])(AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"),
    _r("google-oauth-client-secret", (b"GOCSPX-",),
       rb"(?<![A-Za-z0-9_-])(GOCSPX-[A-Za-z0-9_-]{28})(?![A-Za-z0-9_-])"),
    _r("anthropic-api-key", (b"sk-ant-",),
       rb"(?<![A-Za-z0-9_-])(sk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_-]{32,})"),
    _r("openai-api-key", (b"sk-proj-", b"sk-svcacct-", b"sk-admin-"),
       rb"(?<![A-Za-z0-9_-])(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,})"),
    _r("sendgrid-api-key", (b"SG.",),
       rb"(?<![A-Za-z0-9_-])(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])"),
    _r("pypi-token", (b"pypi-AgE",), rb"(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})"),
)  # fmt: skip
# Keys in base64 (so no long run is guaranteed), found by their long literal anchors alone.
_ANCHORED_RULES: tuple[Rule, ...] = (
    _r("azure-storage-key", (b"AccountKey=",),
       rb"AccountKey=([A-Za-z0-9+/]{86}==)"),
    _r("azure-shared-access-key", (b"SharedAccessKey=",),
       rb"SharedAccessKey=([A-Za-z0-9+/]{43}=)"),
)  # fmt: skip
#: every token rule, in reporting order
RULES: tuple[Rule, ...] = _ALNUM_RULES + _B64URL_RULES + _ANCHORED_RULES

#: a key block: the armour line and at least 40 base64 characters of body soon after it (a
#: placeholder such as "MIIE..." or "<your key>" has no such body). PEM, OpenSSH, PKCS#8,
#: encrypted PEM and PGP private key blocks; inside JSON the newlines are "\n" escapes.
KEY_BLOCK = re.compile(
    rb"-----BEGIN[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----.{0,400}?[A-Za-z0-9+/]{40}", re.DOTALL
)
_SERVICE_ACCOUNT = re.compile(rb'"type"\s*:\s*"service_account"')
#: every check's pattern, in reporting order: index 0 the key block, then :data:`RULES`
#: (the Hyperscan engine uses the index as the pattern id)
CHECKS: tuple[re.Pattern[bytes], ...] = (KEY_BLOCK, *(r.pattern for r in RULES))

# Gates. Every match of a rule in _ALNUM_RULES holds a run of 20+ [A-Za-z0-9] (AWS 20, the
# others more); every match of one in _B64URL_RULES a run of 25+ [A-Za-z0-9_-] ("gldt-" and
# "glrt-" + 20 is the shortest; each pattern's look-behind or literal start bounds the run).
# translate maps those characters to "a" and every other byte to a space, so one C-level find
# answers "could any rule of the group match here". tests/test_secrets_engines.py checks
# each gate against the shortest token of every rule.
_ALNUM = bytes(0x61 if chr(i).isascii() and chr(i).isalnum() else 0x20 for i in range(256))
_B64URL = bytes(
    0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "-_") else 0x20 for i in range(256)
)
_RUN_ALNUM = b"a" * 20
_RUN_B64URL = b"a" * 25


def is_text(data: bytes) -> bool:
    """Git's rule of thumb: a NUL byte in the first 8 KiB means binary."""
    return data.find(b"\0", 0, 8192) < 0  # no 8 KiB slice copied


def scannable(data: bytes) -> bool:
    """Whether the content check looks at ``data`` at all: text, at most :data:`SCAN_LIMIT`."""
    return len(data) <= SCAN_LIMIT and data.find(b"\0", 0, 8192) < 0


def _placeholder(value: bytes) -> bool:
    """Documentation values: EXAMPLE keys, xxxx-filled, counting or low-variety strings."""
    upper = value.upper()
    return (
        any(word in upper for word in (b"EXAMPLE", b"XXXXXXXX", b"ABCDEFGH", b"12345678"))
        or len(set(value)) < 10
    )


def _key_block(data: bytes) -> str | None:
    if KEY_BLOCK.search(data) is None:
        return None
    return "gcp-service-account" if _SERVICE_ACCOUNT.search(data) else "private-key"


def _rule_hit(rule: Rule, data: bytes) -> bool:
    return any(not _placeholder(m.group(1)) for m in rule.pattern.finditer(data))


def scan_python(data: bytes) -> str | None:
    """The name of the first check ``data`` matches, or None: the pure-Python engine.

    Binary data and data over :data:`SCAN_LIMIT` are not scanned (None). The matched value
    is never returned or logged: callers report the path and the rule only.
    """
    if not scannable(data):
        return None
    if b"PRIVATE KEY" in data:
        found = _key_block(data)
        if found is not None:
            return found
    if _RUN_ALNUM in data.translate(_ALNUM):
        found = _first_match(_ALNUM_RULES, data)
        if found is not None:
            return found
    if _RUN_B64URL in data.translate(_B64URL):
        found = _first_match(_B64URL_RULES, data)
        if found is not None:
            return found
    return _first_match(_ANCHORED_RULES, data)


def _first_match(rules: tuple[Rule, ...], data: bytes) -> str | None:
    for rule in rules:
        if any(a in data for a in rule.anchors) and _rule_hit(rule, data):
            return rule.name
    return None


def confirm(data: bytes, candidates: list[int]) -> str | None:
    """The first of the checks numbered ``candidates`` (indexes into :data:`CHECKS`) that
    really matches ``data``, by the exact rules :func:`scan_python` uses, or None.

    A fast engine that may report more candidates than there are matches (never fewer) calls
    this for the few files it flags; ``data`` is assumed scannable.
    """
    for index in sorted(set(candidates)):
        if index == 0:
            found = _key_block(data)
            if found is not None:
                return found
        elif _rule_hit(RULES[index - 1], data):
            return RULES[index - 1].name
    return None
