"""The read API of a held embedded store, checked with qdrant-client against the same points
in qdrant-client's own local mode: query (with filters), scroll, retrieve and count return the
same answers; writes are refused; an API key is enforced; the CLI finds the holder."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import UnexpectedResponse

from importer import cli
from importer.holder import ADDRESS_FILE, holder_url
from importer.model import Embedder
from importer.readapi import TextModel
from importer.settings import DEFAULT_MODEL, parse_address
from importer.sink import EdgeSink, ServerSink, open_sink

DIM = 8
N = 300
PROJECTS = ("alpha", "beta", "gamma")


def _points() -> list[m.PointStruct]:
    rnd = random.Random(7)
    pts = []
    for i in range(N):
        payload = {
            "source": f"{PROJECTS[i % 3]}/s{i % 17}.jsonl",
            "project": PROJECTS[i % 3],
            "chunk_index": i % 11,
            "text": f"chunk {i} about {'memory leaks' if i % 5 == 0 else 'vector search'}",
        }
        pts.append(
            m.PointStruct(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")),
                vector=[rnd.uniform(-1, 1) for _ in range(DIM)],
                payload=payload,
            )
        )
    return pts


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QdrantClient, Any, str]]:
    """(client of the holder's read API, client of local mode, the embedded store's path)."""
    pts = _points()
    path = str(tmp_path_factory.mktemp("edge"))
    sink = EdgeSink(path, "c", True, DIM)
    sink.upsert([str(p.id) for p in pts], [p.vector for p in pts], [p.payload for p in pts])  # type: ignore[misc]
    url = sink.serve_reads(("127.0.0.1", 0), None)
    local = QdrantClient(":memory:")
    params = m.VectorParams(size=DIM, distance=m.Distance.COSINE)
    local.create_collection("c", vectors_config=params)
    local.upsert("c", points=pts, wait=True)
    held = QdrantClient(url=url, timeout=10)
    try:
        yield held, local, path
    finally:
        held.close()
        local.close()
        sink.close()


FILTERS = {
    "none": None,
    "match": m.Filter(must=[m.FieldCondition(key="project", match=m.MatchValue(value="beta"))]),
    "range": m.Filter(must=[m.FieldCondition(key="chunk_index", range=m.Range(gte=3, lt=7))]),
    "any+not": m.Filter(
        must=[m.FieldCondition(key="project", match=m.MatchAny(any=["alpha", "gamma"]))],
        must_not=[m.FieldCondition(key="chunk_index", match=m.MatchValue(value=0))],
    ),
    "should": m.Filter(
        should=[
            m.FieldCondition(key="chunk_index", match=m.MatchValue(value=1)),
            m.FieldCondition(key="chunk_index", match=m.MatchValue(value=2)),
        ]
    ),
    "has_id": m.Filter(must=[m.HasIdCondition(has_id=[str(uuid.uuid5(uuid.NAMESPACE_URL, "p4"))])]),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_query_points_with_a_filter_matches_local_mode(
    stores: tuple[QdrantClient, QdrantClient, str], name: str
) -> None:
    held, local, _ = stores
    q = [0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.0, 0.7]
    got = held.query_points("c", query=q, query_filter=FILTERS[name], limit=7, with_payload=True)
    want = local.query_points("c", query=q, query_filter=FILTERS[name], limit=7, with_payload=True)
    assert [p.id for p in got.points] == [p.id for p in want.points]
    assert [p.payload for p in got.points] == [p.payload for p in want.points]
    for g, w in zip(got.points, want.points, strict=True):
        assert g.score == pytest.approx(w.score, abs=1e-5)
    assert got.points, "the filter should match something"


def test_query_options_offset_threshold_vectors_and_payload_selection(
    stores: tuple[QdrantClient, QdrantClient, str],
) -> None:
    held, local, _ = stores
    q = [1.0] * DIM
    kw: dict[str, Any] = {"limit": 5, "offset": 3, "score_threshold": 0.1, "with_vectors": True}
    kw["with_payload"] = ["project"]
    got, want = held.query_points("c", query=q, **kw), local.query_points("c", query=q, **kw)
    assert [(p.id, p.payload) for p in got.points] == [(p.id, p.payload) for p in want.points]
    assert all(p.payload and set(p.payload) == {"project"} for p in got.points)
    for p, w in zip(got.points, want.points, strict=True):
        assert p.vector == pytest.approx(w.vector)


def test_scroll_pages_through_every_point(stores: tuple[QdrantClient, QdrantClient, str]) -> None:
    held, local, _ = stores
    flt = FILTERS["range"]
    seen: list[Any] = []
    offset: Any = None
    while True:
        page, offset = held.scroll("c", scroll_filter=flt, limit=40, offset=offset)
        assert len(page) <= 40
        seen.extend(page)
        if offset is None:
            break
    want, _ = local.scroll("c", scroll_filter=flt, limit=N)
    assert sorted(str(r.id) for r in seen) == sorted(str(r.id) for r in want)
    assert len({str(r.id) for r in seen}) == len(seen)  # no point twice across pages
    by_id = {str(r.id): r.payload for r in want}
    assert all(r.payload == by_id[str(r.id)] for r in seen)


def test_retrieve_and_count(stores: tuple[QdrantClient, QdrantClient, str]) -> None:
    held, local, _ = stores
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in (1, 50, 299)]
    got = held.retrieve("c", ids=ids, with_vectors=True)
    want = local.retrieve("c", ids=ids, with_vectors=True)
    assert sorted((str(r.id), str(r.payload)) for r in got) == sorted(
        (str(r.id), str(r.payload)) for r in want
    )
    assert held.count("c").count == N
    for flt in FILTERS.values():
        assert held.count("c", count_filter=flt).count == local.count("c", count_filter=flt).count


def test_collection_info_and_listing(stores: tuple[QdrantClient, QdrantClient, str]) -> None:
    held, _, _ = stores
    assert held.collection_exists("c")
    assert not held.collection_exists("nope")
    info = held.get_collection("c")
    assert info.points_count == N
    assert info.config.params.vectors.size == DIM  # type: ignore[union-attr]
    assert "c" in {c.name for c in held.get_collections().collections}


def test_writes_are_refused_with_a_clear_error(
    stores: tuple[QdrantClient, QdrantClient, str],
) -> None:
    held, _, _ = stores
    with pytest.raises(UnexpectedResponse) as err:
        held.upsert("c", points=[m.PointStruct(id=1, vector=[0.0] * DIM, payload={})])
    assert err.value.status_code == 403
    assert "read-only" in str(err.value)
    with pytest.raises(UnexpectedResponse):
        held.delete("c", points_selector=m.PointIdsList(points=[1]))
    assert held.count("c").count == N


def test_unsupported_queries_say_what(stores: tuple[QdrantClient, QdrantClient, str]) -> None:
    held, _, _ = stores
    with pytest.raises(UnexpectedResponse) as err:
        held.query_points("c", query=[0.1] * DIM, using="named")
    assert err.value.status_code == 400
    assert "named vector" in str(err.value)


def test_the_cli_finds_the_holder_and_falls_back_when_it_is_gone(
    stores: tuple[QdrantClient, QdrantClient, str],
) -> None:
    _, _, path = stores
    url = holder_url(path)
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    reader = open_sink(None, None, path, "c", False, 0)
    try:
        assert isinstance(reader, ServerSink)  # not a second open of the held store
        assert reader.count() == N
        assert len(reader.search([0.5] * DIM, 3)) == 3
    finally:
        reader.close()


def test_api_key_is_required_when_configured(tmp_path: Path) -> None:
    sink = EdgeSink(str(tmp_path), "c", True, DIM)
    url = sink.serve_reads(("127.0.0.1", 0), "s3cret")
    try:
        assert holder_url(str(tmp_path)) is not None  # health needs no key
        anonymous = QdrantClient(url=url, timeout=10)
        with pytest.raises(UnexpectedResponse) as err:
            anonymous.count("c")
        assert err.value.status_code == 401
        anonymous.close()
        keyed = QdrantClient(url=url, api_key="s3cret", timeout=10, https=False)
        assert keyed.count("c").count == 0
        keyed.close()
    finally:
        sink.close()
    assert not (tmp_path / ADDRESS_FILE).exists()  # removed with the store's release
    assert holder_url(str(tmp_path)) is None


def test_a_stale_address_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ADDRESS_FILE).write_text('{"url": "http://127.0.0.1:9", "pid": 1}')
    assert holder_url(str(tmp_path)) is None


def test_a_port_reused_by_the_holder_of_another_store_is_not_taken_for_ours(
    tmp_path: Path,
) -> None:
    other = EdgeSink(str(tmp_path / "other"), "c", True, DIM)
    url = other.serve_reads(("127.0.0.1", 0), None)
    try:
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / ADDRESS_FILE).write_text(json.dumps({"url": url, "pid": 1}))
        assert holder_url(str(tmp_path / "other")) == url
        assert holder_url(str(tmp_path / "mine")) is None
    finally:
        other.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("0.0.0.0:6333", ("0.0.0.0", 6333)), ("off", None),
     (":7000", ("127.0.0.1", 7000)), ("[::1]:80", ("::1", 80))],
)  # fmt: skip
def test_parse_address(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["6333", "host:", "host:99999", "host:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# ------------------------------------------------------------------ a sharded import: fan-out
@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QdrantClient, Any]]:
    """The same points split over three real stores, each with its read API; the first one's
    peers are the other two (as the operator configures them). Yields (client of shard 0's
    read API, local mode with every point)."""
    pts = _points()
    sinks = []
    for i in range(3):
        sink = EdgeSink(str(tmp_path_factory.mktemp(f"shard{i}")), "c", True, DIM)
        mine = pts[i::3]
        sink.upsert([str(p.id) for p in mine], [p.vector for p in mine], [p.payload for p in mine])  # type: ignore[misc]
        sinks.append(sink)
    peers = [s.serve_reads(("127.0.0.1", 0), None) for s in sinks[1:]]
    url = sinks[0].serve_reads(("127.0.0.1", 0), None, peers)
    local = QdrantClient(":memory:")
    local.create_collection(
        "c", vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE)
    )
    local.upsert("c", points=pts, wait=True)
    held = QdrantClient(url=url, timeout=10)
    try:
        yield held, local
    finally:
        held.close()
        local.close()
        for s in sinks:
            s.close()


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_a_sharded_import_answers_as_one_collection(
    sharded: tuple[QdrantClient, QdrantClient], name: str
) -> None:
    held, local = sharded
    flt = FILTERS[name]
    q = [0.1, 0.9, -0.3, 0.2, 0.5, -0.7, 0.3, 0.0]
    got = held.query_points("c", query=q, query_filter=flt, limit=6, offset=2, with_payload=True)
    want = local.query_points("c", query=q, query_filter=flt, limit=6, offset=2, with_payload=True)
    assert [p.id for p in got.points] == [p.id for p in want.points]
    assert held.count("c", count_filter=flt).count == local.count("c", count_filter=flt).count
    seen: list[Any] = []
    offset: Any = None
    while True:
        page, offset = held.scroll("c", scroll_filter=flt, limit=25, offset=offset)
        seen.extend(str(r.id) for r in page)
        if offset is None:
            break
    every, _ = local.scroll("c", scroll_filter=flt, limit=N)
    assert seen == sorted(seen, key=lambda i: uuid.UUID(i).int)  # Qdrant's scroll order
    assert sorted(seen) == sorted(str(r.id) for r in every)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in (0, 1, 2, 3)]
    assert sorted(str(r.id) for r in held.retrieve("c", ids=ids)) == sorted(ids)


def test_a_sharded_import_reports_every_point_and_finds_any_by_id(
    sharded: tuple[QdrantClient, QdrantClient],
) -> None:
    held, _ = sharded
    assert held.get_collection("c").points_count == N  # not one shard's third
    url = str(held._client.rest_uri)  # type: ignore[attr-defined]
    for i in (0, 1, 2):  # one point on each shard, asked of shard 0
        pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}"))
        with urllib.request.urlopen(f"{url}/collections/c/points/{pid}", timeout=10) as resp:
            assert json.loads(resp.read())["result"]["id"] == pid


def test_a_shard_that_does_not_answer_fails_the_read_with_503(tmp_path: Path) -> None:
    sink = EdgeSink(str(tmp_path), "c", True, DIM)
    url = sink.serve_reads(("127.0.0.1", 0), None, ["http://127.0.0.1:9"])
    client = QdrantClient(url=url, timeout=10)
    try:
        with pytest.raises(UnexpectedResponse) as err:
            client.count("c")
        assert err.value.status_code == 503
        assert "retry" in str(err.value)
    finally:
        client.close()
        sink.close()


def test_an_address_in_use_costs_the_reads_not_the_import(tmp_path: Path) -> None:
    first = EdgeSink(str(tmp_path / "a"), "c", True, DIM)
    url = first.serve_reads(("127.0.0.1", 0), None)
    assert url is not None
    port = int(url.rsplit(":", 1)[1])
    second = EdgeSink(str(tmp_path / "b"), "c", True, DIM)
    try:
        assert second.serve_reads(("127.0.0.1", port), None) is None
        second.upsert(["6f1c1e9e-5b7a-4c1e-9a53-0c5e1d8b6a10"], [[1.0] * DIM], [{}])
        assert second.count() == 1
        assert holder_url(str(tmp_path / "b")) is None
    finally:
        second.close()
        first.close()


def test_the_fields_searches_filter_on_are_indexed(tmp_path: Path) -> None:
    """A filtered query uses a payload index, not a scan (and the filter tests above run
    against these indexes, compared with local mode)."""
    from importer.sink import INDEXED_FIELDS

    sink = EdgeSink(str(tmp_path), "c", True, DIM)
    try:
        assert set(INDEXED_FIELDS) <= set(sink.shard.info().payload_schema)
    finally:
        sink.close()
    again = EdgeSink(str(tmp_path), "c", True, DIM)  # reopening creates nothing twice
    again.close()


def _post(url: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_read_pinned_to_a_build_is_answered_from_that_build_or_503(tmp_path: Path) -> None:
    """``--switch-on-order``: the shard asked names its build (``X-Eio-Build``) to its peers;
    a peer without an open version of that build answers 503, never another build's points.
    A request without the header is answered as before."""
    from importer.fanout import BUILD_HEADER, LOCAL_HEADER
    from importer.sink import Builds

    pts = _points()
    peer = EdgeSink(str(tmp_path / "peer"), "c", True, DIM, builds=Builds("d1"))
    peer.upsert([str(p.id) for p in pts[:10]], [p.vector for p in pts[:10]], [{}] * 10)  # type: ignore[misc]
    peer_url = peer.serve_reads(("127.0.0.1", 0), None)
    assert peer_url is not None
    asked = EdgeSink(str(tmp_path / "asked"), "c", True, DIM, builds=Builds("d2", pin=True))
    url = asked.serve_reads(("127.0.0.1", 0), None, [peer_url])
    assert url is not None
    count = "/collections/c/points/count"
    try:
        assert _post(peer_url, count, {})[1]["result"]["count"] == 10  # no header: as before
        assert _post(peer_url, count, {BUILD_HEADER: "d1", LOCAL_HEADER: "1"})[0] == 200
        status, body = _post(peer_url, count, {BUILD_HEADER: "d2", LOCAL_HEADER: "1"})
        assert status == 503
        assert "no open version of build d2" in body["status"]["error"]
        status, body = _post(url, count, {})  # the asked shard answers from d2: the peer cannot
        assert status == 503, body
        assert "retry" in body["status"]["error"]
    finally:
        asked.close()
        peer.close()


# ------------------------------------------------------------------- queries by text
TEXTS = [
    "the importer was OOM-killed at its memory limit and resumed from its checkpoint",
    "a Qdrant collection alias moves readers to the new version in one step",
    "parsing CSV files with the csv module: reader, writer and dialects",
    "kubectl drain evicts the pod and the shard resumes on another node",
    "tokenizers split text into word pieces before the model embeds it",
]


@pytest.fixture(scope="module")
def held_text_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, Embedder]]:
    """(read API URL, store path, the real model): real sentence vectors, held and served by
    an EdgeSink that embeds query text with the model, as a running import does."""
    embedder = Embedder(DEFAULT_MODEL, None, None, 0)
    path = str(tmp_path_factory.mktemp("edge-text"))
    sink = EdgeSink(path, "c", True, int(embedder.info.dim))
    vectors = embedder.embed(TEXTS)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, t)) for t in TEXTS]
    payloads = [{"source": f"s{i}.jsonl", "chunk_index": 0, "text": t} for i, t in enumerate(TEXTS)]
    sink.upsert(ids, [v.tolist() for v in vectors], payloads)
    url = sink.serve_reads(("127.0.0.1", 0), None, text=TextModel.of(embedder))
    assert url is not None
    try:
        yield url, path, embedder
    finally:
        sink.close()


def test_a_query_by_text_is_embedded_by_the_holder(
    held_text_store: tuple[str, str, Embedder],
) -> None:
    """Qdrant's inference object (qdrant-client's ``Document``, sent as is with
    ``cloud_inference``) answers as the query by the vector the import's model makes."""
    url, _, embedder = held_text_store
    client = QdrantClient(url=url, timeout=30, cloud_inference=True)
    try:
        by_text = client.query_points(
            "c",
            query=m.Document(
                text="memory limit kill", model=f"sentence-transformers/{embedder.info.name}"
            ),
            limit=3,
        ).points
        vector = embedder.embed(["memory limit kill"])[0].tolist()
        by_vector = client.query_points("c", query=vector, limit=3).points
    finally:
        client.close()
    assert [(p.id, round(p.score, 5)) for p in by_text] == [
        (p.id, round(p.score, 5)) for p in by_vector
    ]
    assert by_text[0].id == str(uuid.uuid5(uuid.NAMESPACE_URL, TEXTS[0]))


