"""The ``agent`` command line.

Exit status: 0 ok (for ``run``: stopped cleanly by SIGTERM/SIGINT), 1 drift
or findings (``verify``; ``replay`` when entries stay pending), 2 error (bad
configuration, journal locked/corrupt, unreachable mirror during verify).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.errors import AgentError
from agent.operate.config import Config, ConfigError, load_config
from agent.operate.logs import configure_logging
from journal import JournalError

__all__ = ["main", "cli"]

EXIT_HELP = """
\b
Exit status: 0 ok (run: clean stop by signal), 1 drift or findings,
2 error (configuration, journal, unreachable mirror).
"""


def _option_decorators(select: bool) -> list[Callable[..., Any]]:
    target_help = "local:PATH, rsync:DEST or msync[:CONSOLE]; repeatable; replaces the file's targets."
    if select:
        target_help = (
            "NAME: only this target (default: all). Or a SPEC as for `agent run` (msync: not msync)."
        )
    return [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML config (default $AGENT_CONFIG, else /etc/msync-agent/agent.toml).",
        ),
        click.option("--root", help="The watched tree."),
        click.option("--journal", help="The journal directory (outside the root)."),
        click.option(
            "--target", "targets", multiple=True, metavar="NAME|SPEC" if select else "SPEC", help=target_help
        ),
        click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="Repeatable."),
        click.option(
            "--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
        ),
    ]


def _root_from_journal(config: Config) -> Config:
    """A read-only command given only ``--journal``: the journal records the
    root it was created for, so take it from there."""
    import dataclasses
    import os

    from journal import Journal

    if not (config.journal / "data.mdb").exists():
        raise ConfigError(
            f"root: missing, and there is no journal at {config.journal} to take it from",
            hint="pass --root or --config, or check --journal",
        )
    with Journal.open(config.journal, mode="read") as journal:
        stored = journal.stored_root()
    if stored is None:
        raise ConfigError("root: missing, and the journal does not record one", hint="pass --root")
    return dataclasses.replace(config, root=Path(os.fsdecode(stored)))


def _config_options(
    fn: Callable[..., Any] | None = None,
    *,
    select: bool = False,
    need_root: bool = True,
    root_from_journal: bool = False,
) -> Any:
    """The configuration flags every command takes; they override the file.

    With ``select`` (replay, verify), a ``--target`` value without ``:`` is the
    NAME of the one target to work on rather than a spec (write ``msync:``
    for an msync spec with the default console); it reaches the command as
    ``selected``. With ``root_from_journal`` (read-only commands), ``--root``
    may be left out: the journal's own record of its root is used.
    """
    if fn is None:
        return functools.partial(
            _config_options, select=select, need_root=need_root, root_from_journal=root_from_journal
        )

    @functools.wraps(fn)
    def wrapper(
        config_path: Path | None,
        root: str | None,
        journal: str | None,
        targets: tuple[str, ...],
        excludes: tuple[str, ...],
        log_level: str | None,
        **kwargs: Any,
    ) -> Any:
        specs = [t for t in targets if ":" in t or not select]
        names = [t for t in targets if ":" not in t and select]
        if len(names) > 1:
            raise click.UsageError("--target NAME may be given once")
        if select:
            kwargs["selected"] = names[0] if names else None
        overrides = {"root": root, "journal": journal, "targets": specs, "exclude": list(excludes)}
        overrides["log_level"] = log_level
        config = load_config(config_path, overrides, need_root=need_root and not root_from_journal)
        if root_from_journal and config.root is None:
            config = _root_from_journal(config)
        configure_logging(config.log_level)
        return fn(config, **kwargs)

    for option in reversed(_option_decorators(select)):
        wrapper = option(wrapper)
    return wrapper


@click.group(epilog=EXIT_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="msync-agent")
def cli() -> None:
    """msync-agent: watch a tree, journal every change durably, replay it to mirrors."""


@cli.command(epilog=EXIT_HELP)
@_config_options
def run(config: Config) -> int:
    """Run the agent in the foreground until SIGTERM/SIGINT."""
    from agent.daemon import run_agent

    return run_agent(config)


@cli.command(epilog=EXIT_HELP)
@click.option(
    "--full", is_flag=True, help="Compare the whole tree, not only what changed since the checkpoint."
)
@_config_options
def scan(config: Config, full: bool) -> int:
    """Compare the tree with the manifest and journal the differences."""
    from agent.operate.progress import Progress
    from agent.scan.scanner import Scanner
    from agent.tree.excludes import Excludes
    from journal import Journal, JournalLocked

    try:
        journal = Journal.open(config.journal, root=str(config.root), mode="agent")
    except JournalLocked:
        journal = Journal.open(config.journal, root=str(config.root), mode="client")
    with journal, Progress("scan") as progress:
        checkpoint = journal.checkpoint()
        since = None if full or checkpoint is None else checkpoint.time_ns
        scanner = Scanner(
            config.root,
            journal,
            Excludes(list(config.exclude)),
            progress=lambda p: progress.set(p.files_seen + p.dirs_seen),
            helpers=config.scan_helpers,
        )
        report = scanner.scan(since_ns=since)
    summary = report.summary()
    queued = int(summary["enqueued_changes"]) + int(summary["enqueued_deletes"])
    click.echo(
        f"scan ({'full' if since is None else 'since checkpoint'}): {summary['files_seen']} files, "
        f"{summary['dirs_seen']} dirs, {queued} entries journaled, {summary['errors']} errors"
    )
    return 0


@cli.command(epilog=EXIT_HELP)
@click.option(
    "--since", "since", required=True, metavar="TIME", help="ISO 8601, an age (90m, 2h, 3d) or seq:N."
)
@click.option("--host", metavar="HOST", help="Only this member of an msync target.")
@click.option("--dry-run", is_flag=True, help="List the paths; change nothing.")
@_config_options(select=True, root_from_journal=True)
def replay(config: Config, since: str, selected: str | None, host: str | None, dry_run: bool) -> int:
    """Re-ship the current state of every path touched since TIME."""
    from agent.operate.replay import run_replay

    return run_replay(config, since, selected, host, dry_run, sys.stdout)


@cli.command(epilog=EXIT_HELP)
@click.option("--repair", is_flag=True, help="Queue drifted paths for re-shipping.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--lag-max",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a pending difference may age and still count as lag (default: 2 x settle_ms + retry_max).",
)
@_config_options(select=True, root_from_journal=True)
def verify(config: Config, selected: str | None, repair: bool, as_json: bool, lag_max: float | None) -> int:
    """Audit the tree against the journal and every mirror against the tree."""
    from agent.operate.verify import run_verify

    return run_verify(config, selected, repair, as_json, sys.stdout, lag_max)


@cli.command(epilog=EXIT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_config_options(need_root=False)
def status(config: Config, as_json: bool) -> int:
    """Pending work per target, checkpoint age, dead letters, journal size."""
    import json

    from agent.operate.status import collect_status, render_status

    doc = collect_status(config)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if as_json else render_status(doc) + "\n")
    return 0


@cli.command(epilog=EXIT_HELP)
@click.option("--host", metavar="HOST", help="Only this member of an msync target.")
@click.option(
    "--timeout",
    "timeout",
    default="10m",
    show_default=True,
    metavar="DURATION",
    help="Give up after this (0: never).",
)
@click.option("--since", "since", metavar="TIME|seq:N", help="Barrier at this time or seq instead of now.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_config_options(select=True, root_from_journal=True)
def wait(
    config: Config, selected: str | None, host: str | None, timeout: str, since: str | None, as_json: bool
) -> int:
    """Block until every selected mirror has every change made so far.

    \b
    Exit 0 when the barrier is reached on every selected track, 1 on timeout
    or when a path under the barrier became a dead letter, 2 on error.
    """
    from agent.operate.config_values import parse_duration
    from agent.operate.wait import run_wait

    return run_wait(
        config, selected, host, parse_duration(timeout, "--timeout"), since, as_json, sys.stdout, sys.stderr
    )


@cli.command(epilog=EXIT_HELP)
@click.argument("words", nargs=-1, metavar="[list | retry [PATH...|--all] | drop PATH...]")
@click.option("--all", "all_paths", is_flag=True, help="retry: every dead letter.")
@click.option("--track", metavar="TRACK", help="Only this track (as `agent status` names it).")
@click.option("--json", "as_json", is_flag=True, help="list: machine-readable output.")
@_config_options(root_from_journal=True)
def dead(config: Config, words: tuple[str, ...], all_paths: bool, track: str | None, as_json: bool) -> int:
    """List dead letters, requeue them, or drop them after fixing a mirror by hand.

    \b
    agent dead                 list (exit 1 when there are any)
    agent dead retry --all     requeue every dead letter
    agent dead retry PATH...   requeue the dead letters of these paths
    agent dead drop PATH...    forget them (the mirror was fixed by hand)
    """
    import os

    from agent.operate.dead import drop_dead, list_dead, path_args, retry_dead

    action, paths = (
        (words[0], words[1:]) if words and words[0] in ("list", "retry", "drop") else ("list", words)
    )
    root = os.fsencode(config.root) if config.root is not None else None
    if action == "list":
        if paths:
            raise click.UsageError("list takes no paths")
        return list_dead(config, track, as_json, sys.stdout)
    if action == "retry":
        if bool(paths) == all_paths:
            raise click.UsageError("retry takes PATH... or --all (one of them)")
        return retry_dead(config, track, None if all_paths else path_args(root, paths), sys.stdout)
    if not paths or all_paths:
        raise click.UsageError("drop takes one or more PATHs (never --all)")
    return drop_dead(config, track, path_args(root, paths), sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps operator errors to 'error:' + 'hint:' lines and exit 2."""
    try:
        code = cli.main(args=argv, prog_name="agent", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except (AgentError, JournalError) as exc:
        click.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return code if isinstance(code, int) else 0
