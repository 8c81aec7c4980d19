"""`bendi kb ...`: knowledge bases: create, add documents, search, ask with citations."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bendi.cli.common import (
    confirm,
    echo_json,
    human_age,
    human_bytes,
    library_messages,
    services,
    table,
)
from bendi.core.collect import Collector
from bendi.core.context import RequestContext
from bendi.errors import BendiError, InvalidRequest
from bendi.kb.answer import check_answer, citations
from bendi.kb.retrieval import Hit
from bendi.kb.service import AddResult, expand_paths
from bendi.runtime.types import ReasoningDelta, TextDelta


@click.group("kb")
def kb_group() -> None:
    """Private knowledge bases: answer questions from your documents, with citations."""


@kb_group.command("create")
@click.argument("name")
@click.option("--embed", default="multilingual-e5-small", show_default=True,
              help="Embedding model: the bundled multilingual-e5-small (Chinese and 100 other languages),"
                   " all-minilm (English only), or a GGUF embedding model in the store.")
@click.pass_context
def create(ctx: click.Context, name: str, embed: str) -> None:
    """Create an empty knowledge base."""
    info = services(ctx).kb.create(name, embed=embed)
    click.echo(f"created knowledge base {info['name']} (embeddings: {info['embed']})")


@kb_group.command("demo")
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Build the demo knowledge base (sample Chinese and English documents shipped with bendi)."""
    from bendi.kb.demo import ensure_demo_kb

    with library_messages():
        name = ensure_demo_kb(services(ctx))
    click.echo(f"knowledge base {name} is ready: bendi kb ask {name} \"瓦斯浓度达到1.5%时应该怎么办？\"")


@kb_group.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file.")
@click.option("--no-embed", is_flag=True,
              help="Leave the vectors to the server (or the next kb add / kb embed): the documents are"
                   " searchable lexically at once.")
@click.pass_context
def add(ctx: click.Context, name: str, paths: tuple[Path, ...], as_json: bool, no_embed: bool) -> None:
    """Add files and folders (txt, md, html, pdf, docx, csv, xlsx; scanned PDFs and jpg/png/tiff
    images through OCR). Unchanged files are skipped; a bad file is reported and the rest go in."""
    kb = services(ctx).kb
    kb.info(name)  # fail before walking folders when the knowledge base does not exist
    todo = expand_paths(list(paths))
    if not todo:
        raise InvalidRequest("no supported files found (txt, md, html, pdf, docx, csv, xlsx, jpg, png, tiff)")
    results: list[AddResult] = []
    notes: list[list[str]] = []  # what libraries said about each file, shown after the progress line
    progress = _Progress(enabled=not as_json)
    for i, (doc_name, path) in enumerate(todo, 1):
        progress.file(i, len(todo), doc_name)
        with library_messages() as messages:
            result = kb.add_file(name, path, doc_name=doc_name, pages=progress.pages)
        results.append(result)
        notes.append(list(dict.fromkeys(messages)))
        progress.chunks += result.chunks
        if as_json:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    progress.done()
    if not as_json:
        for r, said in zip(results, notes, strict=True):
            if r.status == "failed":
                extra = f" ({'; '.join(said)})" if said else ""
                click.echo(f"  failed     {r.name}: {r.error}{extra}", err=True)
            elif r.status != "unchanged":
                extra = f" ({'; '.join([*r.warnings, *said])})" if (r.warnings or said) else ""
                click.echo(f"  {r.status:<10} {r.name}: {r.chunks} chunks{extra}")
        counts = {s: sum(1 for r in results if r.status == s) for s in ("added", "updated", "unchanged", "failed")}
        click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
    if not no_embed:
        _embed(kb, name, quiet=as_json)
    if any(r.status == "failed" for r in results):
        ctx.exit(1)


