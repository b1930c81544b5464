"""``wantbuild scenario ...``: the scenario commands live in the ``scenarios`` package; mounted when it loads."""

from __future__ import annotations

import importlib

import click

from .._access import CliError


def scenario_command() -> click.Command | None:
    """The ``scenario`` group; None without the ``scenarios`` package; if it fails to load, a stand-in that says
    why (their bug must not take the whole CLI down)."""
    try:
        module = importlib.import_module("scenarios._cli")
    except ModuleNotFoundError as e:
        if e.name in ("scenarios", "scenarios._cli"):
            return None  # not installed: no scenario command
        error = f"{type(e).__name__}: {e}"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    else:
        command = getattr(module, "scenario", None)
        if isinstance(command, click.Command):
            return command
        return None

    @click.command("scenario", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def broken() -> None:
        """(unavailable: the scenario commands failed to load)"""
        raise CliError(f"the scenario commands failed to load ({error}); run `python -c 'import scenarios._cli'` "
                       "to see why")

    return broken
