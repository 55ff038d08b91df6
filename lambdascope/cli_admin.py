"""`lambdascope admin ...`, `whoami`, `share`, `unshare` and `grants`: teams, API keys
(lambdascope.auth) and read-only sharing between teams."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from lambdascope import auth
from lambdascope.client import Client


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 with_client: Callable[[Callable[[argparse.Namespace, Client], int]],
                                       Callable[[argparse.Namespace], int]]) -> None:
    """Register the commands with the CLI's `command(name, func, help)` factory; `with_client`
    turns a command taking (args, client) into one taking args."""
    command("whoami", with_client(cmd_whoami), "the team and role of the API key in use")
    admin = command("admin", with_client(cmd_admin), "teams and API keys (needs an admin key)")
    admin.add_argument("what", choices=["team", "key"])
    admin.add_argument("action", choices=["create", "list", "revoke"])
    admin.add_argument("name", nargs="?", help="team create: the team's name; key revoke: the key id")
    admin.add_argument("--team", help="key create: the key's team; key list: only this team's")
    admin.add_argument("--role", choices=["reader", "writer", "admin"],
                       help="key create: reader (get, list, download, watch), writer (also upload, "
                            "train, audit, alias, tag, delete) or admin (also teams, keys, gc)")
    admin.add_argument("--expires", type=int, default=0, metavar="DAYS",
                       help="key create: days until the key stops working (default: never)")
    admin.add_argument("--description", default="", help="key create: what the key is for")
    admin.add_argument("--all", action="store_true", help="key list: revoked keys too")
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
          + (f"  job {me.job_id}" if me.job_id else ""))
    return 0


def cmd_admin(args: argparse.Namespace, client: Client) -> int:
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
                                    args.description)
        print(created.secret)
        print(f"(key {created.key.id} of team {created.key.team}, {args.role}"
              + (f", expires in {args.expires} days" if args.expires else "")
              + "; shown once: store it now, e.g. export LAMBDASCOPE_API_KEY=...)", flush=True)
    elif args.action == "list":
        keys = client.list_keys(args.team or "", include_revoked=args.all)
        print(f"{'KEY':<18} {'TEAM':<16} {'ROLE':<7} {'EXPIRES':<20} {'STATE':<8} DESCRIPTION")
        for key in keys:
            print(f"{key.id:<18} {key.team:<16} {auth.role_name(key.role):<7} "
                  f"{_when(key.expires_at) if key.HasField('expires_at') else 'never':<20} "
                  f"{'revoked' if key.HasField('revoked_at') else 'active':<8} {key.description}")
    else:
        if not args.name:
            raise ValueError("admin key revoke KEY_ID: give the key's id (see `admin key list`)")
        key = client.revoke_key(args.name)
        print(f"key {key.id} of team {key.team} revoked")
    return 0


def _when(ts) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")

