//! The object store holding segments and indexes: the local file system by default; S3 (AWS or
//! any S3-compatible service), Google Cloud Storage or Azure Blob Storage when `storage.url`
//! names one (`s3://`, `gs://`, `az://`).
//!
//! A put returns once the object is durable: a remote store acknowledges only what it stored;
//! on the local file system Quiver writes the file itself (object_store's local store does not
//! fsync), so a segment reported as flushed survives a power cut, see [`crate::disk`]. Remote
//! requests are retried with backoff (`storage.max_retries`, `retry_timeout`, `backoff_*`),
//! bounded in time (`request_timeout`, `connect_timeout`), and large objects are uploaded in
//! parts (`multipart_threshold_mb`). Failures name the store and the cause.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::{
    path::Path, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreScheme, PutPayload, RetryConfig, WriteMultipart,
};

use crate::config::{Config, StorageConfig};
use crate::error::{Error, Result};

/// Parts of a multipart upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its path, as given to [`Objects::put`].
    pub path: String,
    pub size: u64,
    /// When it was last written (ms since the epoch, the store's clock).
    pub modified_ms: u64,
}

/// A handle on the cluster's shared object store. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The local store again, typed, when the objects are local files: puts go around it.
    local: Option<LocalStore>,
    /// The store as operators named it (`storage.url`, or the local directory), for errors.
    name: Arc<str>,
    /// Objects at least this large go up in parts of `part_size` bytes (remote stores).
    multipart_threshold: usize,
    part_size: usize,
}

#[derive(Clone)]
struct LocalStore {
    store: Arc<LocalFileSystem>,
    /// The canonical directory holding the objects (made durable at open).
    root: PathBuf,
}

