"""`windtunnel config keys [SECTION]`: the run config's keys with their types, defaults and docs."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("config", help="the run config's keys: types, defaults and what each does",
                       description="About the run config (the YAML that train, sweeps and transfer read).")
    config_sub = p.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    k = config_sub.add_parser("keys", help="list every config key (or one section's) with its type, default and doc",
                              description="List the config keys, as --set and sweep specs name them, with their "
                                          "type, default and documentation.")
    k.add_argument("section", nargs="?", help="model, train or data (default: all)")
    k.set_defaults(func=_cmd_keys)

    def usage(_args) -> int:  # `windtunnel config` alone
        p.print_help()
        return 2
    p.set_defaults(func=usage)


def _cmd_keys(args) -> int:
    from ..config_keys import config_keys, format_keys
    print(format_keys(config_keys(args.section)))
    return 0
