//! The microversion each call asks for, in one place. Nova and Placement answer with the
//! version requested (never "latest"), so response shapes and behaviour are fixed by these
//! constants, not by whichever Nova the cloud runs. docs/adr/0006-openstack-client.md
//! explains each choice; the short reasons are here.

/// `GET /os-services`, `PUT /os-services/{id}` (force down, disable, enable).
/// 2.53: service ids are UUIDs and `PUT /os-services/{id}` exists (2.11 added `forced_down`).
/// Deliberately below 2.69: a service in an unreachable cell is left out of the list instead
/// of appearing as a partial `UNKNOWN` record without id or state; the tracker treats a
/// missing host as "no observation", never as "down".
pub const COMPUTE_SERVICES: &str = "2.53";

/// `GET /os-hypervisors/detail`. 2.88: no more resource fields (capacity comes from
/// Placement), UUID ids (≥2.53), `limit`/`marker` paging (≥2.33).
pub const HYPERVISORS: &str = "2.88";

/// Every `/servers` call: list, show, create, delete, evacuate, live-migrate.
/// 2.94 because of evacuate: from 2.95 on an evacuated server ends SHUTOFF whatever it was
/// before; at 2.94 Nova keeps its state (an active server comes back active, a stopped one
/// stays stopped), which is what a failover must do. Everything else we read is there by
/// 2.94: embedded flavor (2.47), `server_groups` on show (2.71), `networks: "none"` (2.37),
/// `host` at create (2.74), live-migration without `force` (2.68).
pub const SERVERS: &str = "2.94";

/// `GET /os-migrations`. 2.80 is the last version that changed this API: `uuid` and
/// `limit`/`marker`/`changes-since` paging (2.59), `changes-before` (2.66), user/project ids
/// (2.80).
pub const MIGRATIONS: &str = "2.80";

/// `/os-aggregates` calls. 2.41 adds the aggregate `uuid`; nothing later changes them
/// (2.81 only adds image pre-caching).
pub const AGGREGATES: &str = "2.41";

/// `/os-server-groups` calls. 2.64: a single `policy` plus `rules` instead of `policies`.
pub const SERVER_GROUPS: &str = "2.64";

/// `GET /flavors/detail`. 2.75: `swap` is 0 rather than "" when there is none.
pub const FLAVORS: &str = "2.75";

/// Every Placement call. 1.29 (Rocky): `parent_provider_uuid`/`root_provider_uuid` (1.14),
/// provider summaries with every resource class (1.27) and nested providers in allocation
/// candidates (1.29). Later versions change nothing we read, and 1.29 leaves older clouds
/// usable.
pub const PLACEMENT: &str = "1.29";
