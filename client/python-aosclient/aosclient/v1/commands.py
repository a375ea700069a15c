"""``openstack aos node|task|power|power-device ...``: cliff commands over the v1 API."""

import json

from osc_lib.command import command

NODE_COLUMNS = ("name", "state", "maintenance", "evacuation_allowed", "is_reserve", "nova_status", "nova_state")
TASK_COLUMNS = ("id", "kind", "state", "node_id", "attempts", "created_at", "finished_at")
EVENT_COLUMNS = ("occurred_at", "kind", "from_state", "to_state", "actor", "reason", "task_id")
DEVICE_COLUMNS = ("name", "driver", "address", "port", "username", "password_set")


def _cell(value):
    """Nested values as compact JSON, so every formatter (table, json, value) can print them."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _table(rows, columns, long=False):
    if long:
        extra = sorted({key for row in rows for key in row} - set(columns))
        columns = tuple(columns) + tuple(extra)
    return columns, [tuple(_cell(row.get(column)) for column in columns) for row in rows]


def _one(document):
    keys = sorted(document)
    return keys, [_cell(document[key]) for key in keys]


def _client(cmd):
    return cmd.app.client_manager.aos


class ListNode(command.Lister):
    """List nodes (every page, unless --limit asks for one)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--state", metavar="<state>", help="Only nodes in this state (up, down, maintenance, ...)")
        parser.add_argument("--limit", metavar="<n>", type=int, help="One page of at most <n> nodes")
        parser.add_argument("--marker", metavar="<name>", help="Start after this node")
        parser.add_argument("--long", action="store_true", help="Every field")
        return parser

    def take_action(self, args):
        nodes = _client(self).list_nodes(limit=args.limit, marker=args.marker, state=args.state)
        return _table(nodes, NODE_COLUMNS, args.long)


class ShowNode(command.ShowOne):
    """Show a node with its power bindings and storages."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("node", metavar="<node>", help="Node (hypervisor host) name")
        return parser

    def take_action(self, args):
        return _one(_client(self).get_node(args.node))


class NodeHistory(command.Lister):
    """Show a node's timeline, newest first."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("node", metavar="<node>", help="Node (hypervisor host) name")
        parser.add_argument("--limit", metavar="<n>", type=int, help="At most <n> events")
        parser.add_argument("--long", action="store_true", help="Every field")
        return parser

    def take_action(self, args):
        return _table(_client(self).node_history(args.node, args.limit), EVENT_COLUMNS, args.long)


class EvacuateNode(command.ShowOne):
    """Evacuate a node's instances (a task), or only show the plan with --dry-run."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("node", metavar="<node>", help="Node (hypervisor host) name")
        parser.add_argument("--dry-run", action="store_true", help="Only compute and show the plan")
        parser.add_argument(
            "--skip-fence", action="store_true", help="Do not power the node off first (you vouch it is dead)"
        )
        return parser

    def take_action(self, args):
        answer = _client(self).node_action(
            args.node, {"evacuate": {"dry_run": args.dry_run, "skip_fence": args.skip_fence}}
        )
        return _one(answer.get("task") or answer)


class _Maintenance(command.ShowOne):
    enabled = True

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("node", metavar="<node>", help="Node (hypervisor host) name")
        return parser

    def take_action(self, args):
        return _one(_client(self).node_action(args.node, {"maintenance": {"enabled": self.enabled}})["node"])


class SetMaintenance(_Maintenance):
    """Put a node into maintenance (no evacuation, no balancing onto it)."""

    enabled = True


class UnsetMaintenance(_Maintenance):
    """Take a node out of maintenance."""

    enabled = False


class ListTask(command.Lister):
    """List tasks, newest first."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--node", metavar="<node>", help="Only tasks of this node")
        parser.add_argument("--limit", metavar="<n>", type=int, help="At most <n> tasks")
        parser.add_argument("--long", action="store_true", help="Every field")
        return parser

    def take_action(self, args):
        return _table(_client(self).list_tasks(args.node, args.limit), TASK_COLUMNS, args.long)


class ShowTask(command.ShowOne):
    """Show a task with its steps."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("task", metavar="<task-id>", help="Task id")
        return parser

    def take_action(self, args):
        return _one(_client(self).get_task(args.task))


class PowerStatus(command.ShowOne):
    """Read a node's power state from its power device."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("node", metavar="<node>", help="Node (hypervisor host) name")
        return parser

    def take_action(self, args):
        return _one(_client(self).power_status(args.node))


class _PowerAction(PowerStatus):
    action = "on"

    def take_action(self, args):
        return _one(_client(self).node_action(args.node, {"power": {"action": self.action}})["power"])


class PowerOn(_PowerAction):
    """Power a node on through its power device."""

    action = "on"


class PowerOff(_PowerAction):
    """Power a node off through its power device."""

    action = "off"


class ListPowerDevice(command.Lister):
    """List power devices (never a credential, only whether one is set)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--long", action="store_true", help="Every field")
        return parser

    def take_action(self, args):
        return _table(_client(self).list_power_devices(), DEVICE_COLUMNS, args.long)


class ShowPowerDevice(command.ShowOne):
    """Show a power device and its node bindings."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("device", metavar="<device>", help="Power device name")
        return parser

    def take_action(self, args):
        return _one(_client(self).get_power_device(args.device))
