"""The `seqcohort` root command: every command module registers here, and none imports this one."""

from __future__ import annotations

import click

from seqcohort.cli import build, cohorts, data, demo, evaluate, experiment, living, serve, studio
from seqcohort.cli.options import setup_logging, stop_on_sigterm


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors (for batch jobs).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def cli(quiet: bool, verbose: bool) -> None:
    """seqcohort: event sequences -> transformer embeddings -> named cohorts, served."""
    setup_logging(quiet, verbose)
    stop_on_sigterm()


for command in (data.synth, data.dataset, build.run, build.train, build.embed, build.cluster, build.assign,
                cohorts.cohorts, cohorts.name, cohorts.export, demo.demo, evaluate.evaluate, evaluate.rfm,
                experiment.experiment, serve.serve, living.refresh, living.changes, living.forget):
    cli.add_command(command)
for command in (studio.report, studio.lookalike):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="seqcohort")
