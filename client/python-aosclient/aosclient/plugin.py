"""The python-openstackclient plugin interface (entry point group ``openstack.cli.extension``).

python-openstackclient imports this module, reads ``API_NAME`` and ``API_VERSIONS``, loads the
commands of group ``openstack.aos.v<version>``, and calls ``make_client`` the first time a
command uses ``self.app.client_manager.aos``.
"""

from osc_lib import utils

API_NAME = "aos"
API_VERSION_OPTION = "os_aos_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "aosclient.v1.client.Client"}

# The catalogue entry `aos-cloud-manager keystone register` creates.
SERVICE_TYPE = "cloud-manager"


def make_client(instance):
    """The v1 client over the openstack CLI's keystoneauth session: the API's URL comes from
    the catalogue (service type ``cloud-manager``, the CLI's region and interface) unless
    ``--os-aos-endpoint`` overrides it."""
    client_class = utils.get_client_class(API_NAME, instance._api_version[API_NAME], API_VERSIONS)
    return client_class(
        session=instance.session,
        service_type=SERVICE_TYPE,
        interface=instance.interface,
        region_name=instance.region_name,
        endpoint_override=instance.get_configuration().get("aos_endpoint"),
    )


def build_option_parser(parser):
    parser.add_argument(
        "--os-aos-api-version",
        metavar="<aos-api-version>",
        default=utils.env("OS_AOS_API_VERSION", default=DEFAULT_API_VERSION),
        help="aos-cloud-manager API version, default=%s (Env: OS_AOS_API_VERSION)" % DEFAULT_API_VERSION,
    )
    parser.add_argument(
        "--os-aos-endpoint",
        metavar="<url>",
        default=utils.env("OS_AOS_ENDPOINT"),
        help="aos-cloud-manager API URL instead of the catalogue's (Env: OS_AOS_ENDPOINT)",
    )
    return parser
