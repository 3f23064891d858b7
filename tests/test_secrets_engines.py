"""The two engines of the content check (Hyperscan and pure Python) find exactly the same.

Differential tests: every input is scanned by both, and any difference fails, with the
Hyperscan engine missing what the Python one finds as the worst case. Inputs: the planted
tokens of test_secrets.py, tokens generated from every rule's own expression (the shortest
ones too, which test the Python engine's gates), random documents full of near-misses,
secrets at the edges of files, of the size limit and of the binary check, invalid UTF-8 and
huge lines, and sandboxrun's own tree. Then the fallback: forced with the environment
variable, and with ``hyperscan`` made unimportable (not uninstalled).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import string
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_secrets import CONTEXTS, NOT_SECRETS, TOKENS, _repo

from sandboxrun.errors import ConfigError
from sandboxrun.sync import secrets, secrets_hs
from sandboxrun.sync.pack import pack_worktree, select_files
from sandboxrun.sync.secrets_content import (
    CHECKS,
    RULES,
    SCAN_LIMIT,
    _placeholder,
    scan_python,
)

ROOT = Path(__file__).resolve().parent.parent
try:  # a dependency wherever it has wheels (pyproject.toml); elsewhere only the fallback runs
    import hyperscan
except ImportError:  # pragma: no cover - platforms without a hyperscan wheel
    hyperscan = None
needs_hyperscan = pytest.mark.skipif(
    hyperscan is None, reason="no hyperscan wheel for this platform: the Python engine alone"
)


@pytest.fixture
def fast() -> secrets_hs.HyperscanEngine:
    if hyperscan is None:
        pytest.skip("no hyperscan wheel for this platform: the Python engine alone")
    engine = secrets_hs.load_engine()
    assert engine is not None, secrets_hs.failure()
    return engine


def same(fast: secrets_hs.HyperscanEngine, data: bytes) -> str | None:
    """Both engines' answer for ``data``, failing the test if they differ."""
    slow = scan_python(data)
    quick = fast(data)
    if slow is not None and quick is None:
        pytest.fail(f"the Hyperscan engine missed {slow!r} in {len(data)} bytes")
    assert quick == slow, f"engines differ on {len(data)} bytes: hyperscan {quick!r}, {slow!r}"
    return slow


# --------------------------------------------------------------------------- token generator

_PRINTABLE = [c for c in string.printable.encode() if c not in b"\x0b\x0c"]


def _chars(items: list[tuple[object, object]]) -> list[int]:
    """The bytes an ``IN`` node of re's parse tree accepts."""
    negate, accepted = False, set()
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            accepted.add(arg)
        elif name == "RANGE":
            lo, hi = arg  # type: ignore[misc]
            accepted.update(range(lo, hi + 1))
        else:
            raise AssertionError(f"generator: unsupported class item {name}")
    return [c for c in _PRINTABLE if c not in accepted] if negate else sorted(accepted)  # type: ignore[arg-type]


def generate(node: object, rng: random.Random, shortest: bool) -> bytes:
    """A random string the parsed expression ``node`` matches (the shortest possible length
    when ``shortest``); look-arounds produce nothing (the caller's context satisfies them)."""
    out = bytearray()
    for op, arg in node:  # type: ignore[attr-defined]
        name = str(op)
        if name == "LITERAL":
            out.append(arg)
        elif name == "IN":
            out.append(rng.choice(_chars(arg)))
        elif name == "ANY":
            out.append(rng.choice(_PRINTABLE))
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, sub = arg
            hi = min(hi, lo + 12)
            for _ in range(lo if shortest else rng.randint(lo, hi)):
                out += generate(sub, rng, shortest)
        elif name == "SUBPATTERN":
            out += generate(arg[3], rng, shortest)
        elif name == "BRANCH":
            alternatives = arg[1]
            out += generate(rng.choice(alternatives), rng, shortest)
        elif name in ("ASSERT", "ASSERT_NOT", "AT"):
            continue
        else:
            raise AssertionError(f"generator: unsupported node {name}")
    return bytes(out)


@functools.cache
def _parsed(pattern: re.Pattern[bytes]) -> object:
    from re import _parser  # the stdlib's own parser: the tokens follow the real expression

    return _parser.parse(pattern.pattern, pattern.flags)


def _tokens(rng: random.Random, shortest: bool) -> list[tuple[int, bytes]]:
    """(index into CHECKS, a generated match) for every check, not a placeholder."""
    made = []
    for index, pattern in enumerate(CHECKS):
        for _ in range(40):
            token = generate(_parsed(pattern), rng, shortest)
            m = pattern.search(b" " + token + b" ")
            assert m is not None, (pattern.pattern, token)
            if index == 0 or not _placeholder(m.group(1)):
                made.append((index, token))
                break
        else:
            raise AssertionError(f"no non-placeholder token for {pattern.pattern!r}")
    return made


