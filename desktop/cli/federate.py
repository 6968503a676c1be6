"""Run a whole federation on this machine: one SuperLink and N SuperNodes on 127.0.0.1.

Each site trains on its own partition of the data; all are recorded in one database (the Runs page shows the
server's run and every site's).

Examples
--------
  pneumofl federate --demo
  pneumofl federate --demo --partition label-skew --strategy fedprox
  pneumofl federate --demo --dp-noise 1.0 --dp-clip 1.0
  pneumofl federate --data ~/xrays --sites 2 --rounds 5 --serve 127.0.0.1:8765

The data needs train and val splits (folders or a split column): sites share out the train split, the server
evaluates every round on the val split, which no site trains on. Ctrl-C stops the run; it is recorded as cancelled.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from core.config import BACKBONES, RunConfig, demo_config
from core.federated.console import FederationConsole
from core.federated.nodes import FederationOutcome, fresh_work_dir
from core.federated.settings import DP_CLIPPING, PARTITION_SCHEMES, STRATEGIES, WIRE_PRECISIONS, FederationConfig
from core.persistence import default_database_url
from desktop.cli.common import CommandError, add_db_option, format_duration, open_db, stop_on_interrupt
from desktop.cli.live import run_with_live_events
from desktop.cli.serving import add_serve_options

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 130, "interrupted": 1}


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``federate`` command."""
    p = commands.add_parser(
        "federate",
        help="run a local federation (server and sites on this machine)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="use the built-in demo dataset (the default)")
    src.add_argument("--data", metavar="PATH", help="a dataset with train and val splits to share out")
    p.add_argument("--sites", type=int, default=3, help="number of sites (SuperNodes), default 3")
    p.add_argument("--partition", choices=PARTITION_SCHEMES, default="iid", help="how sites share the data")
    add_plan_options(p)
    p.add_argument("--show-sites", action="store_true", help="also print every site's epochs")
    p.add_argument("--work-dir", metavar="DIR", help="logs and Flower state (default: a folder in the user data dir)")
    add_serve_options(p)
    add_db_option(p)
    p.set_defaults(func=run)


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``federate`` and ``server start``: the federation's plan."""
    p.add_argument("--name", default="federation", help="federation name (sites' runs are '<name> · <site>')")
    default = FederationConfig()  # defaults measured on the demo federation (README, tests/bench/fl_quality.py)
    p.add_argument("--rounds", type=int, default=default.rounds, help=f"federated rounds (default {default.rounds})")
    p.add_argument(
        "--local-epochs",
        type=int,
        default=default.local_epochs,
        help=f"epochs each site trains per round (default {default.local_epochs})",
    )
    p.add_argument(
        "--min-sites",
        type=int,
        help="sites that must reply for a round to count (default: every site for federate, 2 for server start)",
    )
    p.add_argument("--round-timeout", type=float, default=600.0, help="seconds a round waits for sites (default 600)")
    p.add_argument("--backbone", choices=BACKBONES, default="small_cnn", help="model (default small_cnn: fast rounds)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--seed", type=int, default=42)
    algo = p.add_argument_group("aggregation (Flower's strategies)")
    algo.add_argument("--strategy", choices=STRATEGIES, default="fedavg", help="how the server combines the sites")
    algo.add_argument(
        "--proximal-mu",
        type=float,
        default=0.0,
        metavar="MU",
        help="FedProx's proximal term (0.01 with --strategy fedprox)",
    )
    algo.add_argument(
        "--server-lr", type=float, default=0.0, metavar="LR", help="server learning rate of fedavgm, fedadam, fedyogi"
    )
    algo.add_argument("--local-bn", action="store_true", help="FedBN: normalisation layers stay at each site")
    algo.add_argument(
        "--wire-precision",
        choices=WIRE_PRECISIONS,
        default="fp32",
        help="fp16 sends the weights as half precision (half the bytes); aggregation stays float32",
    )
    dp = p.add_argument_group("differential privacy (Flower's DP wrappers)")
    dp.add_argument(
        "--dp-noise", type=float, default=0.0, metavar="Z", help="noise multiplier of the sites' updates (0: off)"
    )
    dp.add_argument(
        "--dp-clip", type=float, default=1.0, metavar="C", help="clipping norm (initial norm when adaptive)"
    )
    dp.add_argument(
        "--dp-clipping", choices=DP_CLIPPING, default="fixed", help="server-side fixed or client-side adaptive"
    )
    dp.add_argument(
        "--dp-delta", type=float, default=1e-5, help="delta at which the privacy spent (epsilon) is reported"
    )


def build_plan(args: argparse.Namespace, default_min_sites: int) -> FederationConfig:
    """The federation plan from the command line, validated."""
    overrides = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    if args.lr is not None:
        overrides["learning_rate"] = args.lr
    training: RunConfig = demo_config(experiment_name=args.name, **overrides)
    return FederationConfig(
        name=args.name,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        min_sites=args.min_sites or default_min_sites,
        round_timeout=args.round_timeout,
        training=training,
        strategy=args.strategy,
        proximal_mu=args.proximal_mu,
        server_lr=args.server_lr,
        local_bn=args.local_bn,
        dp_noise=args.dp_noise,
        dp_clip=args.dp_clip,
        dp_clipping=args.dp_clipping,
        dp_delta=args.dp_delta,
        wire_precision=args.wire_precision,
    ).validate()


def run(args: argparse.Namespace) -> int:
    """Start the local federation, run the plan, stop every process, report."""
    from core.federated.local import LocalFederation  # Flower and torch load only for federation commands

    if args.sites < 2:
        raise CommandError("--sites must be 2 or more.")
    plan = build_plan(args, default_min_sites=args.sites)
    if plan.min_sites > args.sites:
        raise CommandError(f"--min-sites {plan.min_sites} is more than --sites {args.sites}.")
    db_url = args.db or default_database_url()
    open_db(args).close()  # a bad URL fails here, before any process starts
    work_dir = Path(args.work_dir).expanduser() if args.work_dir else fresh_work_dir("local")
    cancel = threading.Event()
    console = FederationConsole(sites=args.show_sites)

    def work(env: dict[str, str]) -> FederationOutcome:
        federation = LocalFederation(
            db_url, work_dir, sites=args.sites, partition=args.partition, data_path=args.data, extra_env=env
        )
        print(f"Starting a SuperLink and {args.sites} SuperNodes on 127.0.0.1 (logs in {work_dir})...", file=sys.stderr)
        with federation:
            return federation.run(
                plan, cancel=cancel, on_submitted=lambda rid: print(f"Submitted Flower run {rid}.", file=sys.stderr)
            )

    with stop_on_interrupt(cancel, "Stopping the federation", (signal.SIGINT, signal.SIGTERM)):
        outcome = run_with_live_events(args, work, [console.handle])
    return report(outcome)


def report(outcome: FederationOutcome) -> int:
    """Print how the federation ended and where it is recorded; the exit code."""
    print()
    print(f"Federation {outcome.status} in {format_duration(outcome.seconds)} (Flower run {outcome.flower_run_id}).")
    if outcome.server_run_id is not None:
        sites = ", ".join(str(i) for i in outcome.site_run_ids) or "none here"
        print(f"Server run {outcome.server_run_id}; site runs {sites}. See: pneumofl runs show {outcome.server_run_id}")
    print(f"Traffic: {outcome.outbound_bytes / 1e6:.1f} MB to sites, {outcome.inbound_bytes / 1e6:.1f} MB back.")
    if outcome.status != "completed":
        raise CommandError(
            f"The federation {outcome.status}: {outcome.message or 'see the logs'}", EXIT_CODES.get(outcome.status, 1)
        )
    return 0
