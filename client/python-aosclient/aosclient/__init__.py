"""python-openstackclient plugin for aos-cloud-manager (``openstack aos ...``)."""
