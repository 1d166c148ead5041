//! The router's hot call with a faster canonical-ABI path than the generated bindings.
//!
//! wasmtime 48 lowers a `list<record>` and lifts a `list<option<u32>>` element by element,
//! looking the guest memory up again for every field (about 80 ns per segment, most of a
//! 100-segment call). The proxy routes every search, so this module writes the segment list in
//! one pass over the memory the guest allocated, and reads the answer in one pass, after the
//! same bounds, alignment and discriminant checks wasmtime makes. Everything else (the node
//! list, strings, the call itself) still goes through wasmtime's typed path, and the function's
//! type is checked against these types once per instance.
//!
//! The trait items implemented here are wasmtime's `#[doc(hidden)]` ABI hooks (the ones its
//! derive macros implement); they are pinned with the workspace's wasmtime version.

use quiver_policy::router as pr;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, LowerContext};
use wasmtime::component::{ComponentType, Func, Instance, Lift, Lower, TypedFunc};
use wasmtime::{Store, ValRaw};

use super::bindings::wr;
use super::sandbox::Sandbox;

/// `segment` of `quiver:policy/router`: 24 bytes, align 8 (`id`, `rows`, `first-holder`,
/// `holder-count`).
#[derive(Clone, Copy)]
struct SegmentAbi(pr::RouteSegment);

const SEGMENT_SIZE: usize = 24;

// SAFETY: the ABI, the flat representation and the type check are those of the generated
// `wr::Segment`, which describes the same WIT record.
unsafe impl ComponentType for SegmentAbi {
    type Lower = <wr::Segment as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <wr::Segment as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <wr::Segment as ComponentType>::typecheck(ty, types)
    }
}

impl SegmentAbi {
    fn wire(&self) -> wr::Segment {
        let s = self.0;
        wr::Segment { id: s.id, rows: s.rows, first_holder: s.first_holder, holder_count: s.holder_count }
    }
}

// SAFETY: single values go through `wr::Segment`; lists are written in `wr::Segment`'s
// layout into the range wasmtime obtained from the guest's `realloc` and bounds-checked.
unsafe impl Lower for SegmentAbi {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.wire().linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        self.wire().linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let len = items.len() * SEGMENT_SIZE;
        let memory = cx.as_slice_mut();
        let dst = offset
            .checked_add(len)
            .and_then(|end| memory.get_mut(offset..end))
            .ok_or_else(|| wasmtime::Error::msg("segment list beyond the end of the plugin's memory"))?;
        for (out, item) in dst.chunks_exact_mut(SEGMENT_SIZE).zip(items) {
            let s = item.0;
            out[0..8].copy_from_slice(&s.id.to_le_bytes());
            out[8..16].copy_from_slice(&s.rows.to_le_bytes());
            out[16..20].copy_from_slice(&s.first_holder.to_le_bytes());
            out[20..24].copy_from_slice(&s.holder_count.to_le_bytes());
        }
        Ok(())
    }
}

/// `route-request` with the segment list lowered by [`SegmentAbi`].
#[derive(ComponentType, Lower)]
#[component(record)]
struct RouteRequestAbi<'a> {
    #[component(name = "sequence")]
    sequence: u64,
    #[component(name = "collection")]
    collection: u64,
    #[component(name = "nodes")]
    nodes: &'a [wr::NodeLoad<'a>],
    #[component(name = "segments")]
    segments: &'a [SegmentAbi],
    #[component(name = "holders")]
    holders: &'a [u32],
}

/// The answer, `list<option<u32>>`, read in one pass.
struct Routes(Vec<Option<u32>>);

/// `option<u32>`: discriminant byte at 0, payload at 4; 8 bytes, align 4.
const OPTION_U32_SIZE: usize = 8;

// SAFETY: the ABI, flat representation and type check are those of `Vec<Option<u32>>`.
unsafe impl ComponentType for Routes {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = <Vec<Option<u32>> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<Option<u32>> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only within the guest memory, after checking bounds and alignment.
unsafe impl Lift for Routes {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        decode(cx.memory(), src[0].get_u32() as usize, src[1].get_u32() as usize)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, _ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .ok_or_else(|| wasmtime::Error::msg("truncated list header"))
        };
        decode(cx.memory(), word(0)?, word(4)?)
    }
}

fn decode(memory: &[u8], ptr: usize, len: usize) -> wasmtime::Result<Routes> {
    if !ptr.is_multiple_of(4) {
        return Err(wasmtime::Error::msg("the answer list is not aligned"));
    }
    let bytes = len
        .checked_mul(OPTION_U32_SIZE)
        .and_then(|size| memory.get(ptr..ptr.checked_add(size)?))
        .ok_or_else(|| wasmtime::Error::msg("the answer list lies beyond the end of the plugin's memory"))?;
    let mut routes = Vec::with_capacity(len);
    for entry in bytes.chunks_exact(OPTION_U32_SIZE) {
        routes.push(match entry[0] {
            0 => None,
            1 => Some(u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]])),
            other => return Err(wasmtime::Error::msg(format!("invalid option discriminant {other}"))),
        });
    }
    Ok(Routes(routes))
}

type RouteFn<'a> = TypedFunc<(RouteRequestAbi<'a>,), (Routes,)>;

/// The `route` export of one router instance, type-checked against the fast types.
pub(crate) struct RouteFunc(Func);

impl RouteFunc {
    /// Finds `quiver:policy/router@0.1.0#route` in `instance` and checks its type once.
    pub(crate) fn new(store: &mut Store<Sandbox>, instance: &Instance) -> wasmtime::Result<RouteFunc> {
        let missing = || wasmtime::Error::msg("the plugin does not export quiver:policy/router@0.1.0#route");
        let interface =
            instance.get_export_index(&mut *store, None, "quiver:policy/router@0.1.0").ok_or_else(missing)?;
        let index = instance.get_export_index(&mut *store, Some(&interface), "route").ok_or_else(missing)?;
        let func = instance.get_func(&mut *store, index).ok_or_else(missing)?;
        func.typed::<(RouteRequestAbi<'static>,), (Routes,)>(&*store)?;
        Ok(RouteFunc(func))
    }

    pub(crate) fn call(
        &self,
        store: &mut Store<Sandbox>,
        request: &pr::RouteRequest,
    ) -> wasmtime::Result<Vec<Option<u32>>> {
        let nodes: Vec<wr::NodeLoad<'_>> = request
            .nodes
            .iter()
            .map(|n| wr::NodeLoad {
                node_id: &n.node_id,
                in_flight: n.in_flight,
                latency_us: n.latency_us,
                weight: n.weight,
            })
            .collect();
        let segments: Vec<SegmentAbi> = request.segments.iter().copied().map(SegmentAbi).collect();
        let wire = RouteRequestAbi {
            sequence: request.sequence,
            collection: request.collection,
            nodes: &nodes,
            segments: &segments,
            holders: &request.holders,
        };
        // SAFETY: `new` checked this function's type against the same Rust types; lifetimes do
        // not change a component type.
        let typed = unsafe { RouteFn::new_unchecked(self.0) };
        let (Routes(routes),) = typed.call(&mut *store, (wire,))?;
        Ok(routes)
    }
}
