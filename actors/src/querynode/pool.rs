//! The search pool: a fixed set of threads (`querynode.search_threads`) on which every search
//! of the node runs its pieces (a segment, a block of queries, a range of brute-force rows).
//! One request's segments are searched side by side, concurrent requests share the threads,
//! and the node never runs more search work at once than it has pool threads.
//!
//! A piece runs faiss and BLAS on its own thread only ([`pin_faiss_to_one_thread`], OpenBLAS
//! set to one thread): the pool is the parallelism, and a piece fanning out again would put
//! pool × OpenMP threads on the cores.

use quiver_runtime::{Error, Result};

use crate::vector::{pin_faiss_to_one_thread, set_blas_threads};

/// The query node's search threads.
pub struct SearchPool {
    pool: rayon::ThreadPool,
}

impl SearchPool {
    /// Starts `threads` threads (0 = one per core).
    pub fn new(threads: usize) -> Result<SearchPool> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        set_blas_threads(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("quiver-search-{i}"))
            .start_handler(|_| pin_faiss_to_one_thread())
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the search pool of {threads} threads: {e}")))?;
        Ok(SearchPool { pool })
    }

    /// Threads of the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `pieces` on the pool and returns their results in order. Blocks the calling thread
    /// (a blocking thread, never a pool thread: a caller holding locks must not run other
    /// requests' pieces while it waits, as a pool thread would). A single piece (one segment,
    /// a few queries: the common search) runs on the calling thread: handing it to the pool
    /// and back would cost two thread wake-ups, more than the work of a small search.
    pub fn run<T, R>(&self, mut pieces: Vec<T>, run: impl Fn(T) -> R + Sync) -> Vec<R>
    where
        T: Send,
        R: Send,
    {
        use rayon::prelude::*;
        if pieces.len() == 1 {
            return pieces.pop().map(&run).into_iter().collect();
        }
        self.pool.install(|| pieces.into_par_iter().map(&run).collect())
    }
}
