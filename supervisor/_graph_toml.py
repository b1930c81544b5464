"""The graph file: a TOML description of a :class:`~supervisor._graph.Graph`, for the CLI.

The format (documented with examples in ``docs/graph-file.md``)::

    [graph]                                   # optional
    name = "example"                          # default: the file's stem
    default_collision_policy = "shrink"       # optional: shrink | defer | all_or_nothing

    [executor]                                # optional: where jobs run (default: the runtime's processes)
    kind = "dask"                             # local | dask | ray
    address = "tcp://127.0.0.1:8786"          # dask: the scheduler; ray: "auto", "ray://host:10001" or absent
    lost_after = 10                           # optional, seconds (see docs/executors.md)

    [job.daily]                               # one table per job; the key is the job's name
    outputs = ["daily/{date}"]                # required: a pattern or a list of them
    command = ["python3", "jobs/daily.py"]    # an argv; the refs to build are appended to it
    # function = "mypackage.jobs:build_daily" # or an async function, as module:attribute
    deps = ["raw/{date}"]                     # optional static dependency templates
    batch = 7
    concurrency = 2
    retries = 2
    backoff = 1.5
    backoff_factor = 2.0
    max_backoff = 300
    timeout = 600
    heartbeat_timeout = 60
    collision_policy = "defer"
    executor = "local"                        # optional: "local", or a table like [executor] for this job
    resources = { gpu = 1 }                   # optional placement hints for the cluster's scheduler
    rebuild_stale = true                      # optional: rebuild a stale partition an active want covers

Command resolution, at load time so that mistakes surface before anything runs:

- a program named ``python3`` or ``python`` becomes ``sys.executable`` (the interpreter running wantbuild, so
  jobs see the same virtualenv);
- a program containing ``/`` is a path relative to the graph file's folder (unless absolute); it must exist
  and be executable, and becomes absolute;
- any other program must be found on ``PATH`` (``shutil.which``) and is kept as written;
- for a Python interpreter, the first argument, unless it starts with ``-``, is the script: relative to the
  graph file's folder, it must exist and becomes absolute. Other arguments are passed as written.

The fingerprint uses the argv as written (:attr:`Job.declared_command`), so it does not depend on where the
checkout lives or which interpreter runs wantbuild.

A ``function`` is imported with the graph file's folder on ``sys.path`` (inserted at the front if missing and
left there, as ``python script.py`` does for the script's folder), so a ``jobs.py`` next to the graph file is
importable as ``jobs:build_daily``.

Every error is a :class:`~supervisor._graph_errors.GraphError` whose message starts with the file's path, names the
job and the field, and says how to fix it.
"""

from __future__ import annotations

import datetime
import importlib
import os
import shutil
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from actors import POLICIES
from eventlog import get_logger, is_postgres

from ._graph import Graph
from ._graph_errors import GraphError
from ._hints import valid_choices
from ._jobs import Job, _is_async_callable

__all__ = ["load_graph"]

_log = get_logger("wantbuild.graph")

