//! The object store holding segments and indexes: local filesystem by default, any
//! `object_store` URL (S3, GCS, Azure, file) when configured.
//!
//! A put returns once the object is durable: a remote store acknowledges only what it stored;
//! on the local file system Quiver writes the file itself (object_store's local store does not
//! fsync), so a segment reported as flushed survives a power cut, see [`crate::disk`].

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::{path::Path, ObjectStore, PutPayload};

use crate::config::Config;
use crate::error::{Error, Result};

/// A handle on the cluster's shared object store. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The local store again, typed, when the objects are local files: puts go around it.
    local: Option<LocalStore>,
}

#[derive(Clone)]
struct LocalStore {
    store: Arc<LocalFileSystem>,
    /// The canonical directory holding the objects (made durable at open).
    root: PathBuf,
}

impl Objects {
    /// Opens the store named by `storage.url`, or `<data_dir>/objects` when it is empty.
    pub fn open(config: &Config) -> Result<Objects> {
        if config.storage.url.is_empty() {
            return Objects::local(config.local_objects_dir());
        }
        let url = url_parse(&config.storage.url)?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| Error::Config(format!("storage.url {}: not a local path", config.storage.url)))?;
            return Objects::local(dir);
        }
        let (store, prefix) = object_store::parse_url(&url)
            .map_err(|e| Error::Config(format!("storage.url {}: {e}", config.storage.url)))?;
        Ok(Objects { store: Arc::from(store), prefix, local: None })
    }

    fn local(dir: PathBuf) -> Result<Objects> {
        crate::disk::create_dir_all(&dir)?;
        let dir = dir.canonicalize()?;
        let store = Arc::new(LocalFileSystem::new_with_prefix(&dir)?);
        Ok(Objects { store: store.clone(), prefix: Path::default(), local: Some(LocalStore { store, root: dir }) })
    }

    fn full(&self, path: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(path.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    /// Stores `bytes` at `path`, replacing what was there; returns once they are durable.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        let full = self.full(path);
        let Some(local) = &self.local else {
            self.store.put(&full, PutPayload::from_bytes(bytes)).await?;
            return Ok(());
        };
        // The file where the local store's get and delete look for this object.
        let file = local.store.path_to_filesystem(&full)?;
        let root = local.root.clone();
        tokio::task::spawn_blocking(move || {
            crate::disk::write_file(&root, &file, &bytes)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", file.display())))
        })
        .await
        .map_err(Error::internal)??;
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
