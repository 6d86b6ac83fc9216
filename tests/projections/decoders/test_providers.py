"""One module per provider: the registry finds it, and everything else asks the registry.

A provider is its module (or package) under ``projections/providers/``, exporting one
``PROVIDER`` (docs/adding-a-provider.md). These checks hold for every provider the registry
finds, so a new one is held to them without being named here: its name, its tests and
fixtures, its docs row, its signature and answer; and the generic modules (ingest, the
failure classes) name no provider at all.
"""

from __future__ import annotations

import ast
import pkgutil
import re
from pathlib import Path

import pytest
from multidict import CIMultiDict

from projections import failures, providers
from projections.facts import FAILURE_CLASSES
from projections.providers.base import FailureTable, Provider, Receipt, Reply, Signed
from projections.providers.simulation import Builder
from tests.support import REPO
from tests.support.samples import FIXTURES, all_names

SOURCES = FIXTURES / "SOURCES.md"
DECODER_TESTS = REPO / "tests" / "projections" / "decoders"


def test_the_registry_is_every_module_of_the_package_sorted() -> None:
    found = {
        m.name
        for m in pkgutil.iter_modules(providers.__path__)
        if not m.name.startswith("_") and m.name not in providers.SHARED
    }
    assert providers.PROVIDERS == tuple(sorted(found))
    assert len(providers.PROVIDERS) >= 11


@pytest.mark.parametrize("name", providers.PROVIDERS)
def test_each_module_exports_its_provider(name: str) -> None:
    provider = providers.get(name)
    assert isinstance(provider, Provider)
    assert provider.name == name
    assert providers.decoder(name) is provider.decode
    assert issubclass(provider.simulator, Builder)
    assert providers.find(name) is provider


def test_an_unknown_name_is_no_provider() -> None:
    assert providers.find("no-such-provider") is None
    with pytest.raises(providers.UnknownProvider):
        providers.get("no-such-provider")
    with pytest.raises(providers.UnknownProvider):
        providers.get("base")  # what the providers share is not one of them


@pytest.mark.parametrize("name", providers.PROVIDERS)
def test_each_provider_has_its_decoder_tests_samples_and_docs_row(name: str) -> None:
    assert (DECODER_TESTS / f"test_decode_{name}.py").is_file(), name
    assert all_names(name), f"no shared sample and no fixture for {name}"
    page = (REPO / "docs" / "providers.md").read_text(encoding="utf-8")
    table = page.split("\n## ", 1)[0]
    assert re.search(rf"^\| [^|]*\(`{name}`\) \|", table, re.M), f"no docs/providers.md row: {name}"


@pytest.mark.parametrize("name", providers.PROVIDERS)
def test_each_fixture_names_its_source(name: str) -> None:
    folder = FIXTURES / name
    listed = SOURCES.read_text(encoding="utf-8")
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    for file in files:
        assert f"`{name}/{file}`" in listed, f"tests/fixtures/SOURCES.md has no row for {file}"


@pytest.mark.parametrize("name", providers.PROVIDERS)
def test_a_failure_table_names_its_sources_and_only_known_classes(name: str) -> None:
    table = providers.get(name).failures
    if table is None:
        assert name not in failures.TABLES
        return
    assert failures.TABLES[name] is table
    assert table.sources, name
    values = [*table.codes.values(), *table.statuses.values(), *(r[2] for r in table.ranges)]
    assert set(values) <= set(FAILURE_CLASSES), name


SIGNING = [p for p in providers.PROVIDERS if providers.get(p).signature is not None]


@pytest.mark.parametrize("name", SIGNING)
def test_a_signature_verifies_what_its_simulator_signs_and_nothing_else(name: str) -> None:
    """The simulator's headers (what the provider sends) pass the check ingest runs; another
    secret, another body or another URL (where it is signed) do not."""
    signature = providers.get(name).signature
    assert signature is not None
    url, body = "https://acklog.example.com/hooks/c?token=x", b"A=1&B=two"
    sent = CIMultiDict(signature.headers("app-secret", url, body))
    given = sent[signature.header]

    def ok(secret: str = "app-secret", body: bytes = body, url: str = url) -> bool:
        return signature.verify(secret, given, Signed(sent, body, url))

    assert ok()
    assert not ok(secret="another-secret")
    assert not ok(body=body + b"&C=3")
    assert ok(url=url + "x") is not signature.covers_url


@pytest.mark.parametrize("name", providers.PROVIDERS)
def test_an_answer_is_a_2xx_reply(name: str) -> None:
    answer = providers.get(name).answer
    if answer is None:
        return
    for receipt in (Receipt("18", 7, None), Receipt(None, 8, 7), Receipt("evt_x", 9, None)):
        reply = answer(receipt)
        assert isinstance(reply, Reply) and isinstance(reply.body, bytes)
        assert 200 <= reply.status < 300


# -- the generic modules name no provider -------------------------------------------------------


def _mentions(text: str) -> list[str]:
    """Provider names in ``text``, as words, in any case, also spelt with a hyphen (Z-API)."""
    flat = text.lower()
    joined = flat.replace("-", "")
    return sorted(
        {
            n
            for n in providers.PROVIDERS
            for t in (flat, joined)
            if re.search(rf"\b{re.escape(n)}\b", t)
        }
    )


@pytest.mark.parametrize(
    "path", sorted((REPO / "service" / "ingest").glob("*.py")), ids=lambda p: p.name
)
def test_ingest_names_no_provider(path: Path) -> None:
    """Ingest asks the channel's provider for its signature and its answer: no branch, no
    table and no comment of it is about one provider."""
    assert _mentions(path.read_text(encoding="utf-8")) == []


def test_failures_holds_no_provider_table() -> None:
    """failures.py keeps classify() and the text rules; each table is in its provider's module."""
    path = REPO / "projections" / "failures.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not literals & set(providers.PROVIDERS)
    tables = [
        name
        for name, value in vars(failures).items()
        if isinstance(value, FailureTable) and (value.codes or value.statuses or value.ranges)
    ]
    assert tables == []
    assert "FailureTable(" not in path.read_text(encoding="utf-8").replace(
        "_NONE = FailureTable(codes={}, statuses={}, ranges=(), sources=())", ""
    )
