"""speechmax listen: serve a self-hosted listening test (MOS and word identification) for one set."""
import ipaddress
import os
import secrets
import socket

import uvicorn

from speechmax.cli import CommandError
from speechmax.listen import create_app


def register(sub, help):
    p = sub.add_parser("listen", help=help,
                       description="Serve a listening test over a set folder (DIR/manifest.json, format in "
                                   "`pydoc speechmax.listen`); answers go to an SQLite database.",
                       epilog="example:\n  speechmax listen --set runs/eval/listening --db answers.db --port 8000")
    p.add_argument("--set", dest="set_dir", required=True, metavar="DIR", help="listening-set folder")
    p.add_argument("--db", required=True, metavar="FILE", help="SQLite results database (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0: any free one)")
    p.add_argument("--admin-token", metavar="T", default=os.environ.get("SPEECHMAX_LISTEN_ADMIN_TOKEN"),
                   help="token for the results (default: $SPEECHMAX_LISTEN_ADMIN_TOKEN, else a new random one)")
    p.add_argument("--clips-per-rater", type=int, metavar="N", default=None,
                   help="test clips per rater, shared equally among conditions (default: all)")
    p.set_defaults(func=run)


def run(args):
    admin_token = args.admin_token or secrets.token_urlsafe(18)
    app = create_app(args.set_dir, args.db, admin_token, per_rater=args.clips_per_rater)
    # Bind first: URLs and a token printed for a server that then fails to start would mislead.
    try:
        sock = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host
                                    else socket.AF_INET)
    except OSError as e:
        raise CommandError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{port}"
    print(f"listening test '{app.state.set.name}' ({len(app.state.set.clips)} clips), answers in {args.db}")
    print(f"raters:  {base}/")
    print(f"admin:   {base}/admin#token={admin_token}")
    print(f"admin token: {admin_token}", flush=True)
    if not _is_loopback(args.host):
        print(f"warning: bound to {args.host}, so other machines can reach the test", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
