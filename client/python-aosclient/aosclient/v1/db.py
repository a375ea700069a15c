"""``openstack aos db list|migrate``: run on a controller, these delegate to the local
``aos-cloud-manager`` binary (``$AOS_CLOUD_MANAGER`` or the one on ``PATH``), which reads the
database URL from its configuration files, as the reference tool's db commands do. They need
no token and no catalogue."""

import os
import shutil
import subprocess

from osc_lib import exceptions
from osc_lib.command import command


def _binary():
    binary = os.environ.get("AOS_CLOUD_MANAGER") or shutil.which("aos-cloud-manager")
    if not binary:
        raise exceptions.CommandError(
            "aos-cloud-manager is not installed here (not on PATH; set AOS_CLOUD_MANAGER to its path)"
        )
    return binary


class _Db(command.Command):
    auth_required = False

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("-n", "--name", metavar="<module>", default="cloud_manager", help="Module name")
        parser.add_argument(
            "--config-file",
            metavar="<path>",
            action="append",
            default=[],
            help="aos-cloud-manager configuration file (repeatable)",
        )
        parser.add_argument(
            "--no-default-config-files",
            action="store_true",
            help="Do not read /etc/aos/aos.conf and /etc/aos/cloud_manager.conf",
        )
        return parser

    def arguments(self, args):
        """The `db` subcommand's arguments."""
        return []

    def take_action(self, args):
        line = [_binary()]
        for path in args.config_file:
            line += ["--config-file", path]
        if args.no_default_config_files:
            line.append("--no-default-config-files")
        line += ["db"] + self.arguments(args)
        code = subprocess.call(line)
        if code != 0:
            raise exceptions.CommandError("`%s` exited with status %s" % (" ".join(line), code))


class ListMigrations(_Db):
    """Show the schema version and every migration (applied or not)."""

    def arguments(self, args):
        return ["list", "-n", args.name]


class Migrate(_Db):
    """Move the schema to a migration (the latest by default)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--migration", metavar="<N>", type=int, help="Target migration (0 = empty schema)")
        parser.add_argument("-v", "--verbose", action="store_true", help="List every migration applied or reverted")
        return parser

    def arguments(self, args):
        line = ["migrate", "-n", args.name]
        if args.migration is not None:
            line += ["--migration", str(args.migration)]
        if args.verbose:
            line.append("-v")
        return line
