"""The server's app hub: where its SuperLink fetches the app it runs, with the sites' steward signatures.

Flower's SuperLink accepts signatures for an app only from a hub (``flwr run @publisher/app==x.y.z`` makes it
``POST $FLWR_SUPERGRID_API_URL/hub/fetch-fab``); signatures sent by ``flwr run`` itself are dropped. So the server
node runs this small hub on 127.0.0.1 and starts its SuperLink pointed at it. It serves PneumoFL's own app of this
version (and, for the benchmark, apps registered by the caller) with every approval the sites sent, and nothing
else: an app id it does not hold gets 404, so ``flwr run @someone/else`` fails at the server, and an app
submitted as a folder carries no signature at all, so every site refuses it.

Approvals arrive through the fleet front (:meth:`AppHub.receive`); each is checked (its key id is its key's, its
signature verifies) and must be for this server's app: a site of another PneumoFL version is told so, naming both.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import __version__
from core.federated.app_trust import (
    APP_ID,
    NODE_KEY_HEADER,
    NODE_SIGNATURE_HEADER,
    Approval,
    AppTrustError,
    app_version,
    fab_sha256,
    node_key_signed,
    pneumofl_fab,
)
from core.federated.http_thread import BackgroundServer

log = logging.getLogger(__name__)


class AppHub:
    """Holds the apps this server may submit and the sites' approvals of them; serves Flower's hub API.

    Parameters
    ----------
    on_approval
        Called with each accepted approval (the server records it in its audit trail).
    on_notice
        Called with sentences for the server's user (a site of another PneumoFL version).
    """

    def __init__(
        self,
        on_approval: Callable[[Approval], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.on_approval, self.on_notice = on_approval, on_notice
        own = pneumofl_fab()
        self.apps: dict[str, bytes] = {APP_ID: own}  # app id -> FAB
        self.own_sha256 = fab_sha256(own)
        self._versions: dict[str, str] = {}  # app id -> version, for registered apps
        self._approvals: dict[str, dict[str, Approval]] = {}  # FAB sha -> key id -> approval (Flower's verifications)
        self._sites: dict[str, set[str]] = {}  # FAB sha -> names of the sites that approved it (two may share a key)
        self._enrolled: dict[str, str] = {}  # node public key (OpenSSH "type base64") -> enrolled site name
        self._lock = threading.Lock()
        self._server: BackgroundServer | None = None
        self.app = Starlette(
            routes=[
                Route("/hub/fetch-fab", self._fetch_fab, methods=["POST"]),
                Route("/fab/{sha256}", self._fab, methods=["GET"]),
            ]
        )

    @property
    def url(self) -> str:
        """The base URL to give the SuperLink as ``FLWR_SUPERGRID_API_URL``."""
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> None:
        """Serve on a free loopback port."""
        if self._server is None:
            self._server = BackgroundServer(self.app, "127.0.0.1", 0, "app hub")
            self._server.start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def register(self, fab: bytes) -> str:
        """Offer another app (e.g. the benchmark's bare app); return its app id (``@publisher/name``)."""
        app_id, version = fab_identity(fab)
        self.apps[app_id] = fab
        self._versions[app_id] = version
        return app_id

    def spec(self, app_id: str = APP_ID) -> str:
        """What ``flwr run`` is given to submit ``app_id`` through this hub."""
        return f"{app_id}=={self._versions.get(app_id) or app_version()}"

    def add(self, approval: Approval) -> None:
        """Attach a checked approval to the app it signs (a later one from the same key replaces it)."""
        approval.check()
        with self._lock:
            self._approvals.setdefault(approval.fab_sha256, {})[approval.key_id] = approval
            self._sites.setdefault(approval.fab_sha256, set()).add(approval.site_name)
        if self.on_approval is not None:
            self.on_approval(approval)

    def approvals(self, fab_sha: str | None = None) -> list[Approval]:
        """The approvals held for an app (PneumoFL's own by default)."""
        with self._lock:
            return list(self._approvals.get(fab_sha or self.own_sha256, {}).values())

    def approved_sites(self) -> set[str]:
        """The names of the sites that approved this server's own app (as they named themselves)."""
        with self._lock:
            return set(self._sites.get(self.own_sha256, set()))

    def enrolled(self, public_key: str, name: str) -> None:
        """A site enrolled by its node key: from now on only approvals signed with an enrolled key count."""
        with self._lock:
            self._enrolled[" ".join(public_key.split()[:2])] = name

    def receive(self, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        """A site's approval as it arrives at the fleet front: ``(HTTP status, sentence for the site)``.

        When the server enrols sites, the approval must be signed with an enrolled node key, and it counts for
        the site enrolled with that key, under its enrolled name (a site cannot approve in another's name).
        """
        headers = headers or {}
        try:
            approval = Approval.from_json(body)
        except AppTrustError as exc:
            log.warning("refused an approval: %s", exc)
            return 400, str(exc)
        with self._lock:
            enrolled = dict(self._enrolled)
        if enrolled:
            key = " ".join(headers.get(NODE_KEY_HEADER, "").split()[:2])
            if key not in enrolled or not node_key_signed(body, key, headers.get(NODE_SIGNATURE_HEADER, "")):
                log.warning(
                    "refused an approval from a site that is not enrolled (it named itself %r)", approval.site_name
                )
                return 403, (
                    "This server counts approvals only from enrolled sites, signed with their node key: join with "
                    "--key (the site's nodes/<site>.key) after the server's administrator enrolled its .pub."
                )
            approval = dataclasses.replace(approval, site_name=enrolled[key])
        if approval.fab_sha256 != self.own_sha256 and approval.pneumofl_version != __version__:
            message = version_mismatch(approval.site_name, approval.pneumofl_version, __version__)
            if self.on_notice is not None:
                self.on_notice(message)
            return 409, message
        if approval.fab_sha256 not in {fab_sha256(fab) for fab in self.apps.values()}:
            return 404, f"This server offers no app with hash {approval.fab_sha256[:16]}…; nothing was recorded."
        self.add(approval)
        log.info("site %s approved app %s (key %s)", approval.site_name, approval.fab_sha256[:16], approval.key_id)
        return 200, f"The server recorded the approval of site '{approval.site_name}'."

    async def _fetch_fab(self, request: Request) -> Response:
        try:
            body = await request.json()
            app_id = str(body.get("app_id", ""))
        except (ValueError, AttributeError):
            return JSONResponse({"detail": "bad request"}, status_code=400)
        fab = self.apps.get(app_id)
        if fab is None:
            log.warning("the SuperLink asked for app %s, which this server does not offer", app_id)
            return JSONResponse({"detail": f"{app_id} is not offered by this PneumoFL server"}, status_code=404)
        digest = fab_sha256(fab)
        # No approval: an empty list, which Flower turns into a verification no site's key can pass.
        verifications = [
            {"public_key_id": a.key_id, "signature": a.signature, "signed_at": a.signed_at}
            for a in self.approvals(digest)
        ]
        return JSONResponse({"fab_url": f"{self.url}/fab/{digest}", "verifications": verifications})

    async def _fab(self, request: Request) -> Response:
        wanted = request.path_params["sha256"]
        for fab in self.apps.values():
            if fab_sha256(fab) == wanted:
                return Response(fab, media_type="application/octet-stream")
        return JSONResponse({"detail": "not found"}, status_code=404)


def fab_identity(fab: bytes) -> tuple[str, str]:
    """``("@publisher/name", "x.y.z")`` of an app bundle, as Flower reads them."""
    from flwr.common.config import get_fab_config, get_metadata_from_config

    fab_id, version = get_metadata_from_config(get_fab_config(fab))
    return f"@{fab_id}", version


def version_mismatch(site_name: str, site_version: str, server_version: str) -> str:
    """The one sentence both ends show when a site and the server run different PneumoFL versions."""
    return (
        f"Site '{site_name}' runs PneumoFL {site_version} and the server runs PneumoFL {server_version}: a site only "
        "runs the federation app of its own version, so both must install the same PneumoFL version."
    )
