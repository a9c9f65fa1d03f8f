//! Push: missing blobs by monolithic upload, then the manifest.

use reqwest::{header, Method, StatusCode};

use super::{RegistryClient, RegistryError, Scope};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

impl RegistryClient {
    /// Pushes stored image `image` to `dest`: missing blobs (monolithic upload), then
    /// the manifest under the destination tag.
    pub async fn push(
        &self,
        store: &Store,
        image: &ImageRecord,
        dest: &Reference,
    ) -> Result<Digest, RegistryError> {
        let host = dest.endpoint_host().to_string();
        let repo = dest.repository.as_str();
        let base = self.base(&host);
        let mut blobs: Vec<Digest> = image.layers.iter().map(|l| l.blob.clone()).collect();
        blobs.push(image.id.clone());
        for d in blobs {
            let url = format!("{base}/{repo}/blobs/{d}");
            let head = self
                .send(
                    Method::HEAD,
                    &url,
                    Scope {
                        host: &host,
                        repo,
                        actions: "pull,push",
                    },
                    &[],
                    None,
                )
                .await?;
            if head.status().is_success() {
                continue;
            }
            let start_url = format!("{base}/{repo}/blobs/uploads/");
            let resp = self
                .send(
                    Method::POST,
                    &start_url,
                    Scope {
                        host: &host,
                        repo,
                        actions: "pull,push",
                    },
                    &[],
                    None,
                )
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(Self::error_for(&start_url, resp).await);
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegistryError::BadDocument {
                    url: start_url.clone(),
                    detail: "upload without Location".into(),
                })?;
            let mut put_url = reqwest::Url::parse(&start_url)
                .and_then(|u| u.join(location))
                .map_err(|e| RegistryError::BadDocument {
                    url: start_url.clone(),
                    detail: e.to_string(),
                })?;
            put_url
                .query_pairs_mut()
                .append_pair("digest", &d.to_string());
            let body = store.read_blob(&d)?;
            let resp = self
                .send(
                    Method::PUT,
                    put_url.as_str(),
                    Scope {
                        host: &host,
                        repo,
                        actions: "pull,push",
                    },
                    &[(header::CONTENT_TYPE, "application/octet-stream".into())],
                    Some(&body),
                )
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(Self::error_for(put_url.as_str(), resp).await);
            }
        }
        let manifest = store.read_blob(&image.manifest)?;
        let tag = dest
            .tag
            .clone()
            .unwrap_or_else(|| image.manifest.to_string());
        let url = format!("{base}/{repo}/manifests/{tag}");
        let resp = self
            .send(
                Method::PUT,
                &url,
                Scope {
                    host: &host,
                    repo,
                    actions: "pull,push",
                },
                &[(header::CONTENT_TYPE, image.manifest_media_type.clone())],
                Some(&manifest),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::error_for(&url, resp).await);
        }
        Ok(image.manifest.clone())
    }
}
