//! Limits on what one read may ask for, from `[proxy]` and `[limits]` of the configuration.
//! The proxy checks them before it sends a request on, and the query node again before it
//! allocates anything: a node trusts nothing that crosses the bus, its peers included.

use quiver_runtime::{Config, Error, Result};
use quiver_schemas::{Query, Search};

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// The limits of one search or query.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_top_k: u32,
    pub max_nq: usize,
    pub max_hits: u64,
    pub max_ef: u32,
    pub max_nprobe: u32,
    pub max_filter_bytes: usize,
    pub max_result_bytes: u64,
}

impl ReadLimits {
    pub fn of(config: &Config) -> ReadLimits {
        ReadLimits {
            max_top_k: config.proxy.max_top_k,
            max_nq: config.proxy.max_nq,
            max_hits: config.limits.max_search_hits,
            max_ef: config.limits.max_ef,
            max_nprobe: config.limits.max_nprobe,
            max_filter_bytes: config.limits.max_filter_bytes,
            max_result_bytes: config.limits.max_result_bytes,
        }
    }

    /// Checks a search's shape against the collection's dimension `dim`: top-k, the number
    /// and values of its query vectors, its result budget (nq × top-k), `ef` and `nprobe`,
    /// and its filter's length. Returns the number of query vectors.
    pub fn check_search(&self, search: &Search, dim: u32) -> Result<usize> {
        let max_top_k = self.max_top_k;
        if search.top_k == 0 || search.top_k > max_top_k {
            return Err(bad(format!("top_k must be between 1 and {max_top_k}, got {}", search.top_k)));
        }
        if search.vectors.is_empty() {
            return Err(bad("search has no query vectors".into()));
        }
        if search.dim != dim {
            return Err(bad(format!(
                "dimension mismatch: collection {:?} stores {dim}-dimensional vectors, got {}",
                search.collection, search.dim
            )));
        }
        let nq = check_vectors(&search.vectors, dim as usize, "search")?;
        if nq > self.max_nq {
            return Err(bad(format!("{nq} query vectors exceed the limit of {} per search", self.max_nq)));
        }
        let hits = nq as u64 * u64::from(search.top_k);
        if hits > self.max_hits {
            return Err(bad(format!(
                "{nq} query vectors × top_k {} = {hits} results, over the limit of {} per search \
                 (limits.max_search_hits); split the search or lower top_k",
                search.top_k, self.max_hits
            )));
        }
        if search.params.ef > self.max_ef {
            return Err(bad(format!("ef {} exceeds the limit of {} (limits.max_ef)", search.params.ef, self.max_ef)));
        }
        if search.params.nprobe > self.max_nprobe {
            return Err(bad(format!(
                "nprobe {} exceeds the limit of {} (limits.max_nprobe)",
                search.params.nprobe, self.max_nprobe
            )));
        }
        self.check_filter(&search.filter)?;
        Ok(nq)
    }

    /// Checks a query's filter and paging: `limit + offset` rows at most `max_top_k` (a
    /// query with no limit is bounded by the proxy at `max_top_k + 1`).
    pub fn check_query(&self, query: &Query) -> Result<()> {
        let max = u64::from(self.max_top_k);
        let rows = query.limit.saturating_add(query.offset);
        if rows > max.saturating_add(1) {
            return Err(bad(format!(
                "offset + limit is {rows}; at most {max} rows can be paged through (proxy.max_top_k)"
            )));
        }
        self.check_filter(&query.filter)
    }

    /// Checks that `rows` rows, with `dim`-dimensional vectors when asked for, fit the
    /// result budget: estimated before anything is read.
    pub fn check_rows(&self, rows: u64, dim: Option<u32>, what: &str) -> Result<()> {
        let per_row = 64 + dim.map_or(0, |d| u64::from(d) * 4);
        let bytes = rows.saturating_mul(per_row);
        if bytes > self.max_result_bytes {
            return Err(bad(format!(
                "{what} of {rows} rows{} would build about {} MiB, over the limit of {} MiB \
                 (limits.max_result_bytes); ask for fewer rows{}",
                if dim.is_some() { " with their vectors" } else { "" },
                bytes >> 20,
                self.max_result_bytes >> 20,
                if dim.is_some() { " or leave the vector field out" } else { "" }
            )));
        }
        Ok(())
    }

    pub fn check_filter(&self, filter: &str) -> Result<()> {
        if filter.len() > self.max_filter_bytes {
            return Err(bad(format!(
                "the filter is {} bytes, over the limit of {} (limits.max_filter_bytes)",
                filter.len(),
                self.max_filter_bytes
            )));
        }
        Ok(())
    }
}

/// The number of `dim`-dimensional vectors in `vectors`, all of them finite.
pub fn check_vectors(vectors: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(bad(format!(
            "{what}: {} floats is not a whole number of {dim}-dimensional vectors",
            vectors.len()
        )));
    }
    if let Some(i) = vectors.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("{what}: vector {} contains NaN or infinity (element {})", i / dim, i % dim)));
    }
    Ok(vectors.len() / dim)
}