class _Progress:
    """One status line on stderr for long imports: files, pages of the current file, chunks so far."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.chunks = 0
        self._file = ""
        self._width = 0

    def file(self, i: int, n: int, name: str) -> None:
        self._file = f"file {i}/{n} {name}"
        self._show(self._file)

    def pages(self, done: int, total: int) -> None:
        self._show(f"{self._file}, page {done}/{total}")

    def _show(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"adding: {text} ({self.chunks} chunks)"[:120]
        click.echo("\r" + line.ljust(self._width), nl=False, err=True)
        self._width = len(line)

    def done(self) -> None:
        if self.enabled and self._width:
            click.echo("\r" + " " * self._width + "\r", nl=False, err=True)


def _embed(kb: Any, name: str, quiet: bool) -> None:
    """Embed the chunks waiting for vectors, with a progress bar; Ctrl-C leaves the rest pending."""
    pending = kb.index(name).vector_counts()["pending"]
    if not pending:
        return
    if quiet or not sys.stderr.isatty():
        kb.embed_pending(name)
        return
    with click.progressbar(length=pending, label="embedding", file=sys.stderr, show_pos=True) as bar:
        last = [0]

        def advance(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - last[0])
            last[0] = done

        try:
            kb.embed_pending(name, progress=advance)
        except KeyboardInterrupt:
            click.echo(f"\nstopped: the remaining vectors are embedded by the server or the next"
                       f" `bendi kb embed {name}`; search works meanwhile (lexically)", err=True)
            raise SystemExit(130) from None


@kb_group.command("embed")
@click.argument("name")
@click.pass_context
def embed_cmd(ctx: click.Context, name: str) -> None:
    """Embed the chunks still waiting for vectors (after kb add --no-embed or an interrupted run)."""
    kb = services(ctx).kb
    before = kb.index(name).vector_counts()["pending"]
    _embed(kb, name, quiet=False)
    counts = kb.index(name).vector_counts()
    click.echo(f"{name}: {counts['done']} chunks with vectors, {counts['pending']} pending"
               f" ({before - counts['pending']} embedded now)")


@kb_group.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """A knowledge base: documents, chunks, size, embedding model and vector progress."""
    info = services(ctx).kb.info(name)
    if as_json:
        echo_json(info)
        return
    v = info["vectors"]
    total = v["done"] + v["pending"]
    state = "embedding now" if v["running"] else ("waiting for the server or `bendi kb embed`" if v["pending"] else "done")
    click.echo(f"{info['name']}: {info['documents']} documents, {info['chunks']} chunks, {human_bytes(info['bytes'])}")
    click.echo(f"embeddings: {info['embed']}; vectors {v['done']}/{total} ({state})"
               + (f"; last error: {v['error']}" if v["error"] else ""))


@kb_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """Knowledge bases with their document and chunk counts."""
    items = services(ctx).kb.list_all()
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no knowledge bases yet: bendi kb create NAME")
        return
    click.echo(table(["NAME", "DOCUMENTS", "CHUNKS", "SIZE", "EMBEDDINGS", "CREATED"],
                     [[i["name"], i["documents"], i["chunks"], human_bytes(i["bytes"]), i["embed"],
                       human_age(i["created_at"])] for i in items]))


@kb_group.command("docs")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def docs(ctx: click.Context, name: str, as_json: bool) -> None:
    """Documents of a knowledge base: chunks, status, and files that failed."""
    listing = services(ctx).kb.documents(name)
    if as_json:
        echo_json(listing)
        return
    rows: list[list[Any]] = []
    for d in listing["documents"]:
        status = "ok" if not d["warnings"] else "; ".join(d["warnings"])
        rows.append([d["name"], d["format"], d["pages"] or "", d["n_chunks"], d["n_chars"], status])
    for f in listing["failures"]:
        rows.append([f["name"], "", "", 0, 0, f"failed: {f['error']}"])
    if not rows:
        click.echo(f"no documents in {name} yet: bendi kb add {name} PATH...")
        return
    click.echo(table(["DOCUMENT", "FORMAT", "PAGES", "CHUNKS", "CHARS", "STATUS"], rows))


def _hit_row(rank: int, h: Hit) -> list[Any]:
    snippet = " ".join(h.text.split())
    snippet = snippet[:60] + ("…" if len(snippet) > 60 else "")
    mark = "" if h.relevant else " (below threshold)"
    return [rank, f"{h.fused:.4f}", f"{h.lexical:.2f}", "" if h.vector is None else f"{h.vector:.2f}",
            h.location() + mark, snippet]


def _print_hits(hits: list[Hit]) -> None:
    click.echo(table(["#", "FUSED", "LEXICAL", "VECTOR", "SOURCE", "TEXT"],
                     [_hit_row(i, h) for i, h in enumerate(hits, 1)]))


@kb_group.command("search")
@click.argument("name")
@click.argument("query", required=False)
@click.option("--queries", "queries_file", type=click.File("rb"),
              help='JSON Lines of {"id", "question"} (or one plain question a line); one JSON line out per'
              ' line in, bad lines with their "error"; exit status 1 when any line failed.')
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "include_all", is_flag=True, help="Also show chunks below the relevance threshold, marked.")
@click.option("-k", "--top-k", type=int, help="Results to return (default: the knowledge base's, 5).")
@click.option("--lexical-weight", type=float, help="Weight of the lexical (BM25) leg in the fusion.")
@click.option("--vector-weight", type=float, help="Weight of the vector leg in the fusion.")
@click.pass_context
def search_cmd(ctx: click.Context, name: str, query: str | None, queries_file: Any, as_json: bool,
               include_all: bool, top_k: int | None, lexical_weight: float | None,
               vector_weight: float | None) -> None:
    """Retrieval only: ranked chunks with their sources and scores. No result means not found."""
    kb = services(ctx).kb
    overrides = {"top_k": top_k, "lexical_weight": lexical_weight, "vector_weight": vector_weight}
    if (query is None) == (queries_file is None):
        raise InvalidRequest("give either a QUERY or --queries FILE")
    if queries_file is not None:
        kb.info(name)  # a missing knowledge base fails once, not once per line
        failed = 0
        for n, line in enumerate(queries_file, 1):
            # one output line per input line, so outputs and inputs can be zipped back together
            out = _batch_query(kb, name, n, line, include_all, overrides)
            failed += "error" in out
            click.echo(json.dumps(out, ensure_ascii=False))
        if failed:
            click.echo(f"{failed} of {n} lines failed (see their \"error\")", err=True)
            ctx.exit(1)
        return
    assert query is not None
    result = kb.search(name, query, include_all=include_all, **overrides)
    if as_json:
        echo_json(result.to_dict())
        return
    if not result.hits:
        click.echo("not found in the knowledge base (nothing passes the relevance threshold; --all shows the rest)")
        return
    _print_hits(result.hits)


def _batch_query(kb: Any, name: str, n: int, raw: bytes, include_all: bool,
                 overrides: dict[str, Any]) -> dict[str, Any]:
    """The result of one line of a --queries file, or {"line", "id", "error"} saying why it has none."""
    ident: Any = None
    try:
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("not UTF-8 text") from None
        stripped = line.strip()
        if not stripped:
            raise InvalidRequest("blank line")
        if stripped.startswith("{"):
            try:
                item = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(item, dict):
                raise InvalidRequest('expected a JSON object {"id", "question"}')
            ident = item.get("id")
            question = item.get("question", item.get("query"))
            if not isinstance(question, str):
                raise InvalidRequest('no "question" string in the object')
        else:
            question = stripped  # a plain line is the question itself
        result = kb.search(name, question, include_all=include_all, **overrides)
        return {"line": n, "id": ident, **result.to_dict()}
    except BendiError as exc:
        return {"line": n, "id": ident, "error": exc.message}


@kb_group.command("ask")
@click.argument("name")
@click.argument("question")
@click.option("-m", "--model", default="smollm2:135m", show_default=True, help="Chat model to answer with.")
@click.option("-k", "--top-k", type=int, help="Sources given to the model (default 5).")
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Longest answer, in tokens.")
@click.option("--temperature", type=float, default=0.2, show_default=True,
              help="Randomness of the answer (0: always the likeliest words).")
@click.option("--hide-thinking", is_flag=True, help="Leave out DeepSeek-R1 style reasoning.")
@click.option("--json", "as_json", is_flag=True, help="Answer, reasoning, sources and citations as JSON.")
@click.pass_context
def ask(ctx: click.Context, name: str, question: str, model: str, top_k: int | None, max_tokens: int,
        temperature: float, hide_thinking: bool, as_json: bool) -> None:
    """Answer from the knowledge base, citing sources as [1] [2]."""
    run = services(ctx).generation.ask_blocking(
        name, RequestContext.local("cli kb ask"), question=question, model=model, top_k=top_k,
        max_tokens=max_tokens, options={"temperature": temperature}, think=False if hide_thinking else None)
    collector = Collector()
    thinking = False
    for event in run.events:
        collector.add(event)
        if isinstance(event, ReasoningDelta):
            if not as_json:
                if not thinking:
                    click.echo(click.style("Thinking...", dim=True))
                    thinking = True
                click.echo(click.style(event.text, dim=True), nl=False)
        elif isinstance(event, TextDelta):
            if thinking and not as_json:
                click.echo(click.style("\n...done thinking.\n", dim=True))
                thinking = False
            if not as_json:
                click.echo(event.text, nl=False)
    result = collector.result()
    cited = citations(result.text, len(run.sources))
    check = check_answer(result.text, run.question or "", run.sources) if run.sources else None
    if as_json:
        echo_json({"question": run.question, "answer": result.text, "reasoning": result.reasoning or None,
                   "model": run.model if run.sources else None, "found": bool(run.sources), "citations": cited,
                   "cited_sources": check["citations"] if check else [],
                   "grounded": check["grounded"] if check else None,
                   "unsupported": check["unsupported"] if check else [],
                   "sources": [dict(h.to_dict(), number=i) for i, h in enumerate(run.sources, 1)],
                   "finish_reason": result.done.finish_reason})
        return
    click.echo()
    if run.sources and check is not None:
        click.echo()
        click.echo("Sources:")
        quotes = {c["number"]: c["quote"] for c in check["citations"]}
        for i, h in enumerate(run.sources, 1):
            marker = "*" if i in cited else " "
            click.echo(f" {marker}[{i}] {h.location()}")
            if i in quotes and quotes[i]:
                click.echo(click.style(f"      「{quotes[i]}」", dim=True))
        if not cited:
            click.echo(click.style("(the model cited none of the sources)", dim=True))
        elif not check["grounded"]:
            missing = "、".join(check["unsupported"][:6])
            click.echo(click.style(f"check: the cited sources do not contain {missing}; verify before relying on"
                                   " this answer", fg="yellow"))


@kb_group.command("rm-doc")
@click.argument("name")
@click.argument("document")
@click.pass_context
def rm_doc(ctx: click.Context, name: str, document: str) -> None:
    """Remove a document (and its chunks, from every index)."""
    removed = services(ctx).kb.remove_document(name, document)
    click.echo(f"removed {removed.name} ({removed.n_chunks} chunks) from {name}")


@kb_group.command("rm")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
def rm(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a knowledge base and all its documents."""
    kb = services(ctx).kb
    info = kb.info(name)
    confirm(f"Delete knowledge base {name} with its {info['documents']} documents?", yes)
    kb.remove(name)
    click.echo(f"deleted knowledge base {name}")


def register(group: click.Group) -> None:
    group.add_command(kb_group)
