"""`ldmkit serve`: the HTTP API and web page (ldmkit.serve) under uvicorn, for one model or several.

``--model NAME=DIR`` (repeatable) serves DIR as NAME; a bare ``--model DIR`` takes the folder's name (a
file's without its suffix), and no ``--model`` serves the default shipped model (``shapes64-grounded``).
Every ``--model`` is checked (name, duplicates, the file or folder there) before anything loads, then every model loads,
all before the server listens: a mistake is one line and exit code 2, not a failed request later.

``--prediction``, ``--no-ema`` and ``--precision`` load a model as `ldmkit generate`'s options of those names
do. Given bare (``--prediction epsilon``, ``--no-ema``) they apply to every model; given with a model's name
(``--prediction sd2=epsilon``, ``--no-ema sd2``) to that model alone, over a bare one. A model's reported
commands repeat the options it was loaded with, so that they draw its images again.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import socket
import sys
from pathlib import Path

from ldmkit.cli.common import UsageError, positive_int
from ldmkit.cli.outputs import check_output_dir
from ldmkit.device import PRECISIONS, resolve_device
from ldmkit.pipelines.adapters import apply_adapters
from ldmkit.pipelines.by_kind import load_any_pipeline
from ldmkit.pretrained import DEFAULT, NAMES_HELP, SHIPPED, resolve_model

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PREDICTIONS = ("epsilon", "v")  # --prediction's values, as `ldmkit generate`'s
CORS_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")  # what a browser sends in Origin: no path, no trailing "/"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def cors_origins(text: str) -> list[str]:
    """--cors-allow-origins' comma-separated origins (A1111's form): each ``*`` or ``scheme://host[:port]`` as a
    browser sends it in ``Origin``, with no path (a trailing "/" would never match)."""
    origins = [origin.strip() for origin in text.split(",") if origin.strip()]
    if not origins:
        raise argparse.ArgumentTypeError("expected origins separated by commas, e.g. http://localhost:3000")
    for origin in origins:
        if origin != "*" and not CORS_ORIGIN.match(origin):
            raise argparse.ArgumentTypeError(f"{origin!r} is not an origin: http:// or https://, a host and an "
                                             f"optional :port, nothing after (e.g. http://localhost:3000), or *")
    return origins


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 … 65535, got {value}")
    return value


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port) and listening, or a one-line error.

    Binding here, before the model loads, makes a busy port fail at once with a clear message, and
    lets the caller print the real port when it asked for 0 (the tests and the load benchmark do).
    Listening at once means a client that connects as soon as the address is printed waits in the
    backlog until the server accepts, instead of being refused while uvicorn starts.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog; its own listen() on this socket keeps it
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _is_unspecified(host: str) -> bool:
    """Whether ``host`` means every interface (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def model_specs(values: list[str] | None) -> list[tuple[str, str | None]]:
    """(name, what --model named) for each ``--model NAME=DIR`` or ``--model DIR``; [(DEFAULT, None)]
    for none. A value that exists as a path is that path, '=' in it or not. A one-line `UsageError` for a bad
    name, a name given twice, or nothing at DIR."""
    if not values:
        return [(DEFAULT, None)]
    specs: dict[str, str] = {}
    for value in values:
        name, given, source = None, "=" in value and not Path(value).exists(), value
        if given:
            name, source = value.split("=", 1)
        elif source in SHIPPED and not Path(source).exists():
            name = source
        else:
            path = Path(source)
            name = path.stem if path.is_file() else path.name
        if not MODEL_NAME.match(name):
            what = f"--model {value}: the name {name!r}" if given else f"--model {value}: its name {name!r}"
            remedy = (f"; nor is there a file or folder at {value!r}: give --model NAME=PATH or an existing path"
                      if given else "; name it: --model NAME=DIR")
            raise UsageError(f"{what} is not a model name: 1–64 letters, digits, '.', '_' or '-', starting with a "
                             f"letter or digit{remedy}")
        if name in specs:
            raise UsageError(f"--model {value}: the name {name!r} is given twice (to {specs[name]} too); give each "
                             f"model its own name: --model NAME=DIR")
        if not source or not Path(resolve_model(source)).exists():
            raise UsageError(f"--model {value}: no model file or folder at {source!r}")
        specs[name] = source
    return list(specs.items())


def per_model(values: list[str] | None, option: str, names: list[str], choices: tuple[str, ...]) -> dict[str, str]:
    """The value of ``option`` (--prediction, --precision) for each model of ``names`` given one: a bare VALUE
    applies to every model, NAME=VALUE to the model served as NAME, over a bare one. A one-line `UsageError`
    for a value not among ``choices``, a name not served, or a model (or the bare form) given twice."""
    given: dict[str | None, str] = {}
    for value in values or ():
        name, _, choice = value.rpartition("=") if "=" in value else (None, "", value)
        if choice not in choices:
            raise UsageError(f"{option} {value}: {choice!r} is not one of {', '.join(choices)} (give {option} "
                             f"VALUE for every model, or {option} NAME=VALUE for one)")
        _check_served(option, value, name, names)
        if name in given:
            which = "every model" if name is None else f"model {name!r}"
            raise UsageError(f"{option} {value}: {which} is given {option} twice ({given[name]} too); give it once")
        given[name] = choice
    return {name: given.get(name, given.get(None)) for name in names if name in given or None in given}


def no_ema_models(values: list[str | None] | None, names: list[str]) -> set[str]:
    """The names of the models --no-ema applies to: every model for a bare --no-ema, the models named by
    ``--no-ema NAME`` otherwise; a one-line `UsageError` for a name not served."""
    values = values or []
    for name in values:
        _check_served("--no-ema", name, name, names)
    return set(names) if None in values else set(values)


def _check_served(option: str, value: str | None, name: str | None, names: list[str]) -> None:
    if name is not None and name not in names:
        raise UsageError(f"{option} {value}: no model is served as {name!r}; served: {', '.join(names)} "
                         f"(the names --model gives)")


def load_options(args, names: list[str]) -> dict[str, dict]:
    """Each served model's keywords of `load_any_pipeline` (``precision``, ``ema``, ``prediction``), from
    --precision, --no-ema and --prediction (`per_model`, `no_ema_models`); checked before anything loads."""
    precision = per_model(args.precision, "--precision", names, PRECISIONS)
    prediction = per_model(args.prediction, "--prediction", names, PREDICTIONS)
    no_ema = no_ema_models(args.no_ema, names)
    return {name: dict(precision=precision.get(name, "fp32"), ema=name not in no_ema,
                       prediction=prediction.get(name)) for name in names}


def command_options(pipe, ema: bool, prediction: str | None) -> tuple[str, ...]:
    """The `ldmkit generate` options that load a model as ``pipe`` was loaded, for its reproduce commands:
    --prediction and --no-ema where given, and --precision=bf16 where the pipeline runs in bf16 (a --precision
    auto resolved on this machine, so that the command draws what the server drew)."""
    return ((f"--prediction={prediction}",) if prediction else ()) + (() if ema else ("--no-ema",)) + \
        (("--precision=bf16",) if pipe.precision == "bf16" else ())


def load_models(args, specs: list[tuple[str, str | None]], options: dict[str, dict] | None = None) -> list:
    """The served models of ``specs``, loaded on --device with --max-size and each with its ``options``
    (`load_options`; default: those of ``args``); --lora and --embedding go on the first, which must then be
    a text model (each model's commands repeat its own options)."""
    from ldmkit.serve.served import served_model

    device = resolve_device(args.device)
    options = options if options is not None else load_options(args, [name for name, _ in specs])
    adapters = tuple(f"--lora={s}" for s in args.lora or ()) + tuple(f"--embedding={e}" for e in args.embedding or ())
    models = []
    for k, (name, source) in enumerate(specs):
        pipe = load_any_pipeline(source, device, **options[name])
        if k == 0 and adapters:
            if pipe.model.config.condition.kind != "text":
                raise UsageError(f"--lora and --embedding apply to the first --model, which must be a text model; "
                                 f"{name} is a {pipe.model.config.condition.kind!r} model")
            apply_adapters(pipe, args.lora, args.embedding)  # shared by the derived pipelines (same model)
        models.append(served_model(name, pipe, command_model=source, max_size=args.max_size,
                                   adapters=adapters if k == 0 else (),
                                   load_options=command_options(pipe, options[name]["ema"],
                                                                options[name]["prediction"])))
    return models


def cmd_serve(args) -> None:
    try:
        import uvicorn

        from ldmkit.serve import create_app
        from ldmkit.serve.app import closing_server
        from ldmkit.serve.guard import allowed_hosts, guarded_protocol
    except ImportError as e:
        raise UsageError(f"`ldmkit serve` needs FastAPI and uvicorn ({e}); install them with "
                         f"pip install 'ldmkit[serve]'") from None

    if args.output_dir:
        check_output_dir(args.output_dir, "--output-dir")  # before serving: not at the first finished job
    specs = model_specs(args.model)
    options = load_options(args, [name for name, _ in specs])
    sock = bind(args.host, args.port)
    try:
        hosts = allowed_hosts(args.host, args.allowed_host)
        app = create_app(models=load_models(args, specs, options), max_queue=args.max_queue, timeout=args.timeout,
                         output_dir=args.output_dir, allowed_hosts=hosts, any_ip_host=_is_unspecified(args.host),
                         cors_allow_origins=args.cors_allow_origins or ())
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    served = ", ".join(f"{name} ({resolve_model(source)})" for name, source in specs)
    # Flushed, and in this form, because the tests and benchmarks/load_serve.py read the port from it.
    print(f"ldmkit serve: serving {served} at http://{shown}:{port}/ (API: /docs)", flush=True)
    if not _is_loopback(args.host):
        print(f"ldmkit serve: note: listening on {args.host}, not loopback: anyone who can reach this "
              f"machine can use the model", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=5, timeout_keep_alive=5, http=guarded_protocol())
    closing_server(config).run(sockets=[sock])  # Ctrl-C answers waiting requests 503 at once


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page for one model or several, of any kind")
    p.add_argument("--model", action="append", metavar="[NAME=]DIR",
                   help="serve this model as NAME (without NAME=: the folder's name): a folder written by `ldmkit "
                        "train` of any kind (text, class, sr, inpaint, colorize), a Stable Diffusion file or "
                        f"diffusers folder, or a shipped model's name ({NAMES_HELP}); repeatable, the first being the "
                        "default of a request that names none. All load at start and stay in memory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; '*': any). By default only "
                        "the --host address and, on loopback, localhost: a page elsewhere cannot reach the server "
                        "through a DNS name pointed at this machine (DNS rebinding)")
    p.add_argument("--cors-allow-origins", type=cors_origins, metavar="ORIGINS",
                   help="let pages from these origins read the answers in a browser (CORS), as A1111's option of "
                        "this name: comma-separated, e.g. http://localhost:3000,https://app.example; '*': any page "
                        "anywhere. Default: none (the browser's same-origin rule). The Host check (--allowed-host) "
                        "still applies")
    p.add_argument("--port", type=port_number, default=7860, help="0 picks a free port (printed at start)")
    p.add_argument("--max-queue", type=positive_int, default=8,
                   help="jobs that may wait while one runs; more get 503 with Retry-After (default 8)")
    p.add_argument("--timeout", type=positive_float, default=300.0,
                   help="seconds a job may wait and run in all before it is stopped (default 300)")
    p.add_argument("--max-size", type=positive_int,
                   help="largest image height or width (default: 4× the size the model was trained at, "
                        "at most 1024)")
    p.add_argument("--lora", action="append", metavar="FILE[:SCALE]",
                   help="serve the first model (a text model) with this LoRA adapter at strength SCALE (default 1); "
                        "repeatable")
    p.add_argument("--embedding", action="append", metavar="FILE",
                   help="a textual-inversion embedding for the first model; repeatable")
    p.add_argument("--prediction", action="append", metavar="[NAME=]{epsilon,v}",
                   help="override what a model predicts, as `ldmkit generate --prediction` (SD 2.x: v for 768-v, "
                        "epsilon for a 512/base file whose name does not say so): bare for every model, NAME=… for "
                        "the model served as NAME; repeatable")
    p.add_argument("--no-ema", action="append", nargs="?", const=None, metavar="NAME",
                   help="use a single file's training weights, not its EMA copy, as `ldmkit generate --no-ema`: bare "
                        "for every model, --no-ema NAME for the model served as NAME; repeatable")
    p.add_argument("--precision", action="append", metavar="[NAME=]{fp32,bf16,auto}",
                   help="fp32 (default), bf16 (the UNet under bf16 autocast) or auto (bf16 where it runs faster), as "
                        "`ldmkit generate --precision`: bare for every model, NAME=… for one; repeatable")
    p.add_argument("--output-dir", help="also save every job's images and settings to this folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request (the page polls several times a second)")
    p.set_defaults(func=cmd_serve)