def test_a_query_by_text_for_another_model_is_refused(
    held_text_store: tuple[str, str, Embedder],
) -> None:
    url = held_text_store[0]
    body = {"query": {"text": "memory", "model": "BAAI/bge-small-en-v1.5"}, "limit": 1}
    req = urllib.request.Request(url + "/collections/c/points/query", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert "embeds with paraphrase-MiniLM-L3-v2" in err.value.read().decode()


def test_search_through_the_holder_prints_what_a_direct_open_prints(
    held_text_store: tuple[str, str, Embedder],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``embedding-importer search`` on a held store asks the holder (which embeds the query),
    and prints the hits a direct open of the same points prints."""
    url, path, embedder = held_text_store
    query = "moving searches to a new collection version"
    with caplog.at_level("INFO", logger="importer"):
        assert cli.main(["search", "--collection", "c", "--qdrant-path", path, "--limit", "3",
                         "--log-level", "INFO", query]) == 0  # fmt: skip
    through_holder = capsys.readouterr().out
    assert f"searching through its importer, {url}" in caplog.text
    local = QdrantClient(":memory:")
    try:
        dim = int(embedder.info.dim)
        local.create_collection("c", m.VectorParams(size=dim, distance=m.Distance.COSINE))
        vectors = embedder.embed(TEXTS)
        local.upsert("c", points=[
            m.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, t)), vector=v.tolist(),
                          payload={"source": f"s{i}.jsonl", "chunk_index": 0, "text": t})
            for i, (t, v) in enumerate(zip(TEXTS, vectors, strict=True))
        ], wait=True)  # fmt: skip
        hits = local.query_points("c", query=embedder.embed([query])[0].tolist(), limit=3).points
    finally:
        local.close()
    assert through_holder.splitlines()[0].startswith(f"{hits[0].score:.3f}  s1.jsonl#0")
    shown = [line.split()[1] for line in through_holder.splitlines() if not line.startswith(" ")]
    assert shown == [f"{(h.payload or {})['source']}#0" for h in hits]
