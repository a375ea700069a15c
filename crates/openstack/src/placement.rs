//! Placement: resource providers (one per compute node, uuid = hypervisor id), their
//! inventories and usages, and capacity for every host in two calls.
//!
//! Placement has no bulk "inventories of every provider" call. What comes closest is
//! `GET /allocation_candidates`, whose `provider_summaries` give `capacity` ((total -
//! reserved) × allocation_ratio) and `used` for every resource class of every provider tree
//! that could host the request. [`OpenStackClient::capacities`] asks for the smallest request
//! (`MEMORY_MB:1`), which every compute node with any free memory satisfies, and fills in the
//! few providers left out (full, or not compute nodes) with their own inventories and usages.
//! So capacity costs 2 calls for the whole cloud plus 2 per *full* provider, not 2 per host.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde::Deserialize;

use crate::client::{ApiRequest, OpenStackClient, Service, path_segment as segment};
use crate::error::OpenStackError;
use crate::microversion;

/// The request whose candidates cover every provider with room for anything.
const PROBE_RESOURCES: &str = "MEMORY_MB:1";

/// A resource provider (`GET /resource_providers`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResourceProvider {
    pub uuid: String,
    /// For a compute node: its hypervisor_hostname.
    pub name: String,
    pub generation: u64,
    #[serde(default)]
    pub parent_provider_uuid: Option<String>,
    #[serde(default)]
    pub root_provider_uuid: Option<String>,
}

/// One resource class of a provider's inventory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Inventory {
    pub total: u64,
    #[serde(default)]
    pub reserved: u64,
    #[serde(default = "one")]
    pub min_unit: u64,
    /// The largest amount one consumer (server) may take.
    #[serde(default)]
    pub max_unit: u64,
    #[serde(default = "one")]
    pub step_size: u64,
    #[serde(default = "ratio_one")]
    pub allocation_ratio: f64,
}

impl Inventory {
    /// What the scheduler may allocate: (total - reserved) × allocation_ratio, rounded down
    /// as Placement does.
    pub fn capacity(&self) -> u64 {
        (self.total.saturating_sub(self.reserved) as f64 * self.allocation_ratio) as u64
    }
}

fn one() -> u64 {
    1
}

fn ratio_one() -> f64 {
    1.0
}

/// Allocatable capacity and current use of one resource class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ResourceCapacity {
    pub capacity: u64,
    pub used: u64,
}

/// Capacity of one provider, per resource class (VCPU, MEMORY_MB, DISK_GB, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCapacity {
    pub uuid: String,
    pub name: String,
    pub resources: BTreeMap<String, ResourceCapacity>,
}

impl OpenStackClient {
    /// Every resource provider (one call).
    pub async fn resource_providers(&self) -> Result<Vec<ResourceProvider>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            resource_providers: Vec<ResourceProvider>,
        }
        let request = ApiRequest::new(Service::Placement, Method::GET, "/resource_providers")
            .microversion(microversion::PLACEMENT);
        Ok(self.send_json::<Answer>(&request).await?.resource_providers)
    }

    /// A provider's inventory, per resource class.
    pub async fn inventories(&self, provider_uuid: &str) -> Result<BTreeMap<String, Inventory>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            inventories: BTreeMap<String, Inventory>,
        }
        let request = ApiRequest::new(
            Service::Placement,
            Method::GET,
            format!("/resource_providers/{}/inventories", segment(provider_uuid)),
        )
        .microversion(microversion::PLACEMENT);
        Ok(self.send_json::<Answer>(&request).await?.inventories)
    }

    /// What is allocated from a provider, per resource class.
    pub async fn usages(&self, provider_uuid: &str) -> Result<BTreeMap<String, u64>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            usages: BTreeMap<String, u64>,
        }
        let request = ApiRequest::new(
            Service::Placement,
            Method::GET,
            format!("/resource_providers/{}/usages", segment(provider_uuid)),
        )
        .microversion(microversion::PLACEMENT);
        Ok(self.send_json::<Answer>(&request).await?.usages)
    }

    /// Capacity and use of every resource provider: `GET /resource_providers` plus one
    /// `GET /allocation_candidates` for all of them, plus inventories and usages for each
    /// provider the candidates leave out (see the module header). Needs the admin (or
    /// service) role, like the rest of this client.
    pub async fn capacities(&self) -> Result<Vec<ProviderCapacity>, OpenStackError> {
        let providers = self.resource_providers().await?;
        let request = ApiRequest::new(Service::Placement, Method::GET, "/allocation_candidates")
            .microversion(microversion::PLACEMENT)
            .query("resources", PROBE_RESOURCES);
        let summaries = parse_provider_summaries(&self.send(&request).await?.body).map_err(|message| {
            OpenStackError::InvalidResponse { call: "placement GET /allocation_candidates".into(), message }
        })?;
        let mut capacities = Vec::with_capacity(providers.len());
        for provider in providers {
            let resources = match summaries.get(&provider.uuid) {
                Some(resources) => resources.clone(),
                None => {
                    let inventories = self.inventories(&provider.uuid).await?;
                    let usages = self.usages(&provider.uuid).await?;
                    capacity_from_inventories(&inventories, &usages)
                }
            };
            capacities.push(ProviderCapacity { uuid: provider.uuid, name: provider.name, resources });
        }
        Ok(capacities)
    }
}