impl Objects {
    /// Opens the store named by `storage.url`, or `<data_dir>/objects` when it is empty.
    /// Nothing is sent yet: [`Objects::check`] tries the store.
    pub fn open(config: &Config) -> Result<Objects> {
        let storage = &config.storage;
        if storage.url.is_empty() {
            return Objects::local(config.local_objects_dir());
        }
        let url = url_parse(&storage.url)?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| Error::Config(format!("storage.url {}: not a local path", storage.url)))?;
            return Objects::local(dir);
        }
        let (store, prefix) = remote(storage, &url, retry_config(storage))?;
        Ok(Objects {
            store,
            prefix,
            local: None,
            name: storage.url.as_str().into(),
            multipart_threshold: mib(storage.multipart_threshold_mb),
            part_size: mib(storage.multipart_part_mb),
        })
    }

    fn local(dir: PathBuf) -> Result<Objects> {
        crate::disk::create_dir_all(&dir)?;
        let dir = dir.canonicalize()?;
        let store = Arc::new(LocalFileSystem::new_with_prefix(&dir)?);
        Ok(Objects {
            store: store.clone(),
            prefix: Path::default(),
            name: dir.display().to_string().into(),
            local: Some(LocalStore { store, root: dir }),
            multipart_threshold: usize::MAX,
            part_size: usize::MAX,
        })
    }

    /// Writes a small marker object (`<prefix>/.quiver/check`) with few retries, so that a store
    /// that cannot work (no such bucket, access denied, no credentials, a bad option) stops the
    /// process at start with the cause. A store that does not answer only gets a warning: it may
    /// be back before the first segment is flushed, and requests retry.
    pub async fn check(config: &Config) -> Result<()> {
        let storage = &config.storage;
        if storage.url.is_empty() || storage.url.starts_with("file:") {
            return Ok(());
        }
        let url = url_parse(&storage.url)?;
        let quick = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 1,
            retry_timeout: std::time::Duration::from_secs(10),
        };
        let (store, prefix) = remote(storage, &url, quick)?;
        let marker = Path::from_iter(prefix.parts().chain(["quiver-check".into()]));
        let body = PutPayload::from_static(b"written by a Quiver process at start to check the store\n");
        let Err(e) = store.put(&marker, body).await else { return Ok(()) };
        let (cause, fatal) = cause_of(&e);
        if fatal {
            return Err(Error::Config(format!("object store {}: {cause} ({})", storage.url, brief(&e))));
        }
        tracing::warn!(store = %storage.url, cause, error = %brief(&e), "the object store does not answer yet; requests will retry");
        Ok(())
    }

    fn full(&self, path: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(path.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    /// The error for a failed `op` on `path`: the store, the object and the cause. Transient
    /// causes are `Unavailable` (the caller retries or fails over).
    fn failed(&self, op: &str, path: &str, e: object_store::Error) -> Error {
        let (cause, _) = cause_of(&e);
        Error::Unavailable(format!("object store {}: {op} {path}: {cause} ({})", self.name, brief(&e)))
    }

    /// Stores `bytes` at `path`, replacing what was there; returns once they are durable.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        let full = self.full(path);
        let Some(local) = &self.local else {
            if bytes.len() >= self.multipart_threshold {
                return self.put_parts(path, &full, bytes).await;
            }
            return self
                .store
                .put(&full, PutPayload::from_bytes(bytes))
                .await
                .map(drop)
                .map_err(|e| self.failed("put", path, e));
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

    /// A multipart upload: parts of `part_size`, a few in flight; aborted on failure (a store
    /// keeps the parts of an upload never completed or aborted, and bills them).
    async fn put_parts(&self, path: &str, full: &Path, bytes: Bytes) -> Result<()> {
        let upload = self.store.put_multipart(full).await.map_err(|e| self.failed("multipart upload of", path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut at = 0;
        while at < bytes.len() {
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                let _ = writer.abort().await;
                return Err(self.failed("multipart upload of", path, e));
            }
            let end = (at + self.part_size).min(bytes.len());
            writer.put(bytes.slice(at..end));
            at = end;
        }
        writer.finish().await.map(drop).map_err(|e| self.failed("multipart upload of", path, e))
    }

    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let got = match self.store.get(&self.full(path)).await {
            Ok(got) => got,
            // A missing object is Quiver's problem (a segment or index it wrote is gone), never
            // the caller's "not found".
            Err(object_store::Error::NotFound { source, .. }) if !source.to_string().contains("NoSuchBucket") => {
                return Err(Error::Internal(format!("object {path} is missing from the object store {}", self.name)))
            }
            Err(e) => return Err(self.failed("get", path, e)),
        };
        got.bytes().await.map_err(|e| self.failed("get", path, e))
    }

    /// Every object whose path starts with `prefix` (a folder, `collections/`), with its
    /// size and when it was last written, by the store's clock.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let full = self.full(prefix.trim_end_matches('/'));
        // The local store has no root prefix of its own; a remote one lists under ours.
        let skip = self.prefix.parts().count();
        let found: Vec<object_store::ObjectMeta> = match self.store.list(Some(&full)).try_collect().await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.failed("list", prefix, e)),
        };
        Ok(found
            .into_iter()
            .map(|o| ObjectInfo {
                path: o.location.parts().skip(skip).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
                size: o.size,
                modified_ms: o.last_modified.timestamp_millis().max(0) as u64,
            })
            .collect())
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.full(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", path, e)),
        }
    }
}

fn mib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

fn retry_config(storage: &StorageConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig { init_backoff: storage.backoff_initial, max_backoff: storage.backoff_max, base: 2.0 },
        max_retries: storage.max_retries,
        retry_timeout: storage.retry_timeout,
    }
}

