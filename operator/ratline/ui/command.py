"""`ratline ui`: serve the web UI (see docs/ui.md); registered by `ratline.cli.main`.

The UI's own Kubernetes credentials (in-cluster ServiceAccount, or a kubeconfig)
are used only for TokenReview and SubjectAccessReview; everything a user sees or
does goes through their own token. The store DSN comes from --dsn or $RATLINE_DSN; the CSRF key from
$RATLINE_UI_CSRF_KEY (random per process when unset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
from typing import Any

from kubernetes import client, config


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ui", help="serve the web UI", description="Serve the web UI (runs, timelines, actions)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--dsn", default=os.environ.get("RATLINE_DSN"), help="store DSN (default: $RATLINE_DSN)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, else ~/.kube)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="a namespace to offer on the start page (repeatable; others open by URL)",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's key (PEM)")
    parser.add_argument(
        "--behind-tls",
        action="store_true",
        help="a TLS-terminating proxy is in front: mark cookies Secure, send HSTS",
    )
    parser.set_defaults(func=cmd_ui)


def _kube(kubeconfig: str | None) -> client.Configuration:
    conf = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=conf
        )
    return conf


def cmd_ui(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `ratline --help` loads every command module.
    from ratline.store.postgres import PostgresStore
    from ratline.store.queries import RunQueries
    from ratline.ui.server import Config, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.dsn:
        print("ratline ui: --dsn (or $RATLINE_DSN) is required", flush=True)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("ratline ui: --tls-cert and --tls-key go together", flush=True)
        return 2
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    cfg = Config(
        kube=_kube(args.kubeconfig),
        namespaces=tuple(args.namespaces),
        dsn=args.dsn,
        tls=bool(ssl_context) or args.behind_tls,
        # Replicas must share the CSRF key (the chart keeps one in a Secret).
        secret=os.environ.get("RATLINE_UI_CSRF_KEY", "").encode(),
    )

    async def main() -> None:
        store = await PostgresStore.connect(args.dsn, max_size=4)
        try:
            await serve(cfg, RunQueries(store), args.host, args.port, ssl_context)
        finally:
            await store.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