/// `provider_summaries` of an allocation-candidates answer: uuid → class → capacity/used.
fn parse_provider_summaries(body: &[u8]) -> Result<BTreeMap<String, BTreeMap<String, ResourceCapacity>>, String> {
    #[derive(Deserialize)]
    struct Summary {
        resources: BTreeMap<String, ResourceCapacity>,
    }
    #[derive(Deserialize)]
    struct Answer {
        provider_summaries: BTreeMap<String, Summary>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    Ok(answer.provider_summaries.into_iter().map(|(uuid, summary)| (uuid, summary.resources)).collect())
}

/// The same figures as a provider summary, computed from an inventory and its usages.
fn capacity_from_inventories(
    inventories: &BTreeMap<String, Inventory>,
    usages: &BTreeMap<String, u64>,
) -> BTreeMap<String, ResourceCapacity> {
    let classes: BTreeSet<&String> = inventories.keys().chain(usages.keys()).collect();
    classes
        .into_iter()
        .map(|class| {
            let capacity = inventories.get(class).map_or(0, Inventory::capacity);
            let used = usages.get(class).copied().unwrap_or(0);
            (class.clone(), ResourceCapacity { capacity, used })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventories_give_placements_capacity_figures() {
        #[derive(Deserialize)]
        struct Answer {
            inventories: BTreeMap<String, Inventory>,
        }
        let answer: Answer = serde_json::from_str(include_str!("../fixtures/placement_inventories.json")).unwrap();
        let memory = &answer.inventories["MEMORY_MB"];
        assert_eq!((memory.total, memory.reserved, memory.max_unit), (16384, 512, 16384));
        assert_eq!(memory.capacity(), 15872);
        let vcpu = &answer.inventories["VCPU"];
        assert_eq!(vcpu.allocation_ratio, 4.0);
        assert_eq!(vcpu.capacity(), 32);
    }

    #[test]
    fn capacity_computed_from_inventories_matches_the_provider_summary() {
        #[derive(Deserialize)]
        struct Inventories {
            inventories: BTreeMap<String, Inventory>,
        }
        #[derive(Deserialize)]
        struct Usages {
            usages: BTreeMap<String, u64>,
        }
        let inventories: Inventories =
            serde_json::from_str(include_str!("../fixtures/placement_inventories.json")).unwrap();
        let usages: Usages = serde_json::from_str(include_str!("../fixtures/placement_usages.json")).unwrap();
        let computed = capacity_from_inventories(&inventories.inventories, &usages.usages);
        let summaries =
            parse_provider_summaries(include_bytes!("../fixtures/placement_allocation_candidates.json")).unwrap();
        // Both fixtures are of fake-1, captured with no servers on it.
        assert_eq!(computed, summaries["7a3b1646-d468-53be-86e6-3bdc164e34a9"]);
        assert_eq!(summaries.len(), 3);
    }

    #[test]
    fn resource_providers_are_read_with_their_tree() {
        #[derive(Deserialize)]
        struct Answer {
            resource_providers: Vec<ResourceProvider>,
        }
        let answer: Answer =
            serde_json::from_str(include_str!("../fixtures/placement_resource_providers.json")).unwrap();
        let first = &answer.resource_providers[0];
        assert_eq!(first.name, "fake-1");
        assert_eq!(first.root_provider_uuid.as_deref(), Some(first.uuid.as_str()));
        assert_eq!(first.parent_provider_uuid, None);
    }
}