/// Builds the remote store `url` names: the standard environment first (`AWS_*`, `GOOGLE_*`,
/// `AZURE_*`), then the URL, then `storage`'s keys and `options`.
fn remote(storage: &StorageConfig, url: &url::Url, retry: RetryConfig) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let bad = |why: String| Error::Config(format!("storage.url {}: {why}", storage.url));
    let supported = "use s3://, gs://, az:// or file://";
    let (scheme, path) = ObjectStoreScheme::parse(url).map_err(|e| bad(format!("{e}; {supported}")))?;
    let prefix = Path::parse(path).map_err(|e| bad(e.to_string()))?;
    let mut client =
        ClientOptions::new().with_timeout(storage.request_timeout).with_connect_timeout(storage.connect_timeout);
    if storage.endpoint.starts_with("http://") {
        client = client.with_allow_http(true);
    }
    let unknown = |key: &str| Error::Config(format!("storage.options: {key:?} is not a setting of {scheme:?} stores"));
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            if !storage.endpoint.is_empty() {
                b = b.with_endpoint(&storage.endpoint);
            }
            if !storage.region.is_empty() {
                b = b.with_region(&storage.region);
            }
            if !storage.access_key_id.is_empty() {
                b = b.with_access_key_id(&storage.access_key_id).with_secret_access_key(&storage.secret_access_key);
            }
            if !storage.session_token.is_empty() {
                b = b.with_token(&storage.session_token);
            }
            b = b.with_virtual_hosted_style_request(!storage.path_style);
            for (k, v) in &storage.options {
                b = b.with_config(k.parse().map_err(|_| unknown(k))?, v);
            }
            Arc::new(b.with_client_options(client).with_retry(retry).build().map_err(|e| bad(e.to_string()))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in &storage.options {
                b = b.with_config(k.parse().map_err(|_| unknown(k))?, v);
            }
            Arc::new(b.with_client_options(client).with_retry(retry).build().map_err(|e| bad(e.to_string()))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in &storage.options {
                b = b.with_config(k.parse().map_err(|_| unknown(k))?, v);
            }
            Arc::new(b.with_client_options(client).with_retry(retry).build().map_err(|e| bad(e.to_string()))?)
        }
        other => {
            return Err(bad(format!("{other:?} URLs are not supported; {supported}")));
        }
    };
    Ok((store, prefix))
}

/// What went wrong, in an operator's words, and whether retrying cannot help (the store is
/// misconfigured rather than unreachable or busy).
fn cause_of(e: &object_store::Error) -> (String, bool) {
    let text = e.to_string();
    let has = |s: &str| text.contains(s);
    if has("NoSuchBucket") || has("ContainerNotFound") || has("The specified bucket does not exist") {
        return ("the bucket does not exist".into(), true);
    }
    if matches!(e, object_store::Error::PermissionDenied { .. })
        || has("AccessDenied")
        || has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AuthorizationFailure")
    {
        return ("access denied: check the credentials and the bucket's policy".into(), true);
    }
    // No keys configured: the instance metadata (or container) credentials endpoint answered.
    let metadata = has("169.254.169.254") || has("169.254.170.2");
    if matches!(e, object_store::Error::Unauthenticated { .. }) || metadata || has("credential") || has("Credential") {
        return (
            "no usable credentials: set storage.access_key_id and storage.secret_access_key, or the store's standard \
             environment variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, \
             AZURE_STORAGE_ACCOUNT_KEY), or run where instance credentials are available"
                .into(),
            true,
        );
    }
    if has("error sending request") || has("connect") || has("dns") || has("timed out") || has("timeout") {
        return ("the store does not answer (unreachable, or too slow)".into(), false);
    }
    ("the store refused the request".into(), false)
}