_TOP_LEVEL = ("graph", "executor", "job", "pools", "schedule", "upstream")
_UPSTREAM_FIELDS = ("db", "batch", "concurrency")
_EXECUTOR_FIELDS = ("kind", "address", "lost_after", "kill_grace", "log_dir")
_EXECUTOR_KINDS = ("local", "dask", "ray")
_GRAPH_FIELDS = ("name", "default_collision_policy")
_JOB_FIELDS = (
    "outputs",
    "command",
    "function",
    "deps",
    "batch",
    "concurrency",
    "retries",
    "backoff",
    "backoff_factor",
    "max_backoff",
    "timeout",
    "heartbeat_timeout",
    "collision_policy",
    "executor",
    "resources",
    "params",
    "pool",
    "rebuild_stale",
)
_PYTHONS = ("python", "python3")


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__  # pragma: no cover - tomllib yields nothing else


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent.resolve()
        self.default_remote = False

    def error(self, message: str) -> GraphError:
        return GraphError(f"{self.path}: {message}")

    # -- reading fields

    def field(self, job: str, table: Mapping[str, Any], key: str, check: Callable[[Any], bool], want: str) -> Any:
        value = table[key]
        if not check(value):
            raise self.error(
                f"job {job!r}: field {key!r} must be {want}, got {toml_type(value)} ({value!r}); fix its value"
            )
        return value

    def load(self) -> Graph:
        data = self.read()
        for key in data:
            if key not in _TOP_LEVEL:
                raise self.error(
                    f"unknown top-level key {key!r}; {valid_choices(key, _TOP_LEVEL)} "
                    f"(jobs go in [job.NAME] tables, graph settings in [graph])"
                )
        graph = self.graph(data.get("graph", {}))
        if "executor" in data:
            default = self.executor("[executor]", data["executor"])
            if isinstance(default, str):
                raise self.error('[executor] must be a table with kind = "dask" | "ray" | "local"')
            graph.default_executor = default
        self.default_remote = self.remote(graph.default_executor) if graph.default_executor is not None else False
        pools = data.get("pools", {})
        if not isinstance(pools, dict):
            raise self.error(f"'pools' must be a table ([pools] with NAME = SIZE lines), got {toml_type(pools)}")
        for pool, size in pools.items():
            if not _is_int(size):
                raise self.error(f"[pools]: {pool!r} must be an integer (runs at once), got {toml_type(size)} "
                                 f"({size!r}); fix its value")
            try:
                graph.add_pool(pool, size)
            except GraphError as e:
                raise self.error(f"[pools]: {e}") from e
        self.upstreams(graph, data.get("upstream", {}))
        jobs = data.get("job", {})
        if not isinstance(jobs, dict):
            raise self.error(f"'job' must be a table of jobs ([job.NAME] sections), got {toml_type(jobs)}")
        if not jobs:
            raise self.error("the graph defines no jobs; add a [job.NAME] table with outputs and a command")
        for name, table in jobs.items():
            if not isinstance(table, dict):
                raise self.error(
                    f"job {name!r} must be a table ([job.{name}] with outputs = ... on the lines below), "
                    f"got {toml_type(table)}"
                )
            job = self.job(name, table)
            try:
                graph.add_job(job)
            except GraphError as e:
                raise self.error(str(e)) from e
        try:
            graph.validate()  # every job's pool is declared
        except GraphError as e:
            raise self.error(str(e)) from e
        self.schedules(graph, data.get("schedule", {}))
        _log.debug("graph.loaded", path=str(self.path), graph=graph.name, jobs=len(graph))
        return graph

    def upstreams(self, graph: Graph, tables: object) -> None:
        """``[upstream.NAME]`` tables: other graphs' logs (``db = "postgresql://..."`` or a file, relative to this
        file's folder), whose partitions this graph's jobs name as ``NAME:REF``."""
        if not isinstance(tables, dict):
            raise self.error(f"'upstream' must be a table of graphs ([upstream.NAME] sections with db = ...), got "
                             f"{toml_type(tables)}")
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise self.error(f"upstream {name!r} must be a table ([upstream.{name}] with db = \"...\"), got "
                                 f"{toml_type(table)}")
            for key in table:
                if key not in _UPSTREAM_FIELDS:
                    raise self.error(f"upstream {name!r}: unknown field {key!r}; "
                                     f"{valid_choices(key, _UPSTREAM_FIELDS)}")
            db = table.get("db")
            if not isinstance(db, str) or not db:
                raise self.error(f"upstream {name!r}: db must be the log of graph {name!r} (a postgresql:// URL or a "
                                 f"file), got {toml_type(db) if db is not None else 'nothing'}")
            if not is_postgres(db) and not Path(db).is_absolute():
                db = str(self.folder / db)
            options: dict[str, Any] = {}
            for key in ("batch", "concurrency"):
                if key in table:
                    if not _is_int(table[key]):
                        raise self.error(f"upstream {name!r}: {key} must be an integer, got {toml_type(table[key])}")
                    options[key] = table[key]
            try:
                graph.upstream(name, db=db, **options)
            except GraphError as e:
                raise self.error(str(e)) from e

    def schedules(self, graph: Graph, tables: object) -> None:
        """``[schedule.NAME]`` tables: checked against the graph now (cron, timezone, rendered template)."""
        import time

        from ._schedules import ScheduleError, check_schedule, schedule_from_table

        if not isinstance(tables, dict):
            raise self.error(f"'schedule' must be a table of schedules ([schedule.NAME] sections), got "
                             f"{toml_type(tables)}")
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise self.error(f"schedule {name!r} must be a table ([schedule.{name}] with cron = ... and "
                                 f"want = ...), got {toml_type(table)}")
            try:
                schedule = schedule_from_table(name, table, where=f"schedule {name!r}")
                graph.schedules[name] = check_schedule(schedule, now=time.time(), graph=graph)
            except ScheduleError as e:
                raise self.error(str(e)) from e

    def read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as file:
                return tomllib.load(file)
        except FileNotFoundError as e:
            raise self.error(f"no such graph file (looked in {Path.cwd()}); check the path") from e
        except IsADirectoryError as e:
            raise self.error("is a folder, not a graph file; give the path of the .toml file") from e
        except OSError as e:
            raise self.error(f"cannot read the graph file: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise self.error(f"not valid TOML: the file is not UTF-8 ({e.reason} at byte {e.start})") from e
        except tomllib.TOMLDecodeError as e:
            raise self.error(f"not valid TOML: {e}") from e

    def graph(self, table: object) -> Graph:
        if not isinstance(table, dict):
            raise self.error(f"'graph' must be a table ([graph]), got {toml_type(table)}")
        for key in table:
            if key not in _GRAPH_FIELDS:
                raise self.error(f"[graph]: unknown field {key!r}; {valid_choices(key, _GRAPH_FIELDS)}")
        name = table.get("name", self.path.stem)
        if not isinstance(name, str) or not name:
            raise self.error(f"[graph]: field 'name' must be a non-empty string, got {toml_type(name)} ({name!r})")
        policy = table.get("default_collision_policy")
        if policy is not None and policy not in POLICIES:
            raise self.error(
                f"[graph]: field 'default_collision_policy' must be one of {', '.join(POLICIES)}, "
                f"got {policy!r}"
            )
        return Graph(name, default_collision_policy=policy)

    def job(self, name: str, table: dict[str, Any]) -> Job:
        for key in table:
            if key not in _JOB_FIELDS:
                raise self.error(f"job {name!r}: unknown field {key!r}; {valid_choices(key, _JOB_FIELDS)}")
        if "outputs" not in table:
            raise self.error(f"job {name!r}: missing field 'outputs'; add e.g. outputs = [\"{name}/{{date}}\"]")
        has_command, has_function = "command" in table, "function" in table
        if has_command == has_function:
            which = "both 'command' and 'function'" if has_command else "neither 'command' nor 'function'"
            raise self.error(
                f'job {name!r}: has {which}; give exactly one: command = ["python3", "jobs/{name}.py"] '
                f'or function = "module:async_function"'
            )
        kwargs: dict[str, Any] = {}
        kwargs["outputs"] = self.field(name, table, "outputs", _str_or_strs, "a string or an array of strings")
        if "deps" in table:
            kwargs["deps"] = self.field(name, table, "deps", _str_or_strs, "a string or an array of strings")
        for key in ("batch", "concurrency", "retries"):
            if key in table:
                kwargs[key] = self.field(name, table, key, _is_int, "an integer")
        for key in ("backoff", "backoff_factor", "max_backoff", "timeout", "heartbeat_timeout"):
            if key in table:
                kwargs[key] = self.field(name, table, key, _is_number, "a number (seconds)")
        if "collision_policy" in table:
            kwargs["collision_policy"] = self.field(
                name,
                table,
                "collision_policy",
                lambda value: value in POLICIES,
                f"one of {', '.join(map(repr, POLICIES))}",
            )
        if "executor" in table:
            kwargs["executor"] = self.executor(f"job {name!r}: field 'executor'", table["executor"])
        if "params" in table:
            kwargs["params"] = self.field(name, table, "params", _params,
                                          'a table of placeholder names to types, e.g. { date = "date" } '
                                          '(types: "date", "hour", "int", or an array of values)')
        if "pool" in table:
            kwargs["pool"] = self.field(name, table, "pool", _is_str, 'a pool\'s name (declared in [pools])')
        if "rebuild_stale" in table:
            kwargs["rebuild_stale"] = self.field(name, table, "rebuild_stale", lambda v: isinstance(v, bool),
                                                 "true or false")
        if "resources" in table:
            kwargs["resources"] = self.field(name, table, "resources", _resources,
                                             "a table of resource names to numbers >= 0, e.g. { gpu = 1 }")
        if has_command:
            argv = self.field(name, table, "command", _argv, "a non-empty array of non-empty strings (an argv)")
            kwargs["command"] = self.resolve_command(name, argv)
            kwargs["declared_command"] = argv
        else:
            spec = self.field(name, table, "function", _is_str, "a string 'module:function'")
            kwargs["run"] = self.import_function(name, spec, plain_ok=self.remote(kwargs.get("executor")))
        try:
            return Job.create(name, **kwargs)
        except GraphError as e:
            raise self.error(str(e)) from e

    def executor(self, where: str, value: object) -> Any:
        """An ``[executor]`` table (or a job's ``executor``: "local" or such a table) as an Executor."""
        from ._executors import DaskExecutor, LocalExecutor, RayExecutor

        if value == "local":
            return "local"
        if not isinstance(value, dict):
            raise self.error(f'{where} must be "local" or a table with kind = "dask" | "ray" | "local", got '
                             f"{toml_type(value)} ({value!r})")
        for key in value:
            if key not in _EXECUTOR_FIELDS:
                raise self.error(f"{where}: unknown field {key!r}; {valid_choices(key, _EXECUTOR_FIELDS)}")
        kind = value.get("kind")
        if kind not in _EXECUTOR_KINDS:
            raise self.error(f"{where}: field 'kind' must be one of {', '.join(map(repr, _EXECUTOR_KINDS))}, "
                             f"got {kind!r}")
        options: dict[str, Any] = {}
        for key in ("lost_after", "kill_grace"):
            if key in value:
                if not _is_number(value[key]) or value[key] < 0:
                    raise self.error(f"{where}: field {key!r} must be a number of seconds >= 0, got {value[key]!r}")
                options[key] = value[key]
        for key in ("address", "log_dir"):
            if key in value and (not isinstance(value[key], str) or not value[key]):
                raise self.error(f"{where}: field {key!r} must be a non-empty string, got {value[key]!r}")
        if "log_dir" in value:
            options["log_dir"] = value["log_dir"]
        if kind == "local":
            if set(value) - {"kind"}:
                raise self.error(f"{where}: a local executor takes no other field than kind")
            return LocalExecutor()
        if kind == "dask":
            if "address" not in value:
                raise self.error(f'{where}: a Dask executor needs address = "tcp://HOST:8786" (its scheduler)')
            return DaskExecutor(address=value["address"], **options)
        return RayExecutor(address=value.get("address"), **options)

    # -- commands and functions

    def resolve_command(self, job: str, argv: list[str]) -> list[str]:
        program, args = argv[0], list(argv[1:])
        where = f"job {job!r}: field 'command'"
        if program in _PYTHONS:
            if not sys.executable:  # pragma: no cover - only in embedded interpreters
                raise self.error(f"{where}: cannot tell which Python runs wantbuild to run {program!r}")
            program = sys.executable
            if args and not args[0].startswith("-"):
                script = self.folder / args[0]
                if not script.is_file():
                    raise self.error(
                        f"{where}: the script {args[0]!r} does not exist (looked for {script}); paths are "
                        f"relative to the graph file's folder"
                    )
                args[0] = str(script)
        elif "/" in program or os.sep in program:
            path = self.folder / program
            if not path.is_file():
                raise self.error(
                    f"{where}: the program {program!r} does not exist (looked for {path}); paths are relative "
                    f"to the graph file's folder"
                )
            if not os.access(path, os.X_OK):
                raise self.error(
                    f"{where}: the program {program!r} is not executable; run chmod +x {path} or start the "
                    f'command with an interpreter such as "python3"'
                )
            program = str(path)
        elif shutil.which(program) is None:
            raise self.error(
                f"{where}: the program {program!r} is not on PATH; install it, or give its path relative to "
                f'the graph file\'s folder (e.g. "./{program}")'
            )
        return [program, *args]

    def remote(self, executor: object) -> bool:
        """Whether a job with this ``executor`` field runs on a cluster (where a plain function may run)."""
        from ._executors import LocalExecutor

        if executor == "local" or isinstance(executor, LocalExecutor):
            return False
        return executor is not None or self.default_remote

    def import_function(self, job: str, spec: str, *, plain_ok: bool = False) -> Any:
        where = f"job {job!r}: field 'function'"
        module_name, colon, attribute = spec.partition(":")
        if not colon or not module_name or not attribute:
            raise self.error(f"{where}: {spec!r} is not 'module:function'; write e.g. \"mypackage.jobs:build_daily\"")
        folder = str(self.folder)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as e:
            raise self.error(
                f"{where}: cannot import module {module_name!r} ({e}); check the name, and that it is installed "
                f"or lives in the graph file's folder"
            ) from e
        except Exception as e:
            raise self.error(f"{where}: importing {module_name!r} raised {type(e).__name__}: {e}") from e
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as e:
                raise self.error(f"{where}: {module_name!r} has no attribute {attribute!r}; check the spelling") from e
        if not callable(target) or (not plain_ok and not _is_async_callable(target)):
            raise self.error(f"{where}: {spec!r} is not an async function; define it with async def (a plain "
                             f"function runs only on a cluster executor: [executor] or the job's executor)")
        return target


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _str_or_strs(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))


def _resources(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k and _is_number(v) and v >= 0 for k, v in value.items()
    )


def _params(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) for v in value.values()
    )


def _argv(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) and item for item in value)


def load_graph(path: str | Path) -> Graph:
    """Load and check a graph file; raises :class:`~supervisor._graph_errors.GraphError` starting with the path."""
    return _Loader(Path(path)).load()
