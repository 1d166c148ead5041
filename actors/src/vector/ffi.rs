//! Minimal safe wrappers over the faiss C API (faiss-sys) used by [`super::VectorIndex`].
//!
//! faiss-rs is not used for the index itself because its `search` takes `&mut self`, while
//! faiss' C++ `search` is `const` and safe to call from several threads at once.
//!
//! Every call goes through a [`FaissApi`] table, one per SIMD build of faiss
//! (`quiver-faiss-simd`): an object is created, used and freed through the table that made
//! it, so each wrapper keeps its table, and search parameters and selectors are made with
//! the table of the index they are passed to.

use std::ffi::{c_char, c_int, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use quiver_faiss_simd::{sys as fs, FaissApi};

use super::{Result, VectorError};

/// Turns a faiss C API return code into a `Result`, attaching faiss' last error message.
/// `api` must be the table whose call returned `code`: each variant keeps its own last error.
pub(crate) fn check(api: &FaissApi, code: c_int, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: faiss_get_last_error returns null or a NUL-terminated string owned by faiss
    // (thread-local in the C API), valid until the next faiss call on this thread; we copy it
    // immediately.
    let msg = unsafe {
        let p = (api.faiss_get_last_error)();
        if p.is_null() {
            String::from("no message")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Err(VectorError::Faiss(format!("{what} failed (code {code}): {}", msg.trim())))
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| VectorError::InvalidParams(format!("string {s:?} contains NUL")))
}

/// An owned faiss index (`faiss::Index*`) of the variant `api`, freed on drop.
pub(crate) struct RawIndex {
    index: NonNull<fs::FaissIndex>,
    api: &'static FaissApi,
}

impl Drop for RawIndex {
    fn drop(&mut self) {
        // SAFETY: we own the pointer (created by index_factory or read_index of this same
        // variant) and free it once.
        unsafe { (self.api.faiss_Index_free)(self.index.as_ptr()) }
    }
}

impl RawIndex {
    fn from_out(api: &'static FaissApi, p: *mut fs::FaissIndex, what: &str) -> Result<Self> {
        NonNull::new(p)
            .map(|index| RawIndex { index, api })
            .ok_or_else(|| VectorError::Faiss(format!("{what} returned no index")))
    }

    /// The faiss variant this index belongs to.
    pub(crate) fn api(&self) -> &'static FaissApi {
        self.api
    }

    /// `faiss::index_factory(dim, description, metric)`.
    pub(crate) fn factory(
        api: &'static FaissApi,
        dim: usize,
        description: &str,
        metric: fs::FaissMetricType,
    ) -> Result<Self> {
        let d = c_int::try_from(dim).map_err(|_| {
            VectorError::InvalidParams(format!("dim {dim} is too large for faiss (max {})", c_int::MAX))
        })?;
        let desc = c_string(description)?;
        let mut out: *mut fs::FaissIndex = ptr::null_mut();
        // SAFETY: desc is a valid C string; out receives a new index owned by us.
        let code = unsafe { (api.faiss_index_factory)(&mut out, d, desc.as_ptr(), metric) };
        check(api, code, &format!("index_factory(\"{description}\")"))?;
        Self::from_out(api, out, "index_factory")
    }

    /// The raw pointer, for const operations (search) that faiss allows concurrently.
    pub(crate) fn as_ptr(&self) -> *const fs::FaissIndex {
        self.index.as_ptr()
    }

    pub(crate) fn dim(&self) -> usize {
        // SAFETY: valid index pointer; const accessor.
        usize::try_from(unsafe { (self.api.faiss_Index_d)(self.as_ptr()) }).unwrap_or(0)
    }

    pub(crate) fn ntotal(&self) -> usize {
        // SAFETY: valid index pointer; const accessor.
        usize::try_from(unsafe { (self.api.faiss_Index_ntotal)(self.as_ptr()) }).unwrap_or(0)
    }

    pub(crate) fn metric(&self) -> fs::FaissMetricType {
        // SAFETY: valid index pointer; const accessor.
        unsafe { (self.api.faiss_Index_metric_type)(self.as_ptr()) }
    }

    pub(crate) fn is_trained(&self) -> bool {
        // SAFETY: valid index pointer; const accessor.
        unsafe { (self.api.faiss_Index_is_trained)(self.as_ptr()) != 0 }
    }

    /// Whether this is (a subclass of) `faiss::IndexIVF`.
    pub(crate) fn is_ivf(&self) -> bool {
        // SAFETY: the cast is a dynamic_cast on a valid index; it does not mutate.
        !unsafe { (self.api.faiss_IndexIVF_cast)(self.index.as_ptr()) }.is_null()
    }

    pub(crate) fn train(&mut self, n: usize, x: &[f32]) -> Result<()> {
        debug_assert!(x.len() >= n * self.dim());
        // SAFETY: x holds n * d floats; &mut self gives exclusive access.
        check(self.api, unsafe { (self.api.faiss_Index_train)(self.index.as_ptr(), n as i64, x.as_ptr()) }, "train")
    }

    pub(crate) fn add(&mut self, n: usize, x: &[f32]) -> Result<()> {
        debug_assert!(x.len() >= n * self.dim());
        // SAFETY: x holds n * d floats; &mut self gives exclusive access.
        check(self.api, unsafe { (self.api.faiss_Index_add)(self.index.as_ptr(), n as i64, x.as_ptr()) }, "add")
    }

    /// Sets a tunable (`efSearch`, `efConstruction`, `nprobe`, ...) through
    /// `faiss::ParameterSpace`.
    ///
    /// # Safety
    /// Mutates the index: the caller must guarantee no other thread uses it meanwhile.
    pub(crate) unsafe fn set_parameter(&self, name: &str, value: f64) -> Result<()> {
        let cname = c_string(name)?;
        let mut ps: *mut fs::FaissParameterSpace = ptr::null_mut();
        // SAFETY: ps receives a new ParameterSpace that we free below.
        let api = self.api;
        check(api, unsafe { (api.faiss_ParameterSpace_new)(&mut ps) }, "ParameterSpace_new")?;
        // SAFETY: ps and the index are valid; exclusivity is the caller's obligation.
        let code =
            unsafe { (api.faiss_ParameterSpace_set_index_parameter)(ps, self.index.as_ptr(), cname.as_ptr(), value) };
        // SAFETY: ps was created above and is not used afterwards.
        unsafe { (api.faiss_ParameterSpace_free)(ps) };
        check(api, code, &format!("setting index parameter {name}={value}"))
    }

    /// Serialises with `faiss::write_index` into an in-memory stream.
    pub(crate) fn write_to_vec(&self) -> Result<Vec<u8>> {
        let mut buf: *mut c_char = ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: open_memstream stores its buffer pointer/size in buf/size, which outlive f.
        let f = unsafe { libc::open_memstream(&mut buf, &mut size) };
        if f.is_null() {
            return Err(VectorError::Io(format!("open_memstream failed: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: f is an open FILE*; faiss writes to it without closing it.
        let code = unsafe { (self.api.faiss_write_index)(self.as_ptr(), f.cast::<fs::FILE>()) };
        // SAFETY: f is open and closed exactly once; afterwards buf/size describe the data.
        let rc = unsafe { libc::fclose(f) };
        let out = if buf.is_null() {
            Vec::new()
        } else {
            // SAFETY: after fclose, buf points to `size` bytes malloc'ed by the stream; we
            // copy them and free the buffer.
            unsafe {
                let v = std::slice::from_raw_parts(buf.cast::<u8>(), size).to_vec();
                libc::free(buf.cast::<libc::c_void>());
                v
            }
        };
        check(self.api, code, "write_index")?;
        if rc != 0 {
            return Err(VectorError::Io(format!(
                "closing the in-memory index stream failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(out)
    }

    /// Deserialises with `faiss::read_index` of the variant `api` from an in-memory stream
    /// (any variant reads what any other wrote: the format does not depend on SIMD).
    pub(crate) fn read_from(api: &'static FaissApi, bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(VectorError::Corrupt("the faiss index payload is empty".into()));
        }
        // SAFETY: the stream is opened read-only ("rb"), so fmemopen never writes through the
        // (const-cast) pointer; `bytes` outlives the stream, which is closed below.
        let f =
            unsafe { libc::fmemopen(bytes.as_ptr().cast_mut().cast::<libc::c_void>(), bytes.len(), c"rb".as_ptr()) };
        if f.is_null() {
            return Err(VectorError::Io(format!("fmemopen failed: {}", std::io::Error::last_os_error())));
        }
        let mut out: *mut fs::FaissIndex = ptr::null_mut();
        // SAFETY: f is an open FILE*; out receives a new index owned by us.
        let code = unsafe { (api.faiss_read_index)(f.cast::<fs::FILE>(), 0, &mut out) };
        // SAFETY: f is open and closed exactly once.
        unsafe { libc::fclose(f) };
        if let Err(e) = check(api, code, "read_index") {
            if let Some(index) = NonNull::new(out) {
                drop(RawIndex { index, api });
            }
            return Err(e);
        }
        Self::from_out(api, out, "read_index")
    }
}

/// Owned `faiss::SearchParametersIVF` (per-call nprobe, no index mutation).
pub(crate) struct IvfSearchParams {
    params: NonNull<fs::FaissSearchParametersIVF>,
    api: &'static FaissApi,
}

impl IvfSearchParams {
    /// `selector`: `None` searches every id; otherwise it must outlive these parameters
    /// (faiss keeps the pointer and does not own it) and belong to the variant `api`.
    pub(crate) fn new(api: &'static FaissApi, nprobe: usize, selector: Option<&BitmapSelector<'_>>) -> Result<Self> {
        let mut p: *mut fs::FaissSearchParametersIVF = ptr::null_mut();
        let sel = selector.map_or(ptr::null_mut(), BitmapSelector::as_ptr);
        // SAFETY: p receives a new object owned by us; a null selector means "all ids", else
        // it is a live selector the caller keeps alive; max_codes 0 means unlimited.
        let code = unsafe { (api.faiss_SearchParametersIVF_new_with)(&mut p, sel, nprobe, 0) };
        check(api, code, "SearchParametersIVF_new_with")?;
        NonNull::new(p)
            .map(|params| IvfSearchParams { params, api })
            .ok_or_else(|| VectorError::Faiss("SearchParametersIVF_new_with returned null".into()))
    }

    pub(crate) fn as_ptr(&self) -> *const fs::FaissSearchParameters {
        self.params.as_ptr().cast_const()
    }
}

impl Drop for IvfSearchParams {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once by the variant that made it.
        unsafe { (self.api.faiss_SearchParametersIVF_free)(self.params.as_ptr()) }
    }
}

/// Owned `faiss::IDSelectorBitmap` over a borrowed bitmap: faiss keeps the pointer without
/// copying, so the borrow keeps the bits alive (and unchanged) as long as the selector.
pub(crate) struct BitmapSelector<'b> {
    sel: NonNull<fs::FaissIDSelectorBitmap>,
    api: &'static FaissApi,
    _bits: PhantomData<&'b [u8]>,
}

impl<'b> BitmapSelector<'b> {
    /// Selects id `i` iff bit `i & 7` of `bits[i >> 3]` is set; ids past the slice are not.
    /// `api`: the variant of the index the selector is for.
    pub(crate) fn new(api: &'static FaissApi, bits: &'b [u8]) -> Result<Self> {
        let mut p: *mut fs::FaissIDSelectorBitmap = ptr::null_mut();
        // SAFETY: p receives a new selector owned by us. faiss' `n` is the bitmap's size in
        // bytes and it never reads past it; `bits` outlives the selector (lifetime 'b).
        let code = unsafe { (api.faiss_IDSelectorBitmap_new)(&mut p, bits.len(), bits.as_ptr()) };
        check(api, code, "IDSelectorBitmap_new")?;
        NonNull::new(p)
            .map(|sel| BitmapSelector { sel, api, _bits: PhantomData })
            .ok_or_else(|| VectorError::Faiss("IDSelectorBitmap_new returned null".into()))
    }

    /// As a plain `IDSelector*` (its base class; single inheritance, same address).
    pub(crate) fn as_ptr(&self) -> *mut fs::FaissIDSelector {
        self.sel.as_ptr().cast::<fs::FaissIDSelector>()
    }
}

impl Drop for BitmapSelector<'_> {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once; any parameters using it were dropped first
        // (they borrow the selector).
        unsafe { (self.api.faiss_IDSelectorBitmap_free)(self.sel.as_ptr()) }
    }
}

/// Owned generic `faiss::SearchParameters` carrying an ID selector (FLAT and HNSW; HNSW's
/// efSearch stays the value set in the index, since the C API has no SearchParametersHNSW).
pub(crate) struct SelectorParams<'s> {
    params: NonNull<fs::FaissSearchParameters>,
    api: &'static FaissApi,
    _selector: PhantomData<&'s BitmapSelector<'s>>,
}

impl<'s> SelectorParams<'s> {
    pub(crate) fn new(selector: &'s BitmapSelector<'_>) -> Result<Self> {
        let mut p: *mut fs::FaissSearchParameters = ptr::null_mut();
        // SAFETY: p receives a new object owned by us, of the selector's variant; the
        // selector outlives it ('s).
        let api = selector.api;
        let code = unsafe { (api.faiss_SearchParameters_new)(&mut p, selector.as_ptr()) };
        check(api, code, "SearchParameters_new")?;
        NonNull::new(p)
            .map(|params| SelectorParams { params, api, _selector: PhantomData })
            .ok_or_else(|| VectorError::Faiss("SearchParameters_new returned null".into()))
    }

    pub(crate) fn as_ptr(&self) -> *const fs::FaissSearchParameters {
        self.params.as_ptr().cast_const()
    }
}

impl Drop for SelectorParams<'_> {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once; faiss does not free the selector with it.
        unsafe { (self.api.faiss_SearchParameters_free)(self.params.as_ptr()) }
    }
}