/// The store's error, cut to a readable length (S3 errors carry whole XML documents).
fn brief(e: &object_store::Error) -> String {
    let text = e.to_string().replace('\n', " ");
    match text.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn url_parse(s: &str) -> Result<url::Url> {
    url::Url::parse(s).map_err(|e| Error::Config(format!("storage.url {s}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_names_objects_as_they_were_put() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path().join("objects")).unwrap();
        objects.put("collections/1/segments/2/data", Bytes::from_static(b"abc")).await.unwrap();
        objects.put("collections/1/segments/2/index", Bytes::from_static(b"de")).await.unwrap();
        objects.put("plugins/router/r/1.wasm", Bytes::from_static(b"f")).await.unwrap();
        let mut listed = objects.list("collections/").await.unwrap();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let paths: Vec<(&str, u64)> = listed.iter().map(|o| (o.path.as_str(), o.size)).collect();
        assert_eq!(paths, [("collections/1/segments/2/data", 3), ("collections/1/segments/2/index", 2)]);
        let now = crate::bus::now_ms();
        assert!(listed.iter().all(|o| o.modified_ms <= now && o.modified_ms + 60_000 > now), "{listed:?}");
        assert!(objects.list("nothing/").await.unwrap().is_empty());
    }

    fn config(url: &str, edit: impl FnOnce(&mut StorageConfig)) -> Config {
        let mut config = Config::default();
        config.storage.url = url.into();
        edit(&mut config.storage);
        config
    }

    fn open_error(config: &Config) -> String {
        match Objects::open(config) {
            Ok(_) => panic!("{} opened", config.storage.url),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn remote_stores_of_every_kind_open_without_a_request() {
        let s3 = config("s3://bucket/some/prefix", |s| {
            s.endpoint = "http://127.0.0.1:9".into();
            s.access_key_id = "k".into();
            s.secret_access_key = "s".into();
            s.options.insert("aws_sse_bucket_key_enabled".into(), "false".into());
        });
        let objects = Objects::open(&s3).unwrap();
        assert_eq!(objects.full("collections/1/segments/2/data").as_ref(), "some/prefix/collections/1/segments/2/data");
        assert_eq!(objects.multipart_threshold, 16 << 20);
        let gcs = config("gs://bucket/p", |s| {
            s.options.insert("google_service_account_key".into(), "{}".into());
        });
        // A GCS store wants credentials it can parse: the error names the URL.
        let err = open_error(&gcs);
        assert!(err.contains("storage.url gs://bucket/p"), "{err}");
        let azure = config("az://container/p", |s| {
            s.options.insert("azure_storage_account_name".into(), "acct".into());
            s.options.insert("azure_storage_account_key".into(), "a2V5".into());
        });
        Objects::open(&azure).unwrap();
    }

    #[test]
    fn bad_store_settings_are_named() {
        let err = open_error(&config("s3://bucket/p", |s| {
            s.options.insert("aws_no_such_setting".into(), "1".into());
        }));
        assert!(err.contains("storage.options: \"aws_no_such_setting\" is not a setting of AmazonS3 stores"), "{err}");
        let err = open_error(&config("ftp://host/p", |_| {}));
        assert!(
            err.contains("storage.url ftp://host/p") && err.contains("use s3://, gs://, az:// or file://"),
            "{err}"
        );
        let err = open_error(&config("not a url", |_| {}));
        assert!(err.contains("storage.url not a url"), "{err}");
        let mut c = Config::default();
        c.storage.multipart_part_mb = 2;
        assert!(c.storage.validate().unwrap_err().to_string().contains("storage.multipart_part_mb"));
        let mut c = Config::default();
        c.storage.access_key_id = "only the id".into();
        assert!(c.storage.validate().unwrap_err().to_string().contains("set both access_key_id and secret_access_key"));
    }

    #[test]
    fn causes_are_told_apart() {
        let generic = |text: &str| object_store::Error::Generic { store: "S3", source: text.to_string().into() };
        let cases = [
            ("<Error><Code>NoSuchBucket</Code></Error>", "the bucket does not exist", true),
            ("403 Forbidden: <Code>SignatureDoesNotMatch</Code>", "access denied", true),
            ("Error performing PUT http://169.254.169.254/latest/api/token", "no usable credentials", true),
            ("error sending request: tcp connect error: Connection refused", "does not answer", false),
            ("500 Internal Server Error", "refused the request", false),
        ];
        for (text, cause, fatal) in cases {
            let (got, got_fatal) = cause_of(&generic(text));
            assert!(got.contains(cause) && got_fatal == fatal, "{text}: {got} (fatal: {got_fatal})");
        }
        let long = generic(&"x".repeat(5_000));
        assert!(brief(&long).chars().count() <= 401, "S3's XML bodies are cut");
    }
}
