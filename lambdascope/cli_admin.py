"""`lambdascope admin ...`, `whoami`, `share`, `unshare` and `grants`: teams, API keys
(lambdascope.auth) and read-only sharing between teams."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from lambdascope import auth
from lambdascope.client import Client


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 with_client: Callable[[Callable[[argparse.Namespace, Client], int]],
                                       Callable[[argparse.Namespace], int]]) -> None:
    """Register the commands with the CLI's `command(name, func, help)` factory; `with_client`
    turns a command taking (args, client) into one taking args."""
    command("whoami", with_client(cmd_whoami), "the team and role of the API key in use")
    admin = command("admin", with_client(cmd_admin),
                    "teams, API keys and the audit log (needs an admin key)")
    admin.add_argument("what", choices=["team", "key", "log"])
    admin.add_argument("action", nargs="?", choices=["create", "list", "revoke"])
    admin.add_argument("name", nargs="?", help="team create: the team's name; key revoke: the key id")
    admin.add_argument("--team", help="key create: the key's team; key list: only this team's")
    admin.add_argument("--role", choices=["reader", "writer", "admin"],
                       help="key create: reader (get, list, download, watch), writer (also upload, "
                            "train, audit, alias, tag, delete) or admin (also teams, keys, gc)")
    admin.add_argument("--expires", type=int, default=0, metavar="DAYS",
                       help="key create: days until the key stops working (default: never)")
    admin.add_argument("--description", default="", help="key create: what the key is for")
    admin.add_argument("--user", default="",
                       help="key create: who the key is for (a person or a system), shown in "
                            "`admin key list` and `admin log`")
    admin.add_argument("--all", action="store_true", help="key list: revoked keys too")
    admin.add_argument("--denied", action="store_true", help="log: only denied calls")
    admin.add_argument("--since", metavar="DURATION", default="",
                       help="log: only the last DURATION (30m, 12h, 7d)")
    admin.add_argument("--limit", type=int, default=50, help="log: at most this many (default 50)")
    for name, func, verb in (("share", cmd_share, "let another team read"),
                             ("unshare", cmd_unshare, "stop another team reading")):
        share = command(name, with_client(func), f"{verb} one of your team's models (with all its "
                        "versions) or datasets")
        share.add_argument("name", help="the model's name (or the dataset's, with --dataset)")
        share.add_argument("--with", dest="team", required=True, metavar="TEAM")
        share.add_argument("--dataset", action="store_true", help="NAME is a dataset")
    command("grants", with_client(cmd_grants), "what your team shares and what is shared with it")


def cmd_share(args: argparse.Namespace, client: Client) -> int:
    grant = client.share(args.team, **_target(args))
    name = grant.model_name or grant.dataset_name
    kind = "model" if grant.model_name else "dataset"
    print(f"{kind} {name} shared with team {grant.grantee} (read-only); they name it "
          f"{grant.owner}/{name}")
    return 0


def cmd_unshare(args: argparse.Namespace, client: Client) -> int:
    grant = client.unshare(args.team, **_target(args))
    print(f"{'model' if grant.model_name else 'dataset'} {grant.model_name or grant.dataset_name} "
          f"no longer shared with team {grant.grantee}")
    return 0


def cmd_grants(args: argparse.Namespace, client: Client) -> int:
    grants = client.list_grants()
    print(f"{'KIND':<8} {'NAME':<40} {'OWNER':<16} {'READER':<16} SINCE")
    for grant in [*grants.given, *grants.received]:
        kind = "model" if grant.model_name else "dataset"
        print(f"{kind:<8} {grant.model_name or grant.dataset_name:<40} {grant.owner:<16} "
              f"{grant.grantee:<16} {_when(grant.created_at)}")
    return 0


def _target(args: argparse.Namespace) -> dict[str, str]:
    return {"dataset": args.name} if args.dataset else {"model": args.name}


def cmd_whoami(args: argparse.Namespace, client: Client) -> int:
    me = client.whoami()
    print(f"key {me.key_id}  team {me.team}  role {auth.role_name(me.role)}"
          + (f"  user {me.user}" if me.user else "") + (f"  job {me.job_id}" if me.job_id else ""))
    return 0


def cmd_admin(args: argparse.Namespace, client: Client) -> int:
    if args.what == "log":
        return _log(args, client)
    if args.action is None:
        raise ValueError(f"admin {args.what} needs an action: create, list or revoke")
    if args.what == "team":
        if args.action == "create":
            if not args.name:
                raise ValueError("admin team create NAME: give the team's name")
            print(f"team {client.create_team(args.name).name} created")
        elif args.action == "list":
            for team in client.list_teams():
                print(team.name)
        else:
            raise ValueError("teams are not removed; revoke their keys instead")
        return 0
    if args.action == "create":
        if not args.team or not args.role:
            raise ValueError("admin key create needs --team NAME and --role reader|writer|admin")
        created = client.create_key(args.team, auth.parse_role(args.role), args.expires,
                                    args.description, args.user)
        print(created.secret)
        print(f"(key {created.key.id} of team {created.key.team}, {args.role}"
              + (f", expires in {args.expires} days" if args.expires else "")
              + "; shown once: store it now, e.g. export LAMBDASCOPE_API_KEY=...)", flush=True)
    elif args.action == "list":
        keys = client.list_keys(args.team or "", include_revoked=args.all)
        print(f"{'KEY':<18} {'TEAM':<16} {'USER':<16} {'ROLE':<7} {'EXPIRES':<20} {'STATE':<8} "
              "DESCRIPTION")
        for key in keys:
            print(f"{key.id:<18} {key.team:<16} {key.user or '-':<16} {auth.role_name(key.role):<7} "
                  f"{_when(key.expires_at) if key.HasField('expires_at') else 'never':<20} "
                  f"{'revoked' if key.HasField('revoked_at') else 'active':<8} {key.description}")
    else:
        if not args.name:
            raise ValueError("admin key revoke KEY_ID: give the key's id (see `admin key list`)")
        key = client.revoke_key(args.name)
        print(f"key {key.id} of team {key.team} revoked")
    return 0


def _log(args: argparse.Namespace, client: Client) -> int:
    since = time.time() - _seconds(args.since) if args.since else 0.0
    events = client.audit_events(team=args.team or "", denied_only=args.denied, since=since,
                                 limit=args.limit)
    print(f"{'TIME':<20} {'SERVICE':<9} {'TEAM':<14} {'USER':<14} {'KEY':<18} {'RPC':<26} "
          f"{'ANSWER':<18} {'REASON':<12} OBJECT")
    for e in events:
        rpc = e.rpc.rsplit(".", 1)[-1]
        print(f"{_when(e.at, seconds=True):<20} {e.service:<9} {e.team or '-':<14} "
              f"{e.user or '-':<14} {e.key_id or '-':<18} {rpc:<26} {e.code:<18} {e.reason or '-':<12} "
              f"{e.object}{'  -> ' + e.result_id if e.result_id else ''}")
    return 0


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"--since {text!r}: give a number and a unit, e.g. 30m, 12h, 7d") from None


def _when(ts, seconds: bool = False) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M UTC")

