//! Glance, for one thing only: the id of an image by name, which tests and benchmarks need to
//! boot servers. The HA suite itself never calls Glance.

use reqwest::Method;
use serde::Deserialize;

use crate::client::{ApiRequest, OpenStackClient, Service};
use crate::error::OpenStackError;

impl OpenStackClient {
    /// The id of the image called `name` (`GET /v2/images?name=`), `NotFound` if none is.
    pub async fn image_id_by_name(&self, name: &str) -> Result<String, OpenStackError> {
        #[derive(Deserialize)]
        struct Image {
            id: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            images: Vec<Image>,
        }
        let request = ApiRequest::new(Service::Image, Method::GET, "/v2/images").query("name", name);
        let answer: Answer = self.send_json(&request).await?;
        answer.images.into_iter().next().map(|image| image.id).ok_or_else(|| OpenStackError::NotFound {
            call: "glance GET /v2/images".into(),
            message: format!("no image named {name:?}"),
        })
    }
}