# --------------------------------------------------------------------------- the database


def test_every_check_is_in_one_hyperscan_database(fast: secrets_hs.HyperscanEngine) -> None:
    """One database holds every check's expression, compiled from the Python source."""
    assert len(CHECKS) == len(RULES) + 1
    db = secrets_hs._compile(hyperscan)
    for index, pattern in enumerate(CHECKS):  # each pattern alone is found, under its own id
        token = generate(_parsed(pattern), random.Random(index), shortest=False)
        found: list[int] = []
        db.scan(b" " + token + b" ", match_event_handler=secrets_hs._collect, context=found)
        assert index in found, pattern.pattern


@needs_hyperscan
def test_the_engine_in_use_is_hyperscan_by_default(monkeypatch) -> None:
    monkeypatch.delenv(secrets.ENGINE_ENV, raising=False)
    assert isinstance(secrets.content_engine(), secrets_hs.HyperscanEngine)
    monkeypatch.setenv(secrets.ENGINE_ENV, "python")
    assert secrets.content_engine() is scan_python


# --------------------------------------------------------------------------- differential


@pytest.mark.parametrize("rule", sorted(TOKENS))
def test_both_engines_find_every_planted_token(fast, rule: str) -> None:
    filler = "def handler(request):\n    return render(request, 'x.html')\n" * 50
    for context in CONTEXTS:
        for _ in range(5):
            data = (filler + context.format(TOKENS[rule]()) + filler).encode()
            assert same(fast, data) == rule.strip()


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_both_engines_pass_placeholders_and_ordinary_text(fast, text: str) -> None:
    assert same(fast, ("x = 1\n" + text + "\n").encode()) is None


@pytest.mark.parametrize("shortest", [True, False], ids=["shortest", "random-length"])
def test_tokens_generated_from_each_rule_are_found_by_both(fast, shortest: bool) -> None:
    """Tokens made from each rule's own expression, at its shortest too: the Python engine's
    gates (runs of token characters) must let every one through, as Hyperscan does."""
    rng = random.Random(11 + shortest)
    for _ in range(25):
        for index, token in _tokens(rng, shortest):
            for before, after in ((b"key = '", b"'\n"), (b"", b""), (b"\n", b"\r\n"), (b'"', b'"')):
                data = b"# config\n" + before + token + after if before else token
                found = same(fast, data)
                assert found is not None, (CHECKS[index].pattern, token)


def test_random_documents_full_of_near_misses(fast) -> None:
    """Anchors, runs of token characters, armour lines, truncated and whole tokens, mixed at
    random: thousands of documents, every one judged alike by both engines."""
    rng = random.Random(5)
    anchors = sorted({a for r in RULES for a in r.anchors} | {b"PRIVATE KEY", b"-----BEGIN "})
    alphabet = (string.ascii_letters + string.digits + "+/=_-.").encode()
    found = 0
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.3:
                parts.append(rng.choice(anchors))
            elif kind < 0.6:
                parts.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 90))))
            elif kind < 0.75:
                index, token = rng.choice(_tokens(rng, rng.random() < 0.5))
                cut = rng.randint(0, len(token))  # often truncated: a near miss
                parts.append(token[:cut] if rng.random() < 0.6 else token)
            else:
                parts.append(rng.choice([b" ", b"\n", b"'", b'"', b"=", b":", b"\\n", b"\xff"]))
        found += same(fast, b"".join(parts)) is not None
    assert 100 < found < 1400  # the mix has both: findings and near misses


def test_several_secrets_in_one_file_name_the_same_rule(fast) -> None:
    rng = random.Random(3)
    for _ in range(200):
        picks = rng.sample(_tokens(rng, False), 3)
        data = b"\n".join(b"v = '" + t + b"'" for _, t in picks)
        assert same(fast, data) is not None


