//! The object store holding segments and indexes: local filesystem by default, any
//! `object_store` URL (S3, GCS, Azure, file) when configured.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{path::Path, ObjectStore, PutPayload};

use crate::config::Config;
use crate::error::{Error, Result};

/// A handle on the cluster's shared object store. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl Objects {
    /// Opens the store named by `storage.url`, or `<data_dir>/objects` when it is empty.
    pub fn open(config: &Config) -> Result<Objects> {
        if config.storage.url.is_empty() {
            let dir = config.local_objects_dir();
            std::fs::create_dir_all(&dir)?;
            let dir = dir.canonicalize()?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
            return Ok(Objects { store: Arc::new(store), prefix: Path::default() });
        }
        let url = url_parse(&config.storage.url)?;
        let (store, prefix) = object_store::parse_url(&url)
            .map_err(|e| Error::Config(format!("storage.url {}: {e}", config.storage.url)))?;
        Ok(Objects { store: Arc::from(store), prefix })
    }

    fn full(&self, path: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(path.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.store.put(&self.full(path), PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let got = self.store.get(&self.full(path)).await.map_err(|e| match e {
            // A missing object is Quiver's problem (a segment or index it wrote is gone), never
            // the caller's "not found".
            object_store::Error::NotFound { .. } => {
                Error::Internal(format!("object {path} is missing from the object store"))
            }
            other => Error::ObjectStore(other),
        })?;
        Ok(got.bytes().await?)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.full(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn url_parse(s: &str) -> Result<url::Url> {
    url::Url::parse(s).map_err(|e| Error::Config(format!("storage.url {s}: {e}")))
}
