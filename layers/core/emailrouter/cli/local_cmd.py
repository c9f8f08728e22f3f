"""`emailrouter local up` and `emailrouter local demo`: the embedded local stack."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser("local", help="run the embedded local stack")
    lsub = local.add_subparsers(dest="action", required=True)
    up = lsub.add_parser("up", help="start moto, the Dataverse emulator, Dovecot and the runner until Ctrl-C")
    up.add_argument("--workdir", type=Path, default=Path(".local"))
    up.add_argument("--time-scale", type=float, default=1.0, help="shrink schedules and visibility timeouts")
    up.set_defaults(func=cmd_up)
    demo = lsub.add_parser("demo", help="run the demo organization end to end and print a summary")
    demo.add_argument(
        "--keep", action="store_true", help="keep the stack running after the summary (Ctrl-C stops)"
    )
    demo.set_defaults(func=cmd_demo)


def cmd_up(args: argparse.Namespace) -> int:
    from emailrouter.local.stack import LocalStack

    stack = LocalStack(workdir=args.workdir, time_scale=args.time_scale)

    stack.stop_on_signals()
    try:
        endpoints = stack.start()
        print(f"local stack up; endpoints in {stack.workdir / 'stack.json'}")
        print(f"  AWS (moto)      {endpoints.aws_endpoint}")
        print(f"  Dataverse       {endpoints.dataverse_url}/api/data/v9.2/")
        print(f"  POP3 / IMAP     127.0.0.1:{endpoints.pop3_port} / 127.0.0.1:{endpoints.imap_port}")
        print("Ctrl-C stops everything.")
        sys.stdout.flush()
        assert stack.runner is not None
        stack.runner.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("local stack stopped")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from emailrouter.local.demo import run_demo

    return run_demo(keep=args.keep)
