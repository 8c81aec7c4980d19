"""`bendi kb ...`: knowledge bases: create, add documents, search, ask with citations."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bendi.cli.common import echo_json, human_age, human_bytes, services, table
from bendi.core.collect import Collector
from bendi.core.context import RequestContext
from bendi.errors import InvalidRequest
from bendi.kb.answer import citations
from bendi.kb.retrieval import Hit
from bendi.kb.service import AddResult, expand_paths
from bendi.runtime.types import ReasoningDelta, TextDelta


@click.group("kb")
def kb_group() -> None:
    """Private knowledge bases: answer questions from your documents, with citations."""


@kb_group.command("create")
@click.argument("name")
@click.option("--embed", default="all-minilm", show_default=True,
              help="Embedding model: the bundled all-minilm (English) or a GGUF embedding model in the store.")
@click.pass_context
def create(ctx: click.Context, name: str, embed: str) -> None:
    """Create an empty knowledge base."""
    info = services(ctx).kb.create(name, embed=embed)
    click.echo(f"created knowledge base {info['name']} (embeddings: {info['embed']})")


@kb_group.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file.")
@click.pass_context
def add(ctx: click.Context, name: str, paths: tuple[Path, ...], as_json: bool) -> None:
    """Add files and folders (txt, md, html, pdf, docx, csv, xlsx). Unchanged files are skipped."""
    kb = services(ctx).kb
    kb.info(name)  # fail before walking folders when the knowledge base does not exist
    todo = expand_paths(list(paths))
    if not todo:
        raise InvalidRequest("no supported files found (txt, md, html, pdf, docx, csv, xlsx)")
    results: list[AddResult] = []
    if as_json:
        for doc_name, path in todo:
            result = kb.add_file(name, path, doc_name=doc_name)
            results.append(result)
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        with click.progressbar(todo, label="adding", file=sys.stderr,
                               item_show_func=lambda item: item[0] if item else "") as bar:
            for doc_name, path in bar:
                results.append(kb.add_file(name, path, doc_name=doc_name))
        for r in results:
            if r.status == "failed":
                click.echo(f"  failed     {r.name}: {r.error}", err=True)
            elif r.status != "unchanged":
                extra = f" ({'; '.join(r.warnings)})" if r.warnings else ""
                click.echo(f"  {r.status:<10} {r.name}: {r.chunks} chunks{extra}")
        counts = {s: sum(1 for r in results if r.status == s) for s in ("added", "updated", "unchanged", "failed")}
        click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
    if any(r.status == "failed" for r in results):
        ctx.exit(1)


@kb_group.command("ls")
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--queries", "queries_file", type=click.File("r", encoding="utf-8"),
              help='JSON Lines of {"id", "question"}; one JSON line per query is written out.')
@click.option("--json", "as_json", is_flag=True)
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
        for n, line in enumerate(queries_file, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                question = str(item["question"])
            except (ValueError, KeyError, TypeError):
                raise InvalidRequest(f"line {n} of {queries_file.name}: expected {{\"id\", \"question\"}}") from None
            result = kb.search(name, question, include_all=include_all, **overrides)
            click.echo(json.dumps({"id": item.get("id"), **result.to_dict()}, ensure_ascii=False))
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


@kb_group.command("ask")
@click.argument("name")
@click.argument("question")
@click.option("-m", "--model", default="smollm2:135m", show_default=True, help="Chat model to answer with.")
@click.option("-k", "--top-k", type=int, help="Sources given to the model (default 5).")
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.2, show_default=True)
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
    if as_json:
        echo_json({"question": run.question, "answer": result.text, "reasoning": result.reasoning or None,
                   "model": run.model if run.sources else None, "found": bool(run.sources),
                   "citations": cited,
                   "sources": [dict(h.to_dict(), number=i) for i, h in enumerate(run.sources, 1)],
                   "finish_reason": result.done.finish_reason})
        return
    click.echo()
    if run.sources:
        click.echo()
        click.echo("Sources:")
        for i, h in enumerate(run.sources, 1):
            marker = "*" if i in cited else " "
            click.echo(f" {marker}[{i}] {h.location()}")
        if not cited:
            click.echo(click.style("(the model cited none of the sources)", dim=True))


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
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rm(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a knowledge base and all its documents."""
    kb = services(ctx).kb
    info = kb.info(name)
    if not yes and sys.stdin.isatty():
        click.confirm(f"delete {name} with {info['documents']} documents?", abort=True)
    kb.remove(name)
    click.echo(f"deleted knowledge base {name}")


def register(group: click.Group) -> None:
    group.add_command(kb_group)
