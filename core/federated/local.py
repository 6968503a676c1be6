"""A whole federation on this machine: one SuperLink and N SuperNodes on 127.0.0.1, each on its own partition.

For trying federated training out (and for tests): the real deployment engine, insecure on loopback only.
Every node records into the one database, so the Runs page shows the server's run and each site's run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.data.demo import ensure_demo_dataset
from core.data.partitions import load_partitioners
from core.errors import ConfigError
from core.federated.app_trust import StewardKey, fab_from_dir
from core.federated.control import RunStatus
from core.federated.nodes import FederationOutcome, ServerNode, SiteNode
from core.federated.settings import PARTITION_SCHEMES, FederationConfig, ServerSettings, SiteSettings


class LocalFederation:
    """Starts, runs and stops a one-machine federation.

    Parameters
    ----------
    db_url
        Where the server and every site record.
    work_dir
        Logs and Flower state.
    sites
        Number of sites (SuperNodes), 2 or more.
    partition
        ``iid`` or ``label-skew`` (flwr-datasets' IID and Dirichlet partitioners).
    data_path
        A dataset with train/val(/test) splits; None uses the built-in demo dataset. Sites partition its train
        split; the server evaluates on its validation split, which no site trains on.
    steward
        The key that approves the app for every site (default: the user's own steward key).
    site_policy
        The data steward's policy file every site checks plans against (default: the safe defaults).
    warm_workers
        Start each site's warm training worker (see :mod:`core.federated.site_worker`), which PneumoFL's app
        needs; False only for benchmarks of other apps (a bare Flower app trains in its ClientApp process).
    extra_env
        For every Flower process (the local hub's URL and secret).
    """

    def __init__(
        self,
        db_url: str,
        work_dir: Path,
        *,
        sites: int = 3,
        partition: str = "iid",
        data_path: str | None = None,
        extra_env: dict[str, str] | None = None,
        steward: StewardKey | None = None,
        site_policy: Path | None = None,
        warm_workers: bool = True,
        state_file: Path | None = None,
    ) -> None:
        if sites < 2:
            raise ConfigError("A local federation needs at least 2 sites (--sites).")
        if partition not in PARTITION_SCHEMES:
            raise ConfigError(f"Unknown partition {partition!r}; choose one of {', '.join(PARTITION_SCHEMES)}.")
        self.db_url, self.work_dir = db_url, work_dir
        self.num_sites, self.partition = sites, partition
        self.data_path = data_path
        self.extra_env = dict(extra_env or {})
        self.steward, self.site_policy = steward, site_policy
        self.warm_workers = warm_workers
        self.state_file = state_file  # the SuperLink's state on disk, for a server that may restart
        self.server: ServerNode | None = None
        self.sites: list[SiteNode] = []

    def start(self) -> None:
        """Start the SuperLink, then one SuperNode per site."""
        # The partitioners that cut each site's share before the first round take ~4 s to import: while the
        # nodes start, not after.
        threading.Thread(target=load_partitioners, name="pneumofl-import-partitioners", daemon=True).start()
        root = self.data_path or str(ensure_demo_dataset())
        settings = ServerSettings(
            db_url=self.db_url, eval_data=root, eval_split="val", address="127.0.0.1 (local federation)"
        )
        self.server = ServerNode(
            settings, self.work_dir / "server", extra_env=self.extra_env, state_file=self.state_file
        )
        try:
            self.server.start()
            threads = max(1, (os.cpu_count() or 2) // self.num_sites)
            for i in range(self.num_sites):
                site = SiteSettings(
                    site_name=f"site-{i + 1}",
                    data_path=root,
                    db_url=self.db_url,
                    server_address=self.server.fleet_address,
                    partition_id=i,
                    num_partitions=self.num_sites,
                    partition=self.partition,
                    max_threads=threads,
                    # The user's own plan for their own simulated sites: approved for them (and audited so).
                    approve_within_policy=True,
                    policy_file=str(self.site_policy.resolve()) if self.site_policy else "",
                )
                # The user's own plan for their own simulated sites: their steward key approves for every site,
                # handed to the server here (the sites' SuperNodes still verify it, as at a real site).
                node = SiteNode(
                    site,
                    self.server.fleet_address,
                    self.work_dir / site.site_name,
                    extra_env=self.extra_env,
                    steward=self.steward,
                    send_approval=False,
                    warm_worker=self.warm_workers,
                )
                self.server.approve(node.approval)
                node.start()
                self.sites.append(node)
            for node in self.sites:  # started together, so they connect while we wait for the first
                self.server.site_names.add(node.wait_connected(), node.site.site_name)
        except BaseException:
            self.stop()
            raise

    def offer_app(self, folder: Path) -> str:
        """Offer another Flower app to the sites, approved by the sites' steward key; return its app id.

        For the benchmark's bare baseline app (signed with a benchmark-only key given as ``steward``).
        """
        assert self.server is not None and self.server.hub is not None and self.sites, "start() first"
        fab = fab_from_dir(folder)
        app_id = self.server.hub.register(fab)
        for steward in {node.steward.key_id: node.steward for node in self.sites}.values():
            self.server.approve(steward.approve(fab, "local federation"))
        return app_id

    def run(
        self,
        plan: FederationConfig,
        *,
        cancel: threading.Event | None = None,
        on_submitted: Callable[[int], None] | None = None,
        on_status: Callable[[RunStatus], None] | None = None,
    ) -> FederationOutcome:
        """Submit ``plan`` and wait for it to end (``cancel`` stops it)."""
        assert self.server is not None, "start() first"
        self._prepare_sites(plan)
        run_id = self.server.submit(plan)
        if on_submitted is not None:
            on_submitted(run_id)
        return self.server.follow(run_id, cancel=cancel, on_status=on_status)

    def _prepare_sites(self, plan: FederationConfig) -> None:
        """Check the data and cut each site's share once, here, before the rounds.

        Each site's first ClientApp would otherwise check the same images and load the partitioning libraries,
        all at once on this one machine; they now find their share in their node folder.
        """
        from core.federated.site_data import prepare_site_data, site_training_config

        for node in self.sites:
            site = node.node_settings()
            prepare_site_data(site_training_config(plan, site).validate(), site)

    def stop(self) -> None:
        """Stop every site, then the server (idempotent).

        The sites stop together: a SuperNode takes about 2 s to shut down, which one after another made every
        federation end 2 s per site after its last round.
        """
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(self.sites)), thread_name_prefix="pneumofl-stop") as pool:
                for stopping in [pool.submit(node.stop) for node in self.sites]:
                    stopping.result()
        finally:
            if self.server is not None:
                self.server.stop()

    def __enter__(self) -> LocalFederation:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
