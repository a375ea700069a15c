"""A thin client of the aos-cloud-manager v1 API over a keystoneauth session."""

from keystoneauth1 import adapter
from osc_lib import exceptions


class Client:
    def __init__(self, session, service_type, interface=None, region_name=None, endpoint_override=None):
        self.http = adapter.Adapter(
            session=session,
            service_type=service_type,
            interface=interface,
            region_name=region_name,
            endpoint_override=endpoint_override,
        )

    def _call(self, method, path, body=None, params=None):
        # raise_exc=False: the API's own message (OpenStack's {"<fault>": {"code", "message"}})
        # is better than keystoneauth's generic one.
        response = self.http.request(path, method, json=body, params=params, raise_exc=False)
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code >= 400:
            message = response.text
            if isinstance(document, dict) and document:
                fault = next(iter(document.values()))
                if isinstance(fault, dict) and "message" in fault:
                    message = fault["message"]
            request_id = response.headers.get("x-openstack-request-id", "")
            raise exceptions.CommandError(
                "%s %s: HTTP %s: %s (request %s)" % (method, path, response.status_code, message, request_id)
            )
        return document

    def list_nodes(self, limit=None, marker=None, **filters):
        """Every node (following the `next` links) unless `limit` asks for one page."""
        params = {key: value for key, value in filters.items() if value is not None}
        if limit is not None:
            params["limit"] = limit
        if marker is not None:
            params["marker"] = marker
        nodes = []
        path = "/v1/nodes"
        while True:
            page = self._call("GET", path, params=params)
            nodes.extend(page["nodes"])
            following = [link["href"] for link in page.get("nodes_links", []) if link.get("rel") == "next"]
            if limit is not None or not following:
                return nodes
            path, params = following[0], None

    def get_node(self, name):
        return self._call("GET", "/v1/nodes/%s" % name)["node"]

    def node_history(self, name, limit=None):
        return self._call("GET", "/v1/nodes/%s/history" % name, params={"limit": limit} if limit else None)["events"]

    def node_action(self, name, action):
        return self._call("POST", "/v1/nodes/%s/action" % name, body=action)

    def power_status(self, name):
        return self._call("GET", "/v1/nodes/%s/power" % name)["power"]

    def list_tasks(self, node=None, limit=None):
        params = {key: value for key, value in (("node", node), ("limit", limit)) if value is not None}
        return self._call("GET", "/v1/tasks", params=params)["tasks"]

    def get_task(self, task_id):
        return self._call("GET", "/v1/tasks/%s" % task_id)["task"]

    def list_power_devices(self):
        return self._call("GET", "/v1/power-devices")["power_devices"]

    def get_power_device(self, name):
        return self._call("GET", "/v1/power-devices/%s" % name)["power_device"]
