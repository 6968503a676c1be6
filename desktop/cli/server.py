r"""Run this machine as the federation's server: start the SuperLink, enrol sites, run the plan, stop.

Examples
--------
  pneumofl certs init --out fed-certs --server-host fl.hospital.example --sites north south
  pneumofl server start --certs fed-certs --listen 0.0.0.0:9092 --enrol fed-certs/nodes/north.pub \\
      --enrol fed-certs/nodes/south.pub --eval-data ~/held-out --rounds 5 --local-epochs 2 --min-sites 2
  pneumofl server start --insecure --listen 127.0.0.1:9092 --eval-data ~/held-out   # one-machine trials only
  pneumofl server start --insecure --listen 127.0.0.1:9092 --resume 12   # continue federation run 12

Outside loopback the SuperLink listens on 127.0.0.1 only: sites reach it through a TLS front that forwards the
Fleet API and nothing else (run submission is unauthenticated in Flower's open-source build). Only enrolled
sites (their public node keys) may connect. Each round waits up to --round-timeout for --min-sites sites.
Ctrl-C stops the run; it is recorded as cancelled. A server that crashed, was stopped or failed continues its
federation with --resume SERVER_RUN_ID: at the round after the last one it finished, with the same plan, the same
server run and the same sites' runs (the sites reconnect by themselves: the SuperLink keeps its state on disk).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from core.federated.certs import public_key_fingerprint
from core.federated.console import FederationConsole
from core.federated.nodes import FederationOutcome, Security, fresh_work_dir, superlink_state_file
from core.federated.settings import FederationConfig, ServerSettings
from core.persistence import default_database_url
from desktop.cli.common import CommandError, add_db_option, open_db, stop_on_interrupt
from desktop.cli.federate import add_plan_options, build_plan, report
from desktop.cli.live import run_with_live_events
from desktop.cli.serving import add_serve_options, parse_address


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``server start``."""
    server = commands.add_parser("server", help="run this machine as a federation server")
    actions = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "start",
        help="start the SuperLink and run a federation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--eval-data", metavar="PATH", help="the server's held-out labelled images (required unless --resume)")
    p.add_argument(
        "--resume",
        type=int,
        metavar="SERVER_RUN_ID",
        help="continue an interrupted, cancelled or failed federation at its next round, with its plan",
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", default="0.0.0.0:9092", help="where sites connect (default 0.0.0.0:9092)"
    )
    sec = p.add_mutually_exclusive_group()
    sec.add_argument(
        "--certs", metavar="DIR", help="the folder `pneumofl certs init` wrote (TLS + node authentication)"
    )
    sec.add_argument("--insecure", action="store_true", help="no TLS, no node authentication: 127.0.0.1 only")
    p.add_argument("--enrol", metavar="KEY.pub", action="append", default=[], help="a site's public node key (repeat)")
    add_plan_options(p)
    p.add_argument("--work-dir", metavar="DIR", help="logs and Flower state (default: a folder in the user data dir)")
    add_serve_options(p)
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the server node, enrol the given sites, run the plan and stop."""
    from core.federated.nodes import ServerNode

    host, port = parse_address(args.listen)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if args.insecure and not loopback:
        raise CommandError(f"--insecure is only for 127.0.0.1, not {host}: run `pneumofl certs init` and pass --certs.")
    if not args.insecure and not args.certs:
        raise CommandError("Give --certs DIR (from `pneumofl certs init`), or --insecure for a 127.0.0.1 trial.")
    # Every path is resolved here: Flower's processes run in other folders and want absolute paths.
    security = Security.from_dir(Path(args.certs)) if args.certs else Security()
    for path in (security.ca_cert, security.server_cert, security.server_key):
        if path is not None and not path.is_file():
            raise CommandError(f"{path} is missing: run `pneumofl certs init --out {args.certs}` first.")
    keys = [Path(k).expanduser().resolve() for k in args.enrol]
    for key in keys:
        if not key.is_file():
            raise CommandError(f"Site key {key} does not exist (sites' public keys are nodes/<site>.pub).")
    if keys and not security.tls:
        raise CommandError("--enrol needs --certs: sites are only authenticated over TLS.")
    if args.resume is not None:
        plan, recorded_eval = resumed_plan(args)
        eval_data = Path(args.eval_data or recorded_eval).expanduser().resolve()
    else:
        if not args.eval_data:
            raise CommandError("Give the server's held-out images with --eval-data PATH.")
        plan = build_plan(args, default_min_sites=2)
        eval_data = Path(args.eval_data).expanduser().resolve()
        open_db(args).close()
    if not eval_data.exists():
        raise CommandError(f"--eval-data {eval_data} does not exist.")
    settings = ServerSettings(
        db_url=args.db or default_database_url(),
        eval_data=str(eval_data),
        address=args.listen,
        resume_run_id=args.resume or 0,
    )
    work_dir = Path(args.work_dir).expanduser().resolve() if args.work_dir else fresh_work_dir("server")
    # On disk, so that a server started again after a crash finds its sites registered (they reconnect).
    state_file = superlink_state_file(port)
    cancel = threading.Event()
    console = FederationConsole()

    def work(env: dict[str, str]) -> FederationOutcome:
        node = ServerNode(
            settings,
            work_dir,
            security=security,
            public_host=host,  # sites connect through the fleet front, which also takes their approvals
            public_port=port,
            extra_env=env,
            on_notice=lambda sentence: print(f"pneumofl: {sentence}", file=sys.stderr),
            state_file=state_file,
        )
        try:
            node.start()
            assert node.control is not None
            for key in keys:
                node.enrol(key)
                print(f"Enrolled site {key.stem} (key {public_key_fingerprint(key)}).", file=sys.stderr)
            print(f"Sites connect to {node.fleet_address} (logs in {work_dir}).", file=sys.stderr)
            # Flower fixes an app's signatures when the run is submitted: wait for the sites' approvals first.
            print(f"Waiting for {plan.min_sites} site(s) to join and approve this server's app...", file=sys.stderr)
            approved = node.wait_for_approvals(plan.min_sites, plan.round_timeout, cancel)
            print(f"Approved by: {', '.join(sorted(approved)) or 'no site yet'}.", file=sys.stderr)
            if cancel.is_set():
                return FederationOutcome(0, "cancelled", "Stopped by the user before the run was submitted.")
            run_id = node.submit(plan)
            print(f"Submitted Flower run {run_id}; waiting for {plan.min_sites} site(s)...", file=sys.stderr)
            return node.follow(run_id, cancel=cancel)
        finally:
            node.stop()

    with stop_on_interrupt(cancel, "Stopping the federation", (signal.SIGINT, signal.SIGTERM)):
        outcome = run_with_live_events(args, work, [console.handle])
    return report(outcome)


def resumed_plan(args: argparse.Namespace) -> tuple[FederationConfig, str]:
    """The plan (naming the Flower runs it continues) and evaluation data of the server run ``args.resume``.

    Raises
    ------
    CommandError
        If plan options were given too, or the run cannot be continued (with the reason).
    """
    probe = argparse.ArgumentParser(add_help=False)
    add_plan_options(probe)
    defaults = vars(probe.parse_args([]))
    given = [f"--{name.replace('_', '-')}" for name, value in defaults.items() if getattr(args, name, value) != value]
    if given:
        raise CommandError(
            f"--resume continues run {args.resume} with the plan it was started with; leave out {', '.join(given)}."
        )
    from core.federated.server_state import federation_to_resume

    db = open_db(args)  # opening marks the run interrupted if the server that ran it is gone
    try:
        resumed = federation_to_resume(db, args.resume)
    finally:
        db.close()
    return resumed.plan, resumed.eval_data