def test_secrets_at_the_edges(fast) -> None:
    """File start and end, the 8 KiB binary check, the scan limit, 64 KiB boundaries."""
    token = TOKENS["github-token"]().encode()
    key = TOKENS["private-key"]().encode()
    cases = {
        "start": token + b"\n" + b"x" * 1000,
        "end, no newline": b"x\n" * 500 + token,
        "whole file": token,
        "key block at the end": b"y\n" * 100 + key.rstrip(),
        "NUL just past 8 KiB": b"x" * 8192 + b"\0\n" + token,
        "NUL inside 8 KiB": b"x" * 8191 + b"\0\n" + token,
        "at the scan limit": b"#" * (SCAN_LIMIT - len(token) - 1) + b"\n" + token,
        "one byte over": b"#" * (SCAN_LIMIT - len(token)) + b"\n" + token,
    }
    for boundary in (1 << 16, 1 << 17, SCAN_LIMIT // 2):
        for shift in range(-len(token), 2, 7):  # straddling the boundary, then after it
            pad = boundary + shift
            cases[f"at {boundary}{shift:+d}"] = b"z " * (pad // 2) + b"\n" * (pad % 2) + token
    expected_none = {"NUL inside 8 KiB", "one byte over"}
    for label, data in cases.items():
        assert (same(fast, data) is None) == (label in expected_none), label


def test_binary_invalid_utf8_and_huge_lines(fast) -> None:
    rng = random.Random(9)
    token = TOKENS["anthropic-api-key"]().encode()
    blob = bytes(rng.randrange(256) for _ in range(200_000))
    cases = [
        blob,  # binary: a NUL early on, not scanned
        blob.replace(b"\0", b"\1"),  # no NUL: scanned as text, garbage and all
        blob.replace(b"\0", b"\1") + b" " + token + b" " + blob.replace(b"\0", b"\2")[:5000],
        b"\xff\xfe" + token + b"\xc3\x28",  # invalid UTF-8 around a token
        b"\xed\xa0\x80" + b"'" + TOKENS["aws-access-key-id"]().encode() + b"'",
        b"a" * 900_000 + b" " + token,  # one huge line
        b"a" * 900_000 + token,  # the token glued to a run: the look-behind refuses
        b"=" * 500_000 + TOKENS["azure-storage-key"]().encode(),
    ]
    for data in cases:
        same(fast, data)
    assert same(fast, cases[2]) == "anthropic-api-key"
    assert same(fast, cases[5]) == "anthropic-api-key"


def test_both_engines_agree_on_this_repository(fast) -> None:
    """sandboxrun's own code, tests, docs and fixtures: no findings, by either engine."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    assert listed.returncode == 0, listed.stderr
    scanned = 0
    for raw in listed.stdout.split(b"\0"):
        path = ROOT / raw.decode()
        if raw and path.is_file() and not path.is_symlink():
            assert same(fast, path.read_bytes()) is None, raw
            scanned += 1
    assert scanned > 100


def test_threads_scan_at_once(fast) -> None:
    """Each thread has its own scratch space: concurrent scans neither fail nor mix up."""
    inputs = [(TOKENS[r]().encode(), r.strip()) for r in sorted(TOKENS)] * 4
    errors: list[BaseException] = []

    def work(shift: int) -> None:
        try:
            for i in range(len(inputs)):
                token, rule = inputs[(i + shift) % len(inputs)]
                assert fast(b"x = '" + token + b"'\n" * 2000) == rule
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@needs_hyperscan
def test_packs_are_identical_with_either_engine(tmp_path: Path, monkeypatch) -> None:
    root = _repo(tmp_path)
    results = {}
    for name in ("hyperscan", "python"):
        monkeypatch.setenv(secrets.ENGINE_ENV, name)
        sel = select_files(root)
        res = pack_worktree(root, tmp_path / f"{name}.tar.gz", scan_cache=tmp_path / name / "c")
        results[name] = (sel.secret_reasons, res.selection.secret_reasons, res.selection.files)
    assert results["hyperscan"] == results["python"]
    assert "content: stripe-secret-key" in results["python"][0].values()


@needs_hyperscan
def test_with_hyperscan_no_clean_contents_are_hashed_or_kept(tmp_path: Path, monkeypatch) -> None:
    """Hyperscan scans as fast as hashing: every pack scans, the cache directory holds the
    compiled database instead, and secrets are found whatever an old cache says."""
    monkeypatch.delenv(secrets.ENGINE_ENV, raising=False)
    cache = tmp_path / "home" / "cache" / "clean-contents"
    check = secrets.ContentCheck(cache)
    assert check.cache_file is None and isinstance(check.scan, secrets_hs.HyperscanEngine)
    root = _repo(tmp_path)
    for n in range(2):
        res = pack_worktree(root, tmp_path / f"{n}.tar.gz", scan_cache=cache)
        assert res.selection.secret_reasons["untracked.yml"] == "content: gitlab-token"
    assert not cache.exists()
    monkeypatch.setenv(secrets.ENGINE_ENV, "python")  # the Python engine keeps one
    pack_worktree(root, tmp_path / "p.tar.gz", scan_cache=cache)
    assert cache.exists()


# --------------------------------------------------------------------------- the fallback


@pytest.fixture
def no_hyperscan(monkeypatch):
    """``import hyperscan`` fails (as where no wheel exists), for this test only."""
    monkeypatch.setitem(sys.modules, "hyperscan", None)
    monkeypatch.setattr(secrets, "_warned", [])
    secrets_hs.reset()
    yield
    secrets_hs.reset()


def test_without_hyperscan_the_python_engine_is_used_and_said_once(
    no_hyperscan, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.delenv(secrets.ENGINE_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="sandboxrun.sync.secrets"):
        assert secrets.content_engine() is scan_python
        assert secrets.content_engine() is scan_python
        root = _repo(tmp_path)
        res = pack_worktree(root, tmp_path / "o.tar.gz", scan_cache=tmp_path / "c" / "c")
    assert res.selection.secret_reasons["settings.py"] == "content: stripe-secret-key"
    warnings = [r.getMessage() for r in caplog.records if "pure-Python engine" in r.getMessage()]
    assert len(warnings) == 1 and "hyperscan cannot be imported" in warnings[0]
    assert secrets_hs.failure() is not None


def test_asking_for_hyperscan_where_it_is_missing_is_an_error(no_hyperscan, monkeypatch) -> None:
    monkeypatch.setenv(secrets.ENGINE_ENV, "hyperscan")
    with pytest.raises(ConfigError) as err:
        secrets.content_engine()
    assert "hyperscan cannot be imported" in err.value.message and err.value.hint


def test_an_unknown_engine_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(secrets.ENGINE_ENV, "fastest")
    with pytest.raises(ConfigError, match="fastest") as err:
        pack_worktree(_repo(tmp_path), tmp_path / "o.tar.gz")
    assert "python" in (err.value.hint or "")
    assert not list(tmp_path.glob("*.tar.gz*"))  # refused before anything was written


@needs_hyperscan
def test_the_compiled_database_is_cached_and_a_damaged_cache_ignored(tmp_path: Path) -> None:
    secrets_hs.reset()
    try:
        first = secrets_hs.load_engine(tmp_path)
        assert first is not None
        (cached,) = tmp_path.glob("secrets-hyperscan-*.db")
        good = cached.read_bytes()
        token = TOKENS["e2b-api-key"]().encode()
        for damaged in (good[: len(good) // 2], good[:-1] + b"\0", b"garbage", b""):
            cached.write_bytes(damaged)
            secrets_hs.reset()
            engine = secrets_hs.load_engine(tmp_path)  # compiled afresh, cache rewritten
            assert engine is not None and engine(b"k = " + token) == "e2b-api-key"
            assert cached.read_bytes()[:40] == good[:40]
        # an engine built without a cache directory is kept in the first one given later
        secrets_hs.reset()
        assert secrets_hs.load_engine() is not None
        later = tmp_path / "later"
        assert secrets_hs.load_engine(later) is not None
        assert [p.read_bytes() for p in later.glob("secrets-hyperscan-*.db")] == [good]
        # a new process loads it instead of compiling
        code = (
            "import sys; from pathlib import Path; from sandboxrun.sync import secrets_hs as h\n"
            "h._compile = None  # loading must not compile\n"
            "e = h.load_engine(Path(sys.argv[1])); print(e(sys.argv[2].encode()))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), "k = " + token.decode()],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert done.stdout.strip() == "e2b-api-key", done.stderr
    finally:
        secrets_hs.reset()


@needs_hyperscan
def test_ignore_specs_keep_pathspecs_python_backend(tmp_path: Path, monkeypatch) -> None:
    """Installing hyperscan must not switch pathspec (>= 1.0) to its Hyperscan backend, which
    compiles a database for every spec: our specs use the pure-Python one."""
    from sandboxrun.sync.candidates import Spec

    def no_database(*_args, **_kwargs):
        raise AssertionError("pathspec compiled a Hyperscan database")

    monkeypatch.setattr(hyperscan, "Database", no_database)
    spec = Spec(["*.log", "!keep.log", "build/"])
    assert spec.match("a/x.log") and spec.match("build/out.o")
    assert not spec.match("keep.log") and not spec.match("src/app.py")
    (tmp_path / ".sandboxruninclude").write_text("prod.env\n")
    (tmp_path / "prod.env").write_text("X=1\n")
    (tmp_path / "dev.env").write_text("X=1\n")
    assert secrets.secret_paths(tmp_path, ["prod.env", "dev.env"]) == ["dev.env"]
