"""`cohorts` (table, rename, pin), `name` and `export`: what marketers do with cohorts."""

from __future__ import annotations

import json

import click

from embeddings.errors import SeqcohortError
from seqcohort.cli.options import config_options, console, handle_errors, load_cfg, workspace_option


@click.group(invoke_without_command=True)
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print cohorts.json instead of the table.")
@click.pass_context
@handle_errors
def cohorts(ctx: click.Context, workspace: str, as_json: bool) -> None:
    """Print the current cohorts; `rename` and `pin` set human overrides."""
    ctx.obj = {"workspace": workspace}
    if ctx.invoked_subcommand is not None:
        return
    from embeddings.cohorts.cohort_set import CohortSet
    from embeddings.living.changes import read_drift
    from embeddings.workspace import Workspace
    from seqcohort.report import print_cohorts

    cs = CohortSet.load(Workspace(workspace).path("cohorts.json"))
    drift = read_drift(Workspace(workspace).current())
    if as_json:
        click.echo(json.dumps(cs.to_dict(), indent=2))
    else:
        steps = set(json.loads((Workspace(workspace).current() / "version.json").read_text()).get("steps", []))
        ids_kept = "refresh" in steps or not steps & {"train", "cluster"}  # a run or cluster matches no ids
        deltas = {c["id"]: c["size_after"] - c["size_before"] for c in drift["cohorts"]} if drift and ids_kept else None
        print_cohorts(console, cs, deltas)


def _overrides_and_check(workspace: str, cohort_id: int):
    from embeddings.cohorts.cohort_set import CohortSet
    from embeddings.naming import Overrides
    from embeddings.workspace import Workspace

    ws = Workspace(workspace)
    cs = CohortSet.load(ws.path("cohorts.json"))
    try:
        cs.by_id(cohort_id)
    except KeyError:
        raise SeqcohortError(
            f"No cohort {cohort_id} in {ws.current()}; valid ids: {[c.id for c in cs.cohorts]}."
        ) from None
    return ws, Overrides(ws.root)


@cohorts.command("rename")
@click.argument("cohort_id", type=int)
@click.argument("name")
@click.option("--description", default=None)
@click.pass_context
@handle_errors
def cohorts_rename(ctx: click.Context, cohort_id: int, name: str, description: str | None) -> None:
    """Give cohort COHORT_ID a human name that wins over any namer and survives re-naming."""
    from embeddings.config import load_config
    from seqcohort import pipeline

    ws, ov = _overrides_and_check(ctx.obj["workspace"], cohort_id)
    ov.rename(cohort_id, name, description)
    pipeline.apply_overrides_only(ws.root, load_config())
    console.print(f"cohort {cohort_id} is now {name!r} (override saved in {ws.root / 'overrides.json'})")


@cohorts.command("pin")
@click.argument("cohort_id", type=int)
@click.option("--unpin", is_flag=True, help="Remove the pin.")
@click.pass_context
@handle_errors
def cohorts_pin(ctx: click.Context, cohort_id: int, unpin: bool) -> None:
    """Pin cohort COHORT_ID's current name so later namers keep it."""
    from embeddings.cohorts.cohort_set import CohortSet

    ws, ov = _overrides_and_check(ctx.obj["workspace"], cohort_id)
    if unpin:
        ov.unpin(cohort_id)
        console.print(f"cohort {cohort_id} unpinned")
        return
    c = CohortSet.load(ws.path("cohorts.json")).by_id(cohort_id)
    ov.pin(cohort_id, c.name, c.description)
    console.print(f"cohort {cohort_id} pinned as {c.name!r}")


@click.command()
@workspace_option
@click.option("--namer", type=click.Choice(["stats", "llm", "local"]), default=None,
              help="Namer to use (default: naming.namer from the config).")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.")
@click.option("--model", default=None, help="Model name for --namer llm.")
@click.option("--model-dir", default=None, help="transformers model directory for --namer local.")
@config_options
@handle_errors
def name(workspace: str, namer: str | None, base_url: str | None, model: str | None, model_dir: str | None,
         config_path: str | None, sets: tuple[str, ...]) -> None:
    """Re-name the current cohorts without re-embedding or re-clustering; publishes a new version."""
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts

    cfg = load_cfg(config_path, sets)
    flags = {"namer": namer, "base_url": base_url, "model": model, "model_dir": model_dir}
    cfg = cfg.model_copy(update={"naming": cfg.naming.model_copy(
        update={k: v for k, v in flags.items() if v is not None})})  # a new config: the loaded one stays as read
    cs = pipeline.rename(workspace, cfg)
    print_cohorts(console, cs)
    fell_back = [c for c in cs.cohorts if c.fallback_reason]
    if fell_back:
        console.print(f"[yellow]{len(fell_back)} cohort(s) fell back to the statistics namer:[/] "
                      + "; ".join(f"{c.id}: {c.fallback_reason}" for c in fell_back))


@click.command()
@workspace_option
@click.option("--out", required=True, type=click.Path(), help="Output file (.csv or .parquet) or directory.")
@click.option("--cohort", "cohort_ids", type=int, multiple=True, help="Only these cohort ids (repeatable).")
@handle_errors
def export(workspace: str, out: str, cohort_ids: tuple[int, ...]) -> None:
    """Export members of the current cohorts (user_id, cohort_id, cohort_name, confidence) in one step."""
    from seqcohort.export import export_members

    path, n = export_members(workspace, out, list(cohort_ids))
    console.print(f"exported {n:,} members -> {path}")

