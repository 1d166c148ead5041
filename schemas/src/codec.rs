//! Cap'n Proto wire format of the bus messages.
//!
//! Every message type that travels on the bus implements [`Wire`]. Bytes are the unpacked
//! flat Cap'n Proto serialization (`capnp::serialize`): a segment table followed by the
//! segments, normally exactly one because encoding sizes the first segment up front. The
//! schema is `schemas/quiver.capnp`.
//!
//! Decoding treats its input as untrusted: garbage, truncated or empty input, unknown enum
//! values and invalid UTF-8 all come back as [`DecodeError::Malformed`], naming the message
//! type and the field path where decoding failed. Input need not be 8-byte aligned (it is
//! copied once if it is not). Float and integer lists are copied in bulk.

use std::fmt;

use capnp::message::{HeapAllocator, ReaderOptions};
use capnp::traits::{Owned, OwnedStruct};
use capnp::{primitive_list, struct_list, text_list};

use crate::quiver_capnp as cp;
use crate::types::*;

/// A bus message: converts to and from Cap'n Proto bytes.
///
/// Lists are limited by Cap'n Proto to 2²⁹ − 1 elements each: larger values cannot be
/// represented (the `capnp` crate panics when asked to build such a list), and messages
/// over [`TRAVERSAL_LIMIT_WORDS`] are refused by the decoder anyway.
pub trait Wire: Sized {
    /// Encodes to Cap'n Proto bytes (unpacked, single segment where possible).
    fn to_bytes(&self) -> Vec<u8>;
    /// Decodes, with a clear error naming what was malformed.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Why bytes could not be decoded as a bus message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid Cap'n Proto encoding of `message_type`.
    #[error("malformed {message_type} message: {reason}")]
    Malformed {
        /// The message type that was being decoded, e.g. `"Insert"`.
        message_type: &'static str,
        /// What was wrong, with the field path where it was found when known.
        reason: String,
    },
}

/// Upper bound on the words a decoder will read from one message (1 GiB), whatever its size.
pub const TRAVERSAL_LIMIT_WORDS: usize = (1 << 30) / 8;

/// How many words a decoder may read per word of input. An honest message reads each of its
/// words once; Cap'n Proto charges a list of zero-sized elements one word per element, so
/// without a bound tied to the input a ~100-byte message could make a decoder build 10⁸
/// elements. Twice the input (plus slack for tiny messages) admits every honest message and
/// caps what a hostile one can make us allocate at a small multiple of its own size.
const TRAVERSAL_PER_INPUT_WORD: usize = 2;
const TRAVERSAL_SLACK_WORDS: usize = 1024;

/// Largest first segment we ask the allocator for (Cap'n Proto's segment limit).
const MAX_SEGMENT_WORDS: usize = 1 << 29;

/// Reader options for a message of `input_words` words: traversal bounded by its size.
fn reader_options(input_words: usize) -> ReaderOptions {
    let limit = input_words
        .saturating_mul(TRAVERSAL_PER_INPUT_WORD)
        .saturating_add(TRAVERSAL_SLACK_WORDS)
        .min(TRAVERSAL_LIMIT_WORDS);
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(limit));
    options
}

// ---- encoding / decoding drivers ----

/// Builds a message of root type `T` with `fill`, sizing the first segment from
/// `hint_words` so that the result is a single segment. If the hint was too small the
/// message is rebuilt once with the exact size.
fn encode<T: Owned>(hint_words: usize, fill: impl Fn(T::Builder<'_>)) -> Vec<u8> {
    let build = |words: usize| {
        let words = words.clamp(16, MAX_SEGMENT_WORDS) as u32;
        let mut message = capnp::message::Builder::new(HeapAllocator::new().first_segment_words(words));
        fill(message.init_root::<T::Builder<'_>>());
        message
    };
    let mut message = build(hint_words);
    if message.get_segments_for_output().len() > 1 {
        message = build(message.size_in_words() + 16);
    }
    capnp::serialize::write_message_to_words(&message)
}

/// Reads a message of root type `T` from `bytes` and converts it with `get`.
fn decode<T: Owned, V>(
    bytes: &[u8],
    message_type: &'static str,
    get: impl FnOnce(T::Reader<'_>) -> Result<V, Fault>,
) -> Result<V, DecodeError> {
    decode_inner::<T, V>(bytes, get).map_err(|fault| DecodeError::Malformed { message_type, reason: fault.to_string() })
}

fn decode_inner<T: Owned, V>(bytes: &[u8], get: impl FnOnce(T::Reader<'_>) -> Result<V, Fault>) -> Result<V, Fault> {
    if bytes.is_empty() {
        return Err(Fault::new("empty input".to_string()));
    }
    let partial_word = bytes.len() % 8;
    if partial_word != 0 {
        return Err(Fault::new(format!(
            "length {} is not a whole number of 8-byte words ({partial_word} extra bytes; truncated?)",
            bytes.len()
        )));
    }
    // Cap'n Proto reads words in place, so the input must be 8-byte aligned; NATS payloads
    // usually are, otherwise copy once.
    let aligned_copy: Vec<capnp::Word>;
    let mut slice: &[u8] = if bytes.as_ptr().align_offset(8) == 0 {
        bytes
    } else {
        let mut words = capnp::Word::allocate_zeroed_vec(bytes.len() / 8);
        capnp::Word::words_to_bytes_mut(&mut words).copy_from_slice(bytes);
        aligned_copy = words;
        capnp::Word::words_to_bytes(&aligned_copy)
    };
    let message = capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options(bytes.len() / 8))?;
    if !slice.is_empty() {
        return Err(Fault::new(format!("{} trailing bytes after the message", slice.len())));
    }
    let root = message.get_root::<T::Reader<'_>>()?;
    get(root)
}

// ---- errors with a field path ----

enum PathPart {
    Field(&'static str),
    Index(usize),
}

/// A decoding failure and where it happened (innermost part first).
struct Fault {
    path: Vec<PathPart>,
    reason: String,
}

impl Fault {
    fn new(reason: String) -> Self {
        Fault { path: Vec::new(), reason }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            for (i, part) in self.path.iter().rev().enumerate() {
                match part {
                    PathPart::Field(name) if i == 0 => write!(f, "{name}")?,
                    PathPart::Field(name) => write!(f, ".{name}")?,
                    PathPart::Index(index) => write!(f, "[{index}]")?,
                }
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.reason)
    }
}

impl From<capnp::Error> for Fault {
    fn from(e: capnp::Error) -> Self {
        Fault::new(e.to_string())
    }
}

impl From<capnp::NotInSchema> for Fault {
    fn from(e: capnp::NotInSchema) -> Self {
        Fault::new(format!("unknown enum value or union variant {}", e.0))
    }
}

impl From<std::str::Utf8Error> for Fault {
    fn from(e: std::str::Utf8Error) -> Self {
        Fault::new(format!("invalid UTF-8 in text: {e}"))
    }
}

/// Adds a field name to the path of an error.
trait At<T> {
    fn at(self, field: &'static str) -> Result<T, Fault>;
}

impl<T, E: Into<Fault>> At<T> for Result<T, E> {
    fn at(self, field: &'static str) -> Result<T, Fault> {
        self.map_err(|e| {
            let mut fault = e.into();
            fault.path.push(PathPart::Field(field));
            fault
        })
    }
}

// ---- list and text helpers ----

/// Converts a Rust length to a Cap'n Proto list length (saturating; Cap'n Proto itself
/// refuses lists of 2²⁹ elements or more).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Bulk copies for primitive lists (`as_slice` on little-endian targets, element-wise
/// otherwise or when the list was encoded with a wider element layout).
macro_rules! prim_list_codec {
    ($fill:ident, $read:ident, $t:ty) => {
        fn $fill(mut list: primitive_list::Builder<'_, $t>, values: &[$t]) {
            #[cfg(target_endian = "little")]
            if let Some(slice) = list.as_slice() {
                if slice.len() == values.len() {
                    slice.copy_from_slice(values);
                    return;
                }
            }
            for (i, v) in values.iter().enumerate() {
                list.set(i as u32, *v);
            }
        }

        fn $read(list: capnp::Result<primitive_list::Reader<'_, $t>>) -> Result<Vec<$t>, Fault> {
            let list = list?;
            #[cfg(target_endian = "little")]
            if let Some(slice) = list.as_slice() {
                if slice.len() == list.len() as usize {
                    return Ok(slice.to_vec());
                }
            }
            Ok(list.iter().collect())
        }
    };
}

prim_list_codec!(fill_f32s, read_f32s, f32);
prim_list_codec!(fill_u64s, read_u64s, u64);
prim_list_codec!(fill_u32s, read_u32s, u32);

fn fill_strings(mut list: text_list::Builder<'_>, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        list.set(i as u32, v.as_str());
    }
}

fn read_string(text: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Fault> {
    Ok(text?.to_str()?.to_owned())
}

fn read_strings(list: capnp::Result<text_list::Reader<'_>>) -> Result<Vec<String>, Fault> {
    let list = list?;
    let mut out = Vec::with_capacity(list.len() as usize);
    for (i, text) in list.iter().enumerate() {
        out.push(read_string(text).map_err(|mut f| {
            f.path.push(PathPart::Index(i));
            f
        })?);
    }
    Ok(out)
}

fn fill_structs<T: OwnedStruct, V>(
    mut list: struct_list::Builder<'_, T>,
    values: &[V],
    put: impl Fn(&V, T::Builder<'_>),
) {
    for (i, v) in values.iter().enumerate() {
        put(v, list.reborrow().get(i as u32));
    }
}

fn read_structs<'a, T: OwnedStruct, V>(
    list: capnp::Result<struct_list::Reader<'a, T>>,
    get: impl Fn(T::Reader<'a>) -> Result<V, Fault>,
) -> Result<Vec<V>, Fault> {
    let list = list?;
    let mut out = Vec::with_capacity(list.len() as usize);
    for (i, item) in list.iter().enumerate() {
        out.push(get(item).map_err(|mut f| {
            f.path.push(PathPart::Index(i));
            f
        })?);
    }
    Ok(out)
}

// ---- enums ----

fn data_type_to(v: DataType) -> cp::DataType {
    match v {
        DataType::Bool => cp::DataType::Bool,
        DataType::Int64 => cp::DataType::Int64,
        DataType::Float => cp::DataType::Float,
        DataType::Double => cp::DataType::Double,
        DataType::VarChar => cp::DataType::VarChar,
        DataType::Json => cp::DataType::Json,
        DataType::FloatVector => cp::DataType::FloatVector,
    }
}

fn data_type_from(v: cp::DataType) -> DataType {
    match v {
        cp::DataType::Bool => DataType::Bool,
        cp::DataType::Int64 => DataType::Int64,
        cp::DataType::Float => DataType::Float,
        cp::DataType::Double => DataType::Double,
        cp::DataType::VarChar => DataType::VarChar,
        cp::DataType::Json => DataType::Json,
        cp::DataType::FloatVector => DataType::FloatVector,
    }
}

fn metric_to(v: MetricType) -> cp::MetricType {
    match v {
        MetricType::L2 => cp::MetricType::L2,
        MetricType::Ip => cp::MetricType::Ip,
        MetricType::Cosine => cp::MetricType::Cosine,
    }
}

fn metric_from(v: cp::MetricType) -> MetricType {
    match v {
        cp::MetricType::L2 => MetricType::L2,
        cp::MetricType::Ip => MetricType::Ip,
        cp::MetricType::Cosine => MetricType::Cosine,
    }
}

fn index_type_to(v: IndexType) -> cp::IndexType {
    match v {
        IndexType::Flat => cp::IndexType::Flat,
        IndexType::IvfFlat => cp::IndexType::IvfFlat,
        IndexType::IvfSq8 => cp::IndexType::IvfSq8,
        IndexType::IvfPq => cp::IndexType::IvfPq,
        IndexType::Hnsw => cp::IndexType::Hnsw,
    }
}

fn scalar_index_type_to(v: ScalarIndexType) -> cp::ScalarIndexType {
    match v {
        ScalarIndexType::StlSort => cp::ScalarIndexType::StlSort,
        ScalarIndexType::Inverted => cp::ScalarIndexType::Inverted,
        ScalarIndexType::Bitmap => cp::ScalarIndexType::Bitmap,
        ScalarIndexType::Trie => cp::ScalarIndexType::Trie,
        ScalarIndexType::Auto => cp::ScalarIndexType::Auto,
    }
}

fn scalar_index_type_from(v: cp::ScalarIndexType) -> ScalarIndexType {
    match v {
        cp::ScalarIndexType::StlSort => ScalarIndexType::StlSort,
        cp::ScalarIndexType::Inverted => ScalarIndexType::Inverted,
        cp::ScalarIndexType::Bitmap => ScalarIndexType::Bitmap,
        cp::ScalarIndexType::Trie => ScalarIndexType::Trie,
        cp::ScalarIndexType::Auto => ScalarIndexType::Auto,
    }
}

fn index_type_from(v: cp::IndexType) -> IndexType {
    match v {
        cp::IndexType::Flat => IndexType::Flat,
        cp::IndexType::IvfFlat => IndexType::IvfFlat,
        cp::IndexType::IvfSq8 => IndexType::IvfSq8,
        cp::IndexType::IvfPq => IndexType::IvfPq,
        cp::IndexType::Hnsw => IndexType::Hnsw,
    }
}

fn consistency_to(v: Consistency) -> cp::Consistency {
    match v {
        Consistency::Strong => cp::Consistency::Strong,
        Consistency::Bounded => cp::Consistency::Bounded,
        Consistency::Eventually => cp::Consistency::Eventually,
    }
}

fn consistency_from(v: cp::Consistency) -> Consistency {
    match v {
        cp::Consistency::Strong => Consistency::Strong,
        cp::Consistency::Bounded => Consistency::Bounded,
        cp::Consistency::Eventually => Consistency::Eventually,
    }
}

fn segment_state_to(v: SegmentState) -> cp::SegmentState {
    match v {
        SegmentState::Flushed => cp::SegmentState::Flushed,
        SegmentState::Indexed => cp::SegmentState::Indexed,
        SegmentState::Dropped => cp::SegmentState::Dropped,
    }
}

fn segment_state_from(v: cp::SegmentState) -> SegmentState {
    match v {
        cp::SegmentState::Flushed => SegmentState::Flushed,
        cp::SegmentState::Indexed => SegmentState::Indexed,
        cp::SegmentState::Dropped => SegmentState::Dropped,
    }
}

fn partition_state_to(v: PartitionState) -> cp::PartitionState {
    match v {
        PartitionState::Loaded => cp::PartitionState::Loaded,
        PartitionState::Released => cp::PartitionState::Released,
        PartitionState::Dropped => cp::PartitionState::Dropped,
    }
}

fn partition_state_from(v: cp::PartitionState) -> PartitionState {
    match v {
        cp::PartitionState::Loaded => PartitionState::Loaded,
        cp::PartitionState::Released => PartitionState::Released,
        cp::PartitionState::Dropped => PartitionState::Dropped,
    }
}

fn role_to(v: Role) -> cp::Role {
    match v {
        Role::Coordinator => cp::Role::Coordinator,
        Role::Proxy => cp::Role::Proxy,
        Role::DataNode => cp::Role::DataNode,
        Role::IndexNode => cp::Role::IndexNode,
        Role::QueryNode => cp::Role::QueryNode,
    }
}

fn role_from(v: cp::Role) -> Role {
    match v {
        cp::Role::Coordinator => Role::Coordinator,
        cp::Role::Proxy => Role::Proxy,
        cp::Role::DataNode => Role::DataNode,
        cp::Role::IndexNode => Role::IndexNode,
        cp::Role::QueryNode => Role::QueryNode,
    }
}

// ---- values, keys, rows ----

fn put_scalar(v: &ScalarValue, mut b: cp::scalar_value::Builder<'_>) {
    match v {
        ScalarValue::Null => b.set_null(()),
        ScalarValue::Bool(x) => b.set_bool(*x),
        ScalarValue::Int64(x) => b.set_int64(*x),
        ScalarValue::Float(x) => b.set_float(*x),
        ScalarValue::Double(x) => b.set_double(*x),
        ScalarValue::VarChar(x) => b.set_var_char(x.as_str()),
        ScalarValue::Json(x) => b.set_json(x.as_str()),
    }
}

fn get_scalar(r: cp::scalar_value::Reader<'_>) -> Result<ScalarValue, Fault> {
    use cp::scalar_value::Which;
    Ok(match r.which()? {
        Which::Null(()) => ScalarValue::Null,
        Which::Bool(x) => ScalarValue::Bool(x),
        Which::Int64(x) => ScalarValue::Int64(x),
        Which::Float(x) => ScalarValue::Float(x),
        Which::Double(x) => ScalarValue::Double(x),
        Which::VarChar(x) => ScalarValue::VarChar(read_string(x).at("varChar")?),
        Which::Json(x) => ScalarValue::Json(read_string(x).at("json")?),
    })
}

fn put_pk(v: &PrimaryKey, mut b: cp::primary_key::Builder<'_>) {
    match v {
        PrimaryKey::Int64(x) => b.set_int64(*x),
        PrimaryKey::VarChar(x) => b.set_var_char(x.as_str()),
    }
}

fn get_pk(r: cp::primary_key::Reader<'_>) -> Result<PrimaryKey, Fault> {
    use cp::primary_key::Which;
    Ok(match r.which()? {
        Which::Int64(x) => PrimaryKey::Int64(x),
        Which::VarChar(x) => PrimaryKey::VarChar(read_string(x).at("varChar")?),
    })
}

fn put_column(v: &Column, mut b: cp::column::Builder<'_>) {
    b.set_name(v.name.as_str());
    fill_structs(b.init_values(len32(v.values.len())), &v.values, put_scalar);
}

fn get_column(r: cp::column::Reader<'_>) -> Result<Column, Fault> {
    Ok(Column {
        name: read_string(r.get_name()).at("name")?,
        values: read_structs(r.get_values(), get_scalar).at("values")?,
    })
}

fn put_row_batch(v: &RowBatch, mut b: cp::row_batch::Builder<'_>) {
    fill_structs(b.reborrow().init_pks(len32(v.pks.len())), &v.pks, put_pk);
    b.set_dim(v.dim);
    fill_f32s(b.reborrow().init_vectors(len32(v.vectors.len())), &v.vectors);
    fill_structs(b.reborrow().init_columns(len32(v.columns.len())), &v.columns, put_column);
    fill_strings(b.init_dynamic(len32(v.dynamic.len())), &v.dynamic);
}

fn get_row_batch(r: cp::row_batch::Reader<'_>) -> Result<RowBatch, Fault> {
    Ok(RowBatch {
        pks: read_structs(r.get_pks(), get_pk).at("pks")?,
        dim: r.get_dim(),
        vectors: read_f32s(r.get_vectors()).at("vectors")?,
        columns: read_structs(r.get_columns(), get_column).at("columns")?,
        dynamic: read_strings(r.get_dynamic()).at("dynamic")?,
    })
}

// ---- schemas, collections, segments ----

fn put_field_schema(v: &FieldSchema, mut b: cp::field_schema::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_data_type(data_type_to(v.data_type));
    b.set_is_primary(v.is_primary);
    b.set_auto_id(v.auto_id);
    b.set_dim(v.dim);
    b.set_max_length(v.max_length);
    b.set_description(v.description.as_str());
}

fn get_field_schema(r: cp::field_schema::Reader<'_>) -> Result<FieldSchema, Fault> {
    Ok(FieldSchema {
        name: read_string(r.get_name()).at("name")?,
        data_type: data_type_from(r.get_data_type().at("dataType")?),
        is_primary: r.get_is_primary(),
        auto_id: r.get_auto_id(),
        dim: r.get_dim(),
        max_length: r.get_max_length(),
        description: read_string(r.get_description()).at("description")?,
    })
}

fn put_collection_schema(v: &CollectionSchema, mut b: cp::collection_schema::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_description(v.description.as_str());
    fill_structs(b.reborrow().init_fields(len32(v.fields.len())), &v.fields, put_field_schema);
    b.set_enable_dynamic_field(v.enable_dynamic_field);
    b.set_num_shards(v.num_shards);
    b.set_consistency(consistency_to(v.consistency));
}

fn get_collection_schema(r: cp::collection_schema::Reader<'_>) -> Result<CollectionSchema, Fault> {
    Ok(CollectionSchema {
        name: read_string(r.get_name()).at("name")?,
        description: read_string(r.get_description()).at("description")?,
        fields: read_structs(r.get_fields(), get_field_schema).at("fields")?,
        enable_dynamic_field: r.get_enable_dynamic_field(),
        num_shards: r.get_num_shards(),
        consistency: consistency_from(r.get_consistency().at("consistency")?),
    })
}

fn put_index_params(v: &IndexParams, mut b: cp::index_params::Builder<'_>) {
    b.set_index_type(index_type_to(v.index_type));
    b.set_metric(metric_to(v.metric));
    b.set_nlist(v.nlist);
    b.set_m(v.m);
    b.set_nbits(v.nbits);
    b.set_ef_construction(v.ef_construction);
    b.set_auto(v.auto);
    b.set_name(v.name.as_str());
}

fn get_index_params(r: cp::index_params::Reader<'_>) -> Result<IndexParams, Fault> {
    Ok(IndexParams {
        index_type: index_type_from(r.get_index_type().at("indexType")?),
        metric: metric_from(r.get_metric().at("metric")?),
        nlist: r.get_nlist(),
        m: r.get_m(),
        nbits: r.get_nbits(),
        ef_construction: r.get_ef_construction(),
        auto: r.get_auto(),
        name: read_string(r.get_name()).at("name")?,
    })
}

fn put_scalar_index(v: &ScalarIndex, mut b: cp::scalar_index::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_field(v.field.as_str());
    b.set_index_type(scalar_index_type_to(v.index_type));
    let keys: Vec<String> = v.params.iter().map(|(k, _)| k.clone()).collect();
    let values: Vec<String> = v.params.iter().map(|(_, v)| v.clone()).collect();
    fill_strings(b.reborrow().init_param_keys(len32(keys.len())), &keys);
    fill_strings(b.reborrow().init_param_values(len32(values.len())), &values);
}

fn get_scalar_index(r: cp::scalar_index::Reader<'_>) -> Result<ScalarIndex, Fault> {
    let keys = read_strings(r.get_param_keys()).at("paramKeys")?;
    let values = read_strings(r.get_param_values()).at("paramValues")?;
    if keys.len() != values.len() {
        return Err(Fault::new(format!("{} parameter keys but {} values", keys.len(), values.len()))).at("paramValues");
    }
    Ok(ScalarIndex {
        name: read_string(r.get_name()).at("name")?,
        field: read_string(r.get_field()).at("field")?,
        index_type: scalar_index_type_from(r.get_index_type().at("indexType")?),
        params: keys.into_iter().zip(values).collect(),
    })
}

fn put_partition_info(v: &PartitionInfo, mut b: cp::partition_info::Builder<'_>) {
    b.set_id(v.id);
    b.set_name(v.name.as_str());
    b.set_created_ts(v.created_ts);
    b.set_state(partition_state_to(v.state));
}

fn get_partition_info(r: cp::partition_info::Reader<'_>) -> Result<PartitionInfo, Fault> {
    Ok(PartitionInfo {
        id: r.get_id(),
        name: read_string(r.get_name()).at("name")?,
        created_ts: r.get_created_ts(),
        state: partition_state_from(r.get_state().at("state")?),
    })
}

fn put_collection_info(v: &CollectionInfo, mut b: cp::collection_info::Builder<'_>) {
    b.set_id(v.id);
    fill_structs(b.reborrow().init_partitions(len32(v.partitions.len())), &v.partitions, put_partition_info);
    fill_structs(b.reborrow().init_scalar_indexes(len32(v.scalar_indexes.len())), &v.scalar_indexes, put_scalar_index);
    put_collection_schema(&v.schema, b.reborrow().init_schema());
    match &v.index {
        None => b.reborrow().init_index().set_none(()),
        Some(params) => put_index_params(params, b.reborrow().init_index().init_some()),
    }
    b.set_created_ts(v.created_ts);
}

fn get_collection_info(r: cp::collection_info::Reader<'_>) -> Result<CollectionInfo, Fault> {
    use cp::collection_info::index::Which;
    let index = match r.get_index().which().at("index")? {
        Which::None(()) => None,
        Which::Some(params) => Some(get_index_params(params.at("index")?).at("index")?),
    };
    Ok(CollectionInfo {
        id: r.get_id(),
        schema: get_collection_schema(r.get_schema().at("schema")?).at("schema")?,
        index,
        created_ts: r.get_created_ts(),
        scalar_indexes: read_structs(r.get_scalar_indexes(), get_scalar_index).at("scalarIndexes")?,
        partitions: read_structs(r.get_partitions(), get_partition_info).at("partitions")?,
    })
}

fn put_segment_info(v: &SegmentInfo, mut b: cp::segment_info::Builder<'_>) {
    b.set_id(v.id);
    b.set_collection(v.collection);
    b.set_shard(v.shard);
    b.set_rows(v.rows);
    b.set_start_seq(v.start_seq);
    b.set_end_seq(v.end_seq);
    b.set_data_path(v.data_path.as_str());
    match &v.index_path {
        None => b.reborrow().init_index_path().set_none(()),
        Some(path) => b.reborrow().init_index_path().set_some(path.as_str()),
    }
    b.set_state(segment_state_to(v.state));
    b.set_mem_size(v.mem_size);
    b.set_delete_seq(v.delete_seq);
    fill_u64s(b.reborrow().init_compacted_from(len32(v.compacted_from.len())), &v.compacted_from);
    fill_u32s(b.init_partitions(len32(v.partitions.len())), &v.partitions);
}

fn get_segment_info(r: cp::segment_info::Reader<'_>) -> Result<SegmentInfo, Fault> {
    use cp::segment_info::index_path::Which;
    let index_path = match r.get_index_path().which().at("indexPath")? {
        Which::None(()) => None,
        Which::Some(path) => Some(read_string(path).at("indexPath")?),
    };
    Ok(SegmentInfo {
        id: r.get_id(),
        collection: r.get_collection(),
        shard: r.get_shard(),
        rows: r.get_rows(),
        start_seq: r.get_start_seq(),
        end_seq: r.get_end_seq(),
        data_path: read_string(r.get_data_path()).at("dataPath")?,
        index_path,
        state: segment_state_from(r.get_state().at("state")?),
        mem_size: r.get_mem_size(),
        delete_seq: r.get_delete_seq(),
        compacted_from: read_u64s(r.get_compacted_from()).at("compactedFrom")?,
        partitions: read_u32s(r.get_partitions()).at("partitions")?,
    })
}

fn put_segment_placement(v: &SegmentPlacement, mut b: cp::segment_placement::Builder<'_>) {
    put_segment_info(&v.segment, b.reborrow().init_segment());
    fill_strings(b.init_nodes(len32(v.nodes.len())), &v.nodes);
}

fn get_segment_placement(r: cp::segment_placement::Reader<'_>) -> Result<SegmentPlacement, Fault> {
    Ok(SegmentPlacement {
        segment: get_segment_info(r.get_segment().at("segment")?).at("segment")?,
        nodes: read_strings(r.get_nodes()).at("nodes")?,
    })
}

fn put_shard_placement(v: &ShardPlacement, mut b: cp::shard_placement::Builder<'_>) {
    b.set_shard(v.shard);
    b.set_leader(v.leader.as_str());
    b.set_sealed_seq(v.sealed_seq);
    b.set_replica(v.replica);
}

fn get_shard_placement(r: cp::shard_placement::Reader<'_>) -> Result<ShardPlacement, Fault> {
    Ok(ShardPlacement {
        shard: r.get_shard(),
        leader: read_string(r.get_leader()).at("leader")?,
        sealed_seq: r.get_sealed_seq(),
        replica: r.get_replica(),
    })
}

fn put_replica_group(v: &ReplicaGroup, mut b: cp::replica_group::Builder<'_>) {
    b.set_id(v.id);
    fill_strings(b.init_nodes(len32(v.nodes.len())), &v.nodes);
}

fn get_replica_group(r: cp::replica_group::Reader<'_>) -> Result<ReplicaGroup, Fault> {
    Ok(ReplicaGroup { id: r.get_id(), nodes: read_strings(r.get_nodes()).at("nodes")? })
}

fn put_shard_view(v: &ShardView, mut b: cp::shard_view::Builder<'_>) {
    b.set_shard(v.shard);
    b.set_version(v.version);
    fill_u64s(b.init_segments(len32(v.segments.len())), &v.segments);
}

fn get_shard_view(r: cp::shard_view::Reader<'_>) -> Result<ShardView, Fault> {
    Ok(ShardView {
        shard: r.get_shard(),
        version: r.get_version(),
        segments: read_u64s(r.get_segments()).at("segments")?,
    })
}

fn put_distribution(v: &Distribution, mut b: cp::distribution::Builder<'_>) {
    put_collection_info(&v.collection, b.reborrow().init_collection());
    fill_structs(b.reborrow().init_shards(len32(v.shards.len())), &v.shards, put_shard_placement);
    fill_structs(b.reborrow().init_segments(len32(v.segments.len())), &v.segments, put_segment_placement);
    b.set_version(v.version);
    b.set_released(v.released);
    fill_structs(b.reborrow().init_replicas(len32(v.replicas.len())), &v.replicas, put_replica_group);
    fill_structs(b.init_unserved(len32(v.unserved.len())), &v.unserved, put_segment_info);
}

fn get_distribution(r: cp::distribution::Reader<'_>) -> Result<Distribution, Fault> {
    Ok(Distribution {
        collection: get_collection_info(r.get_collection().at("collection")?).at("collection")?,
        shards: read_structs(r.get_shards(), get_shard_placement).at("shards")?,
        segments: read_structs(r.get_segments(), get_segment_placement).at("segments")?,
        version: r.get_version(),
        released: r.get_released(),
        replicas: read_structs(r.get_replicas(), get_replica_group).at("replicas")?,
        unserved: read_structs(r.get_unserved(), get_segment_info).at("unserved")?,
    })
}

fn put_load_collection(v: &LoadCollection, mut b: cp::load_collection::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_replicas(v.replicas);
}

fn get_load_collection(r: cp::load_collection::Reader<'_>) -> Result<LoadCollection, Fault> {
    Ok(LoadCollection { name: read_string(r.get_name()).at("name")?, replicas: r.get_replicas() })
}

impl SizeHint for LoadCollection {
    fn hint_words(&self) -> usize {
        SMALL_HINT + text_words(&self.name)
    }
}

fn put_node_status(v: &NodeStatus, mut b: cp::node_status::Builder<'_>) {
    b.set_node_id(v.node_id.as_str());
    b.set_role(role_to(v.role));
    b.set_host(v.host.as_str());
    b.set_pid(v.pid);
    b.set_healthy(v.healthy);
    b.set_mem_used(v.mem_used);
    b.set_mem_capacity(v.mem_capacity);
    b.set_segments(v.segments);
    b.set_restarts(v.restarts);
    b.set_started_ms(v.started_ms);
    b.set_heartbeat_ms(v.heartbeat_ms);
    b.set_detail(v.detail.as_str());
    b.set_state(match v.state {
        NodeState::Starting => cp::NodeState::Starting,
        NodeState::Serving => cp::NodeState::Serving,
        NodeState::Draining => cp::NodeState::Draining,
        NodeState::Stopped => cp::NodeState::Stopped,
        NodeState::Standby => cp::NodeState::Standby,
    });
    b.set_cpu_cores(v.cpu_cores);
    b.set_cpu_busy(v.cpu_busy);
    b.set_host_agent(v.host_agent.as_str());
    b.set_faiss_simd(v.faiss_simd.as_str());
    b.set_memory_refusals(v.memory_refusals);
    b.set_last_request_ms(v.last_request_ms);
}

fn get_node_status(r: cp::node_status::Reader<'_>) -> Result<NodeStatus, Fault> {
    Ok(NodeStatus {
        node_id: read_string(r.get_node_id()).at("nodeId")?,
        role: role_from(r.get_role().at("role")?),
        host: read_string(r.get_host()).at("host")?,
        pid: r.get_pid(),
        healthy: r.get_healthy(),
        mem_used: r.get_mem_used(),
        mem_capacity: r.get_mem_capacity(),
        segments: r.get_segments(),
        restarts: r.get_restarts(),
        started_ms: r.get_started_ms(),
        heartbeat_ms: r.get_heartbeat_ms(),
        detail: read_string(r.get_detail()).at("detail")?,
        state: match r.get_state().at("state")? {
            cp::NodeState::Starting => NodeState::Starting,
            cp::NodeState::Serving => NodeState::Serving,
            cp::NodeState::Draining => NodeState::Draining,
            cp::NodeState::Stopped => NodeState::Stopped,
            cp::NodeState::Standby => NodeState::Standby,
        },
        cpu_cores: r.get_cpu_cores(),
        cpu_busy: r.get_cpu_busy(),
        host_agent: read_string(r.get_host_agent()).at("hostAgent")?,
        faiss_simd: read_string(r.get_faiss_simd()).at("faissSimd")?,
        memory_refusals: r.get_memory_refusals(),
        last_request_ms: r.get_last_request_ms(),
    })
}

fn put_search_params(v: &SearchParams, mut b: cp::search_params::Builder<'_>) {
    b.set_nprobe(v.nprobe);
    b.set_ef(v.ef);
}

fn get_search_params(r: cp::search_params::Reader<'_>) -> SearchParams {
    SearchParams { nprobe: r.get_nprobe(), ef: r.get_ef() }
}

fn put_hits(v: &Hits, mut b: cp::hits::Builder<'_>) {
    fill_structs(b.reborrow().init_pks(len32(v.pks.len())), &v.pks, put_pk);
    fill_f32s(b.reborrow().init_scores(len32(v.scores.len())), &v.scores);
    fill_structs(b.init_columns(len32(v.columns.len())), &v.columns, put_column);
}

fn get_hits(r: cp::hits::Reader<'_>) -> Result<Hits, Fault> {
    Ok(Hits {
        pks: read_structs(r.get_pks(), get_pk).at("pks")?,
        scores: read_f32s(r.get_scores()).at("scores")?,
        columns: read_structs(r.get_columns(), get_column).at("columns")?,
    })
}

// ---- messages ----

fn put_create_collection(v: &CreateCollection, b: cp::create_collection::Builder<'_>) {
    put_collection_schema(&v.schema, b.init_schema());
}

fn get_create_collection(r: cp::create_collection::Reader<'_>) -> Result<CreateCollection, Fault> {
    Ok(CreateCollection { schema: get_collection_schema(r.get_schema().at("schema")?).at("schema")? })
}

fn put_collection_name(v: &CollectionName, mut b: cp::collection_name::Builder<'_>) {
    b.set_name(v.name.as_str());
}

fn get_collection_name(r: cp::collection_name::Reader<'_>) -> Result<CollectionName, Fault> {
    Ok(CollectionName { name: read_string(r.get_name()).at("name")? })
}

fn put_empty(_: &Empty, _: cp::empty::Builder<'_>) {}

fn get_empty(_: cp::empty::Reader<'_>) -> Result<Empty, Fault> {
    Ok(Empty {})
}

fn put_collection_list(v: &CollectionList, b: cp::collection_list::Builder<'_>) {
    fill_strings(b.init_names(len32(v.names.len())), &v.names);
}

fn get_collection_list(r: cp::collection_list::Reader<'_>) -> Result<CollectionList, Fault> {
    Ok(CollectionList { names: read_strings(r.get_names()).at("names")? })
}

fn put_collection_description(v: &CollectionDescription, mut b: cp::collection_description::Builder<'_>) {
    put_collection_info(&v.info, b.reborrow().init_info());
    b.set_num_rows(v.num_rows);
    b.set_sealed_segments(v.sealed_segments);
}

fn get_collection_description(r: cp::collection_description::Reader<'_>) -> Result<CollectionDescription, Fault> {
    Ok(CollectionDescription {
        info: get_collection_info(r.get_info().at("info")?).at("info")?,
        num_rows: r.get_num_rows(),
        sealed_segments: r.get_sealed_segments(),
    })
}

fn put_create_index(v: &CreateIndex, mut b: cp::create_index::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    put_index_params(&v.params, b.init_params());
}

fn get_create_index(r: cp::create_index::Reader<'_>) -> Result<CreateIndex, Fault> {
    Ok(CreateIndex {
        collection: read_string(r.get_collection()).at("collection")?,
        params: get_index_params(r.get_params().at("params")?).at("params")?,
    })
}

fn put_create_scalar_index(v: &CreateScalarIndex, mut b: cp::create_scalar_index::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    put_scalar_index(&v.index, b.init_index());
}

fn get_create_scalar_index(r: cp::create_scalar_index::Reader<'_>) -> Result<CreateScalarIndex, Fault> {
    Ok(CreateScalarIndex {
        collection: read_string(r.get_collection()).at("collection")?,
        index: get_scalar_index(r.get_index().at("index")?).at("index")?,
    })
}

fn put_drop_scalar_index(v: &DropScalarIndex, mut b: cp::drop_scalar_index::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    b.set_name(v.name.as_str());
}

fn get_drop_scalar_index(r: cp::drop_scalar_index::Reader<'_>) -> Result<DropScalarIndex, Fault> {
    Ok(DropScalarIndex {
        collection: read_string(r.get_collection()).at("collection")?,
        name: read_string(r.get_name()).at("name")?,
    })
}

fn put_insert(v: &Insert, mut b: cp::insert::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    b.set_partition(v.partition.as_str());
    put_row_batch(&v.rows, b.init_rows());
}

fn get_insert(r: cp::insert::Reader<'_>) -> Result<Insert, Fault> {
    Ok(Insert {
        collection: read_string(r.get_collection()).at("collection")?,
        rows: get_row_batch(r.get_rows().at("rows")?).at("rows")?,
        partition: read_string(r.get_partition()).at("partition")?,
    })
}

fn put_partition_request(v: &PartitionRequest, mut b: cp::partition_request::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    fill_strings(b.reborrow().init_names(len32(v.names.len())), &v.names);
    b.set_replicas(v.replicas);
}

fn get_partition_request(r: cp::partition_request::Reader<'_>) -> Result<PartitionRequest, Fault> {
    Ok(PartitionRequest {
        collection: read_string(r.get_collection()).at("collection")?,
        names: read_strings(r.get_names()).at("names")?,
        replicas: r.get_replicas(),
    })
}

fn put_delete(v: &Delete, mut b: cp::delete::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    fill_structs(b.reborrow().init_pks(len32(v.pks.len())), &v.pks, put_pk);
    b.set_filter(v.filter.as_str());
    b.set_partition(v.partition.as_str());
}

fn get_delete(r: cp::delete::Reader<'_>) -> Result<Delete, Fault> {
    Ok(Delete {
        collection: read_string(r.get_collection()).at("collection")?,
        pks: read_structs(r.get_pks(), get_pk).at("pks")?,
        filter: read_string(r.get_filter()).at("filter")?,
        partition: read_string(r.get_partition()).at("partition")?,
    })
}

fn put_mutation_result(v: &MutationResult, mut b: cp::mutation_result::Builder<'_>) {
    fill_structs(b.reborrow().init_pks(len32(v.pks.len())), &v.pks, put_pk);
    b.set_timestamp(v.timestamp);
    b.set_count(v.count);
}

fn get_mutation_result(r: cp::mutation_result::Reader<'_>) -> Result<MutationResult, Fault> {
    let pks = read_structs(r.get_pks(), get_pk).at("pks")?;
    // Older proxies send no count: their keys are the count.
    let count = match r.get_count() {
        0 => pks.len() as u64,
        n => n,
    };
    Ok(MutationResult { pks, timestamp: r.get_timestamp(), count })
}

fn put_get(v: &Get, mut b: cp::get::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    fill_structs(b.reborrow().init_pks(len32(v.pks.len())), &v.pks, put_pk);
    fill_strings(b.reborrow().init_output_fields(len32(v.output_fields.len())), &v.output_fields);
    b.set_consistency(consistency_to(v.consistency));
}

fn get_get(r: cp::get::Reader<'_>) -> Result<Get, Fault> {
    Ok(Get {
        collection: read_string(r.get_collection()).at("collection")?,
        pks: read_structs(r.get_pks(), get_pk).at("pks")?,
        output_fields: read_strings(r.get_output_fields()).at("outputFields")?,
        consistency: consistency_from(r.get_consistency().at("consistency")?),
    })
}

fn put_search(v: &Search, mut b: cp::search::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    b.set_dim(v.dim);
    fill_f32s(b.reborrow().init_vectors(len32(v.vectors.len())), &v.vectors);
    b.set_top_k(v.top_k);
    put_search_params(&v.params, b.reborrow().init_params());
    fill_strings(b.reborrow().init_output_fields(len32(v.output_fields.len())), &v.output_fields);
    b.set_consistency(consistency_to(v.consistency));
    b.set_filter(v.filter.as_str());
    fill_strings(b.reborrow().init_partitions(len32(v.partitions.len())), &v.partitions);
}

fn get_search(r: cp::search::Reader<'_>) -> Result<Search, Fault> {
    Ok(Search {
        collection: read_string(r.get_collection()).at("collection")?,
        dim: r.get_dim(),
        vectors: read_f32s(r.get_vectors()).at("vectors")?,
        top_k: r.get_top_k(),
        params: get_search_params(r.get_params().at("params")?),
        output_fields: read_strings(r.get_output_fields()).at("outputFields")?,
        consistency: consistency_from(r.get_consistency().at("consistency")?),
        filter: read_string(r.get_filter()).at("filter")?,
        partitions: read_strings(r.get_partitions()).at("partitions")?,
    })
}

fn put_query(v: &Query, mut b: cp::query::Builder<'_>) {
    b.set_collection(v.collection.as_str());
    b.set_filter(v.filter.as_str());
    fill_strings(b.reborrow().init_output_fields(len32(v.output_fields.len())), &v.output_fields);
    b.set_limit(v.limit);
    b.set_offset(v.offset);
    b.set_consistency(consistency_to(v.consistency));
    fill_strings(b.reborrow().init_partitions(len32(v.partitions.len())), &v.partitions);
}

fn get_query(r: cp::query::Reader<'_>) -> Result<Query, Fault> {
    Ok(Query {
        collection: read_string(r.get_collection()).at("collection")?,
        filter: read_string(r.get_filter()).at("filter")?,
        output_fields: read_strings(r.get_output_fields()).at("outputFields")?,
        limit: r.get_limit(),
        offset: r.get_offset(),
        consistency: consistency_from(r.get_consistency().at("consistency")?),
        partitions: read_strings(r.get_partitions()).at("partitions")?,
    })
}

fn put_query_results(v: &QueryResults, b: cp::query_results::Builder<'_>) {
    put_row_batch(&v.rows, b.init_rows());
}

fn get_query_results(r: cp::query_results::Reader<'_>) -> Result<QueryResults, Fault> {
    Ok(QueryResults { rows: get_row_batch(r.get_rows().at("rows")?).at("rows")? })
}

fn put_search_results(v: &SearchResults, b: cp::search_results::Builder<'_>) {
    fill_structs(b.init_results(len32(v.results.len())), &v.results, put_hits);
}

fn get_search_results(r: cp::search_results::Reader<'_>) -> Result<SearchResults, Fault> {
    Ok(SearchResults { results: read_structs(r.get_results(), get_hits).at("results")? })
}

fn put_node_search_results(v: &NodeSearchResults, mut b: cp::node_search_results::Builder<'_>) {
    fill_structs(b.reborrow().init_results(len32(v.results.len())), &v.results, put_hits);
    fill_structs(b.reborrow().init_shards(len32(v.shards.len())), &v.shards, put_shard_view);
    b.set_in_flight(v.in_flight);
    b.set_rows_searched(v.rows_searched);
}

fn get_node_search_results(r: cp::node_search_results::Reader<'_>) -> Result<NodeSearchResults, Fault> {
    Ok(NodeSearchResults {
        results: read_structs(r.get_results(), get_hits).at("results")?,
        shards: read_structs(r.get_shards(), get_shard_view).at("shards")?,
        in_flight: r.get_in_flight(),
        rows_searched: r.get_rows_searched(),
    })
}

fn put_flush_result(v: &FlushResult, b: cp::flush_result::Builder<'_>) {
    fill_u64s(b.init_segments(len32(v.segments.len())), &v.segments);
}

fn get_flush_result(r: cp::flush_result::Reader<'_>) -> Result<FlushResult, Fault> {
    Ok(FlushResult { segments: read_u64s(r.get_segments()).at("segments")? })
}

fn put_cluster_status(v: &ClusterStatus, mut b: cp::cluster_status::Builder<'_>) {
    b.set_cluster(v.cluster.as_str());
    fill_structs(b.reborrow().init_nodes(len32(v.nodes.len())), &v.nodes, put_node_status);
    fill_structs(b.reborrow().init_roles(len32(v.roles.len())), &v.roles, put_role_scaling);
    fill_structs(b.reborrow().init_hosts(len32(v.hosts.len())), &v.hosts, put_host_status);
    fill_strings(b.init_notes(len32(v.notes.len())), &v.notes);
}

fn get_cluster_status(r: cp::cluster_status::Reader<'_>) -> Result<ClusterStatus, Fault> {
    Ok(ClusterStatus {
        cluster: read_string(r.get_cluster()).at("cluster")?,
        nodes: read_structs(r.get_nodes(), get_node_status).at("nodes")?,
        roles: read_structs(r.get_roles(), get_role_scaling).at("roles")?,
        hosts: read_structs(r.get_hosts(), get_host_status).at("hosts")?,
        notes: read_strings(r.get_notes()).at("notes")?,
    })
}

// ---- scaling ----

fn put_scale_request(v: &ScaleRequest, mut b: cp::scale_request::Builder<'_>) {
    b.set_role(v.role.as_str());
    b.set_replicas(v.replicas);
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
}

fn get_scale_request(r: cp::scale_request::Reader<'_>) -> Result<ScaleRequest, Fault> {
    Ok(ScaleRequest {
        role: read_string(r.get_role()).at("role")?,
        replicas: r.get_replicas(),
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
    })
}

fn put_scale_reply(v: &ScaleReply, mut b: cp::scale_reply::Builder<'_>) {
    b.set_role(role_to(v.role));
    b.set_replicas(v.replicas);
    b.set_previous(v.previous);
    b.set_warning(v.warning.as_str());
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
    b.set_previous_cpu_millis(v.previous_size.cpu_millis);
    b.set_previous_memory_bytes(v.previous_size.memory_bytes);
}

fn get_scale_reply(r: cp::scale_reply::Reader<'_>) -> Result<ScaleReply, Fault> {
    Ok(ScaleReply {
        role: role_from(r.get_role().at("role")?),
        replicas: r.get_replicas(),
        previous: r.get_previous(),
        warning: read_string(r.get_warning()).at("warning")?,
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
        previous_size: NodeSize {
            cpu_millis: r.get_previous_cpu_millis(),
            memory_bytes: r.get_previous_memory_bytes(),
        },
    })
}

fn put_role_scaling(v: &RoleScaling, mut b: cp::role_scaling::Builder<'_>) {
    b.set_role(role_to(v.role));
    b.set_desired(v.desired);
    b.set_serving(v.serving);
    b.set_starting(v.starting);
    b.set_draining(v.draining);
    b.set_converged(v.converged);
    b.set_activity(v.activity.as_str());
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
    b.set_resizing(v.resizing);
}

fn get_role_scaling(r: cp::role_scaling::Reader<'_>) -> Result<RoleScaling, Fault> {
    Ok(RoleScaling {
        role: role_from(r.get_role().at("role")?),
        desired: r.get_desired(),
        serving: r.get_serving(),
        starting: r.get_starting(),
        draining: r.get_draining(),
        converged: r.get_converged(),
        activity: read_string(r.get_activity()).at("activity")?,
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
        resizing: r.get_resizing(),
    })
}

fn put_hosted_node(v: &HostedNode, mut b: cp::hosted_node::Builder<'_>) {
    b.set_node_id(v.node_id.as_str());
    {
        let mut roles = b.reborrow().init_roles(len32(v.roles.len()));
        for (i, r) in v.roles.iter().enumerate() {
            roles.set(i as u32, role_to(*r));
        }
    }
    b.set_pid(v.pid);
    b.set_restarts(v.restarts);
    b.set_managed(v.managed);
    b.set_stopping(v.stopping);
    b.set_last_exit(v.last_exit.as_str());
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
    b.set_oom_kills(v.oom_kills);
}

fn get_hosted_node(r: cp::hosted_node::Reader<'_>) -> Result<HostedNode, Fault> {
    let mut roles = Vec::new();
    for role in r.get_roles().at("roles")?.iter() {
        roles.push(role_from(role.at("roles")?));
    }
    Ok(HostedNode {
        node_id: read_string(r.get_node_id()).at("nodeId")?,
        roles,
        pid: r.get_pid(),
        restarts: r.get_restarts(),
        managed: r.get_managed(),
        stopping: r.get_stopping(),
        last_exit: read_string(r.get_last_exit()).at("lastExit")?,
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
        oom_kills: r.get_oom_kills(),
    })
}

fn put_host_status(v: &HostStatus, mut b: cp::host_status::Builder<'_>) {
    b.set_host_id(v.host_id.as_str());
    b.set_hostname(v.hostname.as_str());
    b.set_pid(v.pid);
    b.set_cpus(v.cpus);
    b.set_mem_total(v.mem_total);
    b.set_mem_available(v.mem_available);
    b.set_max_nodes(v.max_nodes);
    fill_structs(b.reborrow().init_nodes(len32(v.nodes.len())), &v.nodes, put_hosted_node);
    b.set_started_ms(v.started_ms);
    b.set_heartbeat_ms(v.heartbeat_ms);
    b.set_enforcement(v.enforcement.as_str());
}

fn get_host_status(r: cp::host_status::Reader<'_>) -> Result<HostStatus, Fault> {
    Ok(HostStatus {
        host_id: read_string(r.get_host_id()).at("hostId")?,
        hostname: read_string(r.get_hostname()).at("hostname")?,
        pid: r.get_pid(),
        cpus: r.get_cpus(),
        mem_total: r.get_mem_total(),
        mem_available: r.get_mem_available(),
        max_nodes: r.get_max_nodes(),
        nodes: read_structs(r.get_nodes(), get_hosted_node).at("nodes")?,
        started_ms: r.get_started_ms(),
        heartbeat_ms: r.get_heartbeat_ms(),
        enforcement: read_string(r.get_enforcement()).at("enforcement")?,
    })
}

fn put_scaling_status(v: &ScalingStatus, mut b: cp::scaling_status::Builder<'_>) {
    fill_structs(b.reborrow().init_roles(len32(v.roles.len())), &v.roles, put_role_scaling);
    fill_structs(b.init_hosts(len32(v.hosts.len())), &v.hosts, put_host_status);
}

fn get_scaling_status(r: cp::scaling_status::Reader<'_>) -> Result<ScalingStatus, Fault> {
    Ok(ScalingStatus {
        roles: read_structs(r.get_roles(), get_role_scaling).at("roles")?,
        hosts: read_structs(r.get_hosts(), get_host_status).at("hosts")?,
    })
}

fn put_scaling_event(v: &ScalingEvent, mut b: cp::scaling_event::Builder<'_>) {
    b.set_at_ms(v.at_ms);
    b.set_role(role_to(v.role));
    b.set_node_id(v.node_id.as_str());
    b.set_action(v.action.as_str());
    b.set_detail(v.detail.as_str());
}

fn get_scaling_event(r: cp::scaling_event::Reader<'_>) -> Result<ScalingEvent, Fault> {
    Ok(ScalingEvent {
        at_ms: r.get_at_ms(),
        role: role_from(r.get_role().at("role")?),
        node_id: read_string(r.get_node_id()).at("nodeId")?,
        action: read_string(r.get_action()).at("action")?,
        detail: read_string(r.get_detail()).at("detail")?,
    })
}

fn put_segment_change_info(v: &SegmentChangeInfo, mut b: cp::segment_change_info::Builder<'_>) {
    b.set_collection(v.collection);
    b.set_online_node_id(v.online_node_id.as_str());
    fill_u64s(b.reborrow().init_online_segment_ids(len32(v.online_segment_ids.len())), &v.online_segment_ids);
    b.set_offline_node_id(v.offline_node_id.as_str());
    fill_u64s(b.reborrow().init_offline_segment_ids(len32(v.offline_segment_ids.len())), &v.offline_segment_ids);
    b.set_reason(v.reason.as_str());
    b.set_at_ms(v.at_ms);
    b.set_released_ms(v.released_ms);
}

fn get_segment_change_info(r: cp::segment_change_info::Reader<'_>) -> Result<SegmentChangeInfo, Fault> {
    Ok(SegmentChangeInfo {
        collection: r.get_collection(),
        online_node_id: read_string(r.get_online_node_id()).at("onlineNodeId")?,
        online_segment_ids: read_u64s(r.get_online_segment_ids()).at("onlineSegmentIds")?,
        offline_node_id: read_string(r.get_offline_node_id()).at("offlineNodeId")?,
        offline_segment_ids: read_u64s(r.get_offline_segment_ids()).at("offlineSegmentIds")?,
        reason: read_string(r.get_reason()).at("reason")?,
        at_ms: r.get_at_ms(),
        released_ms: r.get_released_ms(),
    })
}

fn put_cluster_events(v: &ClusterEvents, mut b: cp::cluster_events::Builder<'_>) {
    fill_structs(b.reborrow().init_handoffs(len32(v.handoffs.len())), &v.handoffs, put_segment_change_info);
    fill_structs(b.init_scaling(len32(v.scaling.len())), &v.scaling, put_scaling_event);
}

fn get_cluster_events(r: cp::cluster_events::Reader<'_>) -> Result<ClusterEvents, Fault> {
    Ok(ClusterEvents {
        handoffs: read_structs(r.get_handoffs(), get_segment_change_info).at("handoffs")?,
        scaling: read_structs(r.get_scaling(), get_scaling_event).at("scaling")?,
    })
}

fn put_start_node(v: &StartNode, mut b: cp::start_node::Builder<'_>) {
    b.set_node_id(v.node_id.as_str());
    b.set_role(role_to(v.role));
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
}

fn get_start_node(r: cp::start_node::Reader<'_>) -> Result<StartNode, Fault> {
    Ok(StartNode {
        node_id: read_string(r.get_node_id()).at("nodeId")?,
        role: role_from(r.get_role().at("role")?),
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
    })
}

fn put_idling_status(v: &IdlingStatus, mut b: cp::idling_status::Builder<'_>) {
    b.set_enabled(v.enabled);
    b.set_state(v.state.as_str());
    b.set_since_ms(v.since_ms);
    b.set_last_request_ms(v.last_request_ms);
    b.set_after_ms(v.after_ms);
    b.set_timeout_ms(v.timeout_ms);
    b.set_last_startup_ms(v.last_startup_ms);
    b.set_blocked(v.blocked.as_str());
    b.set_stopped(v.stopped);
}

fn get_idling_status(r: cp::idling_status::Reader<'_>) -> Result<IdlingStatus, Fault> {
    Ok(IdlingStatus {
        enabled: r.get_enabled(),
        state: read_string(r.get_state()).at("state")?,
        since_ms: r.get_since_ms(),
        last_request_ms: r.get_last_request_ms(),
        after_ms: r.get_after_ms(),
        timeout_ms: r.get_timeout_ms(),
        last_startup_ms: r.get_last_startup_ms(),
        blocked: read_string(r.get_blocked()).at("blocked")?,
        stopped: r.get_stopped(),
    })
}

fn put_autoscale_request(v: &AutoscaleRequest, mut b: cp::autoscale_request::Builder<'_>) {
    b.set_role(v.role.as_str());
    b.set_min_memory_bytes(v.min_memory_bytes);
    b.set_max_memory_bytes(v.max_memory_bytes);
    b.set_reset(v.reset);
}

fn get_autoscale_request(r: cp::autoscale_request::Reader<'_>) -> Result<AutoscaleRequest, Fault> {
    Ok(AutoscaleRequest {
        role: read_string(r.get_role()).at("role")?,
        min_memory_bytes: r.get_min_memory_bytes(),
        max_memory_bytes: r.get_max_memory_bytes(),
        reset: r.get_reset(),
    })
}

fn put_autoscale_decision(v: &AutoscaleDecision, mut b: cp::autoscale_decision::Builder<'_>) {
    b.set_at_ms(v.at_ms);
    b.set_role(role_to(v.role));
    b.set_from_cpu_millis(v.from.cpu_millis);
    b.set_from_memory_bytes(v.from.memory_bytes);
    b.set_to_cpu_millis(v.to.cpu_millis);
    b.set_to_memory_bytes(v.to.memory_bytes);
    b.set_reason(v.reason.as_str());
    b.set_plugin(v.plugin.as_str());
    b.set_action(v.action.as_str());
}

fn get_autoscale_decision(r: cp::autoscale_decision::Reader<'_>) -> Result<AutoscaleDecision, Fault> {
    Ok(AutoscaleDecision {
        at_ms: r.get_at_ms(),
        role: role_from(r.get_role().at("role")?),
        from: NodeSize { cpu_millis: r.get_from_cpu_millis(), memory_bytes: r.get_from_memory_bytes() },
        to: NodeSize { cpu_millis: r.get_to_cpu_millis(), memory_bytes: r.get_to_memory_bytes() },
        reason: read_string(r.get_reason()).at("reason")?,
        plugin: read_string(r.get_plugin()).at("plugin")?,
        action: read_string(r.get_action()).at("action")?,
    })
}

fn put_role_autoscale(v: &RoleAutoscale, mut b: cp::role_autoscale::Builder<'_>) {
    b.set_role(role_to(v.role));
    b.set_enabled(v.enabled);
    b.set_min_memory_bytes(v.min_memory_bytes);
    b.set_max_memory_bytes(v.max_memory_bytes);
    b.set_cpu_millis(v.size.cpu_millis);
    b.set_memory_bytes(v.size.memory_bytes);
    b.set_samples(v.samples);
    b.set_peak_cpu_percent(v.peak_cpu_percent);
    b.set_peak_memory_bytes(v.peak_memory_bytes);
    b.set_ooms(v.ooms);
    b.set_held_until_ms(v.held_until_ms);
}

fn get_role_autoscale(r: cp::role_autoscale::Reader<'_>) -> Result<RoleAutoscale, Fault> {
    Ok(RoleAutoscale {
        role: role_from(r.get_role().at("role")?),
        enabled: r.get_enabled(),
        min_memory_bytes: r.get_min_memory_bytes(),
        max_memory_bytes: r.get_max_memory_bytes(),
        size: NodeSize { cpu_millis: r.get_cpu_millis(), memory_bytes: r.get_memory_bytes() },
        samples: r.get_samples(),
        peak_cpu_percent: r.get_peak_cpu_percent(),
        peak_memory_bytes: r.get_peak_memory_bytes(),
        ooms: r.get_ooms(),
        held_until_ms: r.get_held_until_ms(),
    })
}

fn put_autoscale_status(v: &AutoscaleStatus, mut b: cp::autoscale_status::Builder<'_>) {
    b.set_enabled(v.enabled);
    b.set_interval_ms(v.interval_ms);
    b.set_window_ms(v.window_ms);
    fill_structs(b.reborrow().init_roles(len32(v.roles.len())), &v.roles, put_role_autoscale);
    fill_structs(b.init_decisions(len32(v.decisions.len())), &v.decisions, put_autoscale_decision);
}

fn get_autoscale_status(r: cp::autoscale_status::Reader<'_>) -> Result<AutoscaleStatus, Fault> {
    Ok(AutoscaleStatus {
        enabled: r.get_enabled(),
        interval_ms: r.get_interval_ms(),
        window_ms: r.get_window_ms(),
        roles: read_structs(r.get_roles(), get_role_autoscale).at("roles")?,
        decisions: read_structs(r.get_decisions(), get_autoscale_decision).at("decisions")?,
    })
}

fn put_stop_node(v: &StopNode, mut b: cp::stop_node::Builder<'_>) {
    b.set_node_id(v.node_id.as_str());
}

fn get_stop_node(r: cp::stop_node::Reader<'_>) -> Result<StopNode, Fault> {
    Ok(StopNode { node_id: read_string(r.get_node_id()).at("nodeId")? })
}

fn put_plugin_upload(v: &PluginUpload, mut b: cp::plugin_upload::Builder<'_>) {
    b.set_kind(v.kind.as_str());
    b.set_name(v.name.as_str());
    b.set_wasm(&v.wasm);
}

fn get_plugin_upload(r: cp::plugin_upload::Reader<'_>) -> Result<PluginUpload, Fault> {
    Ok(PluginUpload {
        kind: read_string(r.get_kind()).at("kind")?,
        name: read_string(r.get_name()).at("name")?,
        wasm: r.get_wasm().map(|d| d.to_vec()).map_err(Fault::from).at("wasm")?,
    })
}

fn put_plugin_activate(v: &PluginActivate, mut b: cp::plugin_activate::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_version(v.version.as_str());
}

fn get_plugin_activate(r: cp::plugin_activate::Reader<'_>) -> Result<PluginActivate, Fault> {
    Ok(PluginActivate {
        name: read_string(r.get_name()).at("name")?,
        version: read_string(r.get_version()).at("version")?,
    })
}

fn put_plugin_rollback(v: &PluginRollback, mut b: cp::plugin_rollback::Builder<'_>) {
    b.set_kind(v.kind.as_str());
}

fn get_plugin_rollback(r: cp::plugin_rollback::Reader<'_>) -> Result<PluginRollback, Fault> {
    Ok(PluginRollback { kind: read_string(r.get_kind()).at("kind")? })
}

fn put_plugin_report(v: &PluginReport, mut b: cp::plugin_report::Builder<'_>) {
    b.set_json(v.json.as_str());
}

fn get_plugin_report(r: cp::plugin_report::Reader<'_>) -> Result<PluginReport, Fault> {
    Ok(PluginReport { json: read_string(r.get_json()).at("json")? })
}

fn put_alloc(v: &Alloc, mut b: cp::alloc::Builder<'_>) {
    b.set_count(v.count);
}

fn get_alloc(r: cp::alloc::Reader<'_>) -> Result<Alloc, Fault> {
    Ok(Alloc { count: r.get_count() })
}

fn put_stall(v: &Stall, mut b: cp::stall::Builder<'_>) {
    b.set_millis(v.millis);
}

fn get_stall(r: cp::stall::Reader<'_>) -> Result<Stall, Fault> {
    Ok(Stall { millis: r.get_millis() })
}

fn put_alloc_range(v: &AllocRange, mut b: cp::alloc_range::Builder<'_>) {
    b.set_start(v.start);
    b.set_count(v.count);
}

fn get_alloc_range(r: cp::alloc_range::Reader<'_>) -> Result<AllocRange, Fault> {
    Ok(AllocRange { start: r.get_start(), count: r.get_count() })
}

fn put_dml_entry(v: &DmlEntry, b: cp::dml_entry::Builder<'_>) {
    match v {
        DmlEntry::Insert { timestamp, rows, partition } => {
            let mut g = b.init_insert();
            g.set_timestamp(*timestamp);
            g.set_partition(*partition);
            put_row_batch(rows, g.init_rows());
        }
        DmlEntry::Delete { timestamp, pks } => {
            let mut g = b.init_delete();
            g.set_timestamp(*timestamp);
            fill_structs(g.init_pks(len32(pks.len())), pks, put_pk);
        }
    }
}

fn get_dml_entry(r: cp::dml_entry::Reader<'_>) -> Result<DmlEntry, Fault> {
    use cp::dml_entry::Which;
    Ok(match r.which()? {
        Which::Insert(g) => DmlEntry::Insert {
            timestamp: g.get_timestamp(),
            rows: get_row_batch(g.get_rows().at("insert.rows")?).at("insert.rows")?,
            partition: g.get_partition(),
        },
        Which::Delete(g) => {
            DmlEntry::Delete { timestamp: g.get_timestamp(), pks: read_structs(g.get_pks(), get_pk).at("delete.pks")? }
        }
    })
}

fn put_segment_flushed(v: &SegmentFlushed, b: cp::segment_flushed::Builder<'_>) {
    put_segment_info(&v.segment, b.init_segment());
}

fn get_segment_flushed(r: cp::segment_flushed::Reader<'_>) -> Result<SegmentFlushed, Fault> {
    Ok(SegmentFlushed { segment: get_segment_info(r.get_segment().at("segment")?).at("segment")? })
}

fn put_build_index(v: &BuildIndex, mut b: cp::build_index::Builder<'_>) {
    put_segment_info(&v.segment, b.reborrow().init_segment());
    put_index_params(&v.params, b.reborrow().init_params());
    b.set_dim(v.dim);
}

fn get_build_index(r: cp::build_index::Reader<'_>) -> Result<BuildIndex, Fault> {
    Ok(BuildIndex {
        segment: get_segment_info(r.get_segment().at("segment")?).at("segment")?,
        params: get_index_params(r.get_params().at("params")?).at("params")?,
        dim: r.get_dim(),
    })
}

fn put_index_built(v: &IndexBuilt, mut b: cp::index_built::Builder<'_>) {
    b.set_segment(v.segment);
    b.set_collection(v.collection);
    b.set_index_path(v.index_path.as_str());
    b.set_build_ms(v.build_ms);
}

fn get_index_built(r: cp::index_built::Reader<'_>) -> Result<IndexBuilt, Fault> {
    Ok(IndexBuilt {
        segment: r.get_segment(),
        collection: r.get_collection(),
        index_path: read_string(r.get_index_path()).at("indexPath")?,
        build_ms: r.get_build_ms(),
    })
}

fn put_compact_task(v: &CompactTask, mut b: cp::compact_task::Builder<'_>) {
    put_collection_info(&v.collection, b.reborrow().init_collection());
    b.set_shard(v.shard);
    b.set_plan(v.plan);
    fill_structs(b.reborrow().init_inputs(len32(v.inputs.len())), &v.inputs, put_segment_info);
    b.set_output(v.output);
    b.set_delete_from(v.delete_from);
    b.set_delete_to(v.delete_to);
    b.set_min_dropped(v.min_dropped);
}

fn get_compact_task(r: cp::compact_task::Reader<'_>) -> Result<CompactTask, Fault> {
    Ok(CompactTask {
        collection: get_collection_info(r.get_collection().at("collection")?).at("collection")?,
        shard: r.get_shard(),
        plan: r.get_plan(),
        inputs: read_structs(r.get_inputs(), get_segment_info).at("inputs")?,
        output: r.get_output(),
        delete_from: r.get_delete_from(),
        delete_to: r.get_delete_to(),
        min_dropped: r.get_min_dropped(),
    })
}

fn put_compact_outcome(v: &CompactOutcome, mut b: cp::compact_outcome::Builder<'_>) {
    b.set_plan(v.plan);
    match &v.output {
        None => b.reborrow().init_output().set_none(()),
        Some(seg) => put_segment_info(seg, b.reborrow().init_output().init_some()),
    }
    b.set_dropped_rows(v.dropped_rows);
    b.set_unchanged(v.unchanged);
}

fn get_compact_outcome(r: cp::compact_outcome::Reader<'_>) -> Result<CompactOutcome, Fault> {
    use cp::compact_outcome::output::Which;
    let output = match r.get_output().which().at("output")? {
        Which::None(()) => None,
        Which::Some(seg) => Some(get_segment_info(seg.at("output")?).at("output")?),
    };
    Ok(CompactOutcome { plan: r.get_plan(), output, dropped_rows: r.get_dropped_rows(), unchanged: r.get_unchanged() })
}

fn put_compaction_plan(v: &CompactionPlan, mut b: cp::compaction_plan::Builder<'_>) {
    b.set_id(v.id);
    b.set_shard(v.shard);
    fill_u64s(b.reborrow().init_sources(len32(v.sources.len())), &v.sources);
    b.set_target(v.target);
    b.set_kind(v.kind.as_str());
    b.set_state(v.state.as_str());
    b.set_error(v.error.as_str());
}

fn get_compaction_plan(r: cp::compaction_plan::Reader<'_>) -> Result<CompactionPlan, Fault> {
    Ok(CompactionPlan {
        id: r.get_id(),
        shard: r.get_shard(),
        sources: read_u64s(r.get_sources()).at("sources")?,
        target: r.get_target(),
        kind: read_string(r.get_kind()).at("kind")?,
        state: read_string(r.get_state()).at("state")?,
        error: read_string(r.get_error()).at("error")?,
    })
}

fn put_compaction_state(v: &CompactionState, mut b: cp::compaction_state::Builder<'_>) {
    b.set_id(v.id);
    b.set_collection(v.collection.as_str());
    b.set_state(v.state.as_str());
    fill_structs(b.init_plans(len32(v.plans.len())), &v.plans, put_compaction_plan);
}

fn get_compaction_state(r: cp::compaction_state::Reader<'_>) -> Result<CompactionState, Fault> {
    Ok(CompactionState {
        id: r.get_id(),
        collection: read_string(r.get_collection()).at("collection")?,
        state: read_string(r.get_state()).at("state")?,
        plans: read_structs(r.get_plans(), get_compaction_plan).at("plans")?,
    })
}

fn put_compact_request(v: &CompactRequest, mut b: cp::compact_request::Builder<'_>) {
    b.set_name(v.name.as_str());
    b.set_force(v.force);
    b.set_target_rows(v.target_rows);
}

fn get_compact_request(r: cp::compact_request::Reader<'_>) -> Result<CompactRequest, Fault> {
    Ok(CompactRequest {
        name: read_string(r.get_name()).at("name")?,
        force: r.get_force(),
        target_rows: r.get_target_rows(),
    })
}

fn put_compaction_job_id(v: &CompactionJobId, mut b: cp::compaction_job_id::Builder<'_>) {
    b.set_id(v.id);
}

fn get_compaction_job_id(r: cp::compaction_job_id::Reader<'_>) -> Result<CompactionJobId, Fault> {
    Ok(CompactionJobId { id: r.get_id() })
}

fn put_channel_assignment(v: &ChannelAssignment, mut b: cp::channel_assignment::Builder<'_>) {
    put_collection_info(&v.collection, b.reborrow().init_collection());
    b.set_shard(v.shard);
    b.set_checkpoint(v.checkpoint);
}

fn get_channel_assignment(r: cp::channel_assignment::Reader<'_>) -> Result<ChannelAssignment, Fault> {
    Ok(ChannelAssignment {
        collection: get_collection_info(r.get_collection().at("collection")?).at("collection")?,
        shard: r.get_shard(),
        checkpoint: r.get_checkpoint(),
    })
}

fn put_watch_channels(v: &WatchChannels, b: cp::watch_channels::Builder<'_>) {
    fill_structs(b.init_channels(len32(v.channels.len())), &v.channels, put_channel_assignment);
}

fn get_watch_channels(r: cp::watch_channels::Reader<'_>) -> Result<WatchChannels, Fault> {
    Ok(WatchChannels { channels: read_structs(r.get_channels(), get_channel_assignment).at("channels")? })
}

fn put_load_segments(v: &LoadSegments, mut b: cp::load_segments::Builder<'_>) {
    put_collection_info(&v.collection, b.reborrow().init_collection());
    fill_structs(b.reborrow().init_segments(len32(v.segments.len())), &v.segments, put_segment_info);
    fill_structs(b.reborrow().init_lead_shards(len32(v.lead_shards.len())), &v.lead_shards, put_shard_placement);
    fill_structs(b.reborrow().init_shard_views(len32(v.shard_views.len())), &v.shard_views, put_shard_view);
    fill_structs(b.init_delete_floors(len32(v.delete_floors.len())), &v.delete_floors, put_shard_seq);
}

fn put_shard_seq(v: &ShardSeq, mut b: cp::shard_seq::Builder<'_>) {
    b.set_shard(v.shard);
    b.set_seq(v.seq);
}

fn get_shard_seq(r: cp::shard_seq::Reader<'_>) -> Result<ShardSeq, Fault> {
    Ok(ShardSeq { shard: r.get_shard(), seq: r.get_seq() })
}

fn get_load_segments(r: cp::load_segments::Reader<'_>) -> Result<LoadSegments, Fault> {
    Ok(LoadSegments {
        collection: get_collection_info(r.get_collection().at("collection")?).at("collection")?,
        segments: read_structs(r.get_segments(), get_segment_info).at("segments")?,
        lead_shards: read_structs(r.get_lead_shards(), get_shard_placement).at("leadShards")?,
        shard_views: read_structs(r.get_shard_views(), get_shard_view).at("shardViews")?,
        delete_floors: read_structs(r.get_delete_floors(), get_shard_seq).at("deleteFloors")?,
    })
}

fn put_release_segments(v: &ReleaseSegments, mut b: cp::release_segments::Builder<'_>) {
    b.set_collection(v.collection);
    fill_u64s(b.reborrow().init_segments(len32(v.segments.len())), &v.segments);
    b.set_all(v.all);
}

fn get_release_segments(r: cp::release_segments::Reader<'_>) -> Result<ReleaseSegments, Fault> {
    Ok(ReleaseSegments {
        collection: r.get_collection(),
        segments: read_u64s(r.get_segments()).at("segments")?,
        all: r.get_all(),
    })
}

fn put_node_search(v: &NodeSearch, mut b: cp::node_search::Builder<'_>) {
    b.set_collection(v.collection);
    put_search(&v.search, b.reborrow().init_search());
    fill_u64s(b.reborrow().init_segments(len32(v.segments.len())), &v.segments);
    fill_structs(b.reborrow().init_growing(len32(v.growing.len())), &v.growing, put_shard_placement);
    b.set_guarantee_ts(v.guarantee_ts);
    b.set_filter(v.filter.as_str());
}

fn get_node_search(r: cp::node_search::Reader<'_>) -> Result<NodeSearch, Fault> {
    Ok(NodeSearch {
        collection: r.get_collection(),
        search: get_search(r.get_search().at("search")?).at("search")?,
        segments: read_u64s(r.get_segments()).at("segments")?,
        growing: read_structs(r.get_growing(), get_shard_placement).at("growing")?,
        guarantee_ts: r.get_guarantee_ts(),
        filter: read_string(r.get_filter()).at("filter")?,
    })
}

fn put_node_query(v: &NodeQuery, mut b: cp::node_query::Builder<'_>) {
    b.set_collection(v.collection);
    put_query(&v.query, b.reborrow().init_query());
    fill_u64s(b.reborrow().init_segments(len32(v.segments.len())), &v.segments);
    fill_structs(b.reborrow().init_growing(len32(v.growing.len())), &v.growing, put_shard_placement);
    b.set_guarantee_ts(v.guarantee_ts);
    b.set_filter(v.filter.as_str());
}

fn get_node_query(r: cp::node_query::Reader<'_>) -> Result<NodeQuery, Fault> {
    Ok(NodeQuery {
        collection: r.get_collection(),
        query: get_query(r.get_query().at("query")?).at("query")?,
        segments: read_u64s(r.get_segments()).at("segments")?,
        growing: read_structs(r.get_growing(), get_shard_placement).at("growing")?,
        guarantee_ts: r.get_guarantee_ts(),
        filter: read_string(r.get_filter()).at("filter")?,
    })
}

fn put_node_get(v: &NodeGet, mut b: cp::node_get::Builder<'_>) {
    b.set_collection(v.collection);
    put_get(&v.get, b.reborrow().init_get());
    fill_u64s(b.reborrow().init_segments(len32(v.segments.len())), &v.segments);
    fill_structs(b.reborrow().init_growing(len32(v.growing.len())), &v.growing, put_shard_placement);
    b.set_guarantee_ts(v.guarantee_ts);
    fill_u32s(b.init_partitions(len32(v.partitions.len())), &v.partitions);
}

fn get_node_get(r: cp::node_get::Reader<'_>) -> Result<NodeGet, Fault> {
    Ok(NodeGet {
        collection: r.get_collection(),
        get: get_get(r.get_get().at("get")?).at("get")?,
        segments: read_u64s(r.get_segments()).at("segments")?,
        growing: read_structs(r.get_growing(), get_shard_placement).at("growing")?,
        guarantee_ts: r.get_guarantee_ts(),
        partitions: read_u32s(r.get_partitions()).at("partitions")?,
    })
}

fn put_get_results(v: &GetResults, mut b: cp::get_results::Builder<'_>) {
    put_row_batch(&v.rows, b.reborrow().init_rows());
    fill_u64s(b.init_seqs(len32(v.seqs.len())), &v.seqs);
}

fn get_get_results(r: cp::get_results::Reader<'_>) -> Result<GetResults, Fault> {
    Ok(GetResults {
        rows: get_row_batch(r.get_rows().at("rows")?).at("rows")?,
        seqs: read_u64s(r.get_seqs()).at("seqs")?,
    })
}

// ---- size hints (words), so that big messages are encoded in one segment ----

/// Default first segment size for messages without a sizeable payload.
const SMALL_HINT: usize = 256;

fn text_words(s: &str) -> usize {
    // Pointer + NUL-terminated bytes rounded up to words.
    1 + (s.len() + 8) / 8
}

fn pks_words(pks: &[PrimaryKey]) -> usize {
    pks.iter()
        .map(|pk| match pk {
            PrimaryKey::Int64(_) => 3,
            PrimaryKey::VarChar(s) => 3 + text_words(s),
        })
        .sum::<usize>()
        + 1
}

fn columns_words(columns: &[Column]) -> usize {
    columns
        .iter()
        .map(|c| {
            text_words(&c.name)
                + 3
                + c.values
                    .iter()
                    .map(|v| match v {
                        ScalarValue::VarChar(s) | ScalarValue::Json(s) => 3 + text_words(s),
                        _ => 3,
                    })
                    .sum::<usize>()
        })
        .sum::<usize>()
        + 1
}

fn row_batch_words(rows: &RowBatch) -> usize {
    8 + pks_words(&rows.pks)
        + rows.vectors.len().div_ceil(2)
        + columns_words(&rows.columns)
        + rows.dynamic.iter().map(|s| text_words(s)).sum::<usize>()
}

fn strings_words(strings: &[String]) -> usize {
    1 + strings.iter().map(|s| text_words(s)).sum::<usize>()
}

fn search_words(search: &Search) -> usize {
    SMALL_HINT + search.vectors.len().div_ceil(2) + strings_words(&search.output_fields) + text_words(&search.filter)
}

fn get_words(get: &Get) -> usize {
    SMALL_HINT + pks_words(&get.pks) + strings_words(&get.output_fields)
}

// ---- Wire impls ----

/// Estimated encoded size in words, used to size the first segment.
trait SizeHint {
    fn hint_words(&self) -> usize {
        SMALL_HINT
    }
}

impl SizeHint for CreateCollection {}
impl SizeHint for CollectionName {}
impl SizeHint for CollectionDescription {}
impl SizeHint for CreateIndex {}
impl SizeHint for CreateScalarIndex {}
impl SizeHint for DropScalarIndex {}
impl SizeHint for PartitionRequest {}
impl SizeHint for SegmentFlushed {}
impl SizeHint for BuildIndex {}
impl SizeHint for IndexBuilt {}
impl SizeHint for NodeStatus {}

impl SizeHint for WatchChannels {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.channels.iter().map(|c| 16 + c.collection.schema.fields.len() * 16).sum::<usize>()
    }
}

impl SizeHint for Empty {
    fn hint_words(&self) -> usize {
        16
    }
}

impl SizeHint for Alloc {
    fn hint_words(&self) -> usize {
        16
    }
}

impl SizeHint for Stall {
    fn hint_words(&self) -> usize {
        16
    }
}

impl SizeHint for AllocRange {
    fn hint_words(&self) -> usize {
        16
    }
}

impl SizeHint for CollectionList {
    fn hint_words(&self) -> usize {
        SMALL_HINT + strings_words(&self.names)
    }
}

impl SizeHint for Insert {
    fn hint_words(&self) -> usize {
        SMALL_HINT + row_batch_words(&self.rows)
    }
}

impl SizeHint for Delete {
    fn hint_words(&self) -> usize {
        SMALL_HINT + pks_words(&self.pks)
    }
}

impl SizeHint for MutationResult {
    fn hint_words(&self) -> usize {
        SMALL_HINT + pks_words(&self.pks)
    }
}

impl SizeHint for Get {
    fn hint_words(&self) -> usize {
        get_words(self)
    }
}

impl SizeHint for Search {
    fn hint_words(&self) -> usize {
        search_words(self)
    }
}

impl SizeHint for SearchResults {
    fn hint_words(&self) -> usize {
        let hits = |h: &Hits| 4 + pks_words(&h.pks) + h.scores.len().div_ceil(2) + columns_words(&h.columns);
        SMALL_HINT + self.results.iter().map(hits).sum::<usize>()
    }
}

impl SizeHint for NodeSearchResults {
    fn hint_words(&self) -> usize {
        let hits = |h: &Hits| 4 + pks_words(&h.pks) + h.scores.len().div_ceil(2) + columns_words(&h.columns);
        let views: usize = self.shards.iter().map(|v| 4 + v.segments.len()).sum();
        SMALL_HINT + self.results.iter().map(hits).sum::<usize>() + views
    }
}

impl SizeHint for FlushResult {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.segments.len()
    }
}

impl SizeHint for ClusterStatus {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.nodes.len() * 48 + self.roles.len() * 16 + self.hosts.iter().map(host_words).sum::<usize>()
    }
}

fn host_words(h: &HostStatus) -> usize {
    32 + h.nodes.len() * 16
}

impl SizeHint for ScaleRequest {}
impl SizeHint for ScaleReply {}
impl SizeHint for StartNode {}
impl SizeHint for StopNode {}
impl SizeHint for AutoscaleRequest {}
impl SizeHint for IdlingStatus {}

impl SizeHint for AutoscaleStatus {
    fn hint_words(&self) -> usize {
        let decision = |d: &AutoscaleDecision| 16 + (d.reason.len() + d.plugin.len() + d.action.len()) / 8;
        SMALL_HINT + self.roles.len() * 16 + self.decisions.iter().map(decision).sum::<usize>()
    }
}

impl SizeHint for ScalingStatus {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.roles.len() * 16 + self.hosts.iter().map(host_words).sum::<usize>()
    }
}

impl SizeHint for ClusterEvents {
    fn hint_words(&self) -> usize {
        let handoff = |h: &SegmentChangeInfo| 24 + h.online_segment_ids.len() + h.offline_segment_ids.len();
        SMALL_HINT + self.handoffs.iter().map(handoff).sum::<usize>() + self.scaling.len() * 24
    }
}

impl SizeHint for SegmentChangeInfo {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.online_segment_ids.len() + self.offline_segment_ids.len()
    }
}

impl SizeHint for PluginUpload {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.wasm.len() / 8 + 1
    }
}

impl SizeHint for PluginActivate {
    fn hint_words(&self) -> usize {
        SMALL_HINT
    }
}

impl SizeHint for PluginRollback {
    fn hint_words(&self) -> usize {
        SMALL_HINT
    }
}

impl SizeHint for PluginReport {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.json.len() / 8 + 1
    }
}

impl SizeHint for DmlEntry {
    fn hint_words(&self) -> usize {
        SMALL_HINT
            + match self {
                DmlEntry::Insert { rows, .. } => row_batch_words(rows),
                DmlEntry::Delete { pks, .. } => pks_words(pks),
            }
    }
}

impl SizeHint for LoadSegments {
    fn hint_words(&self) -> usize {
        let views: usize = self.shard_views.iter().map(|v| 4 + v.segments.len()).sum();
        SMALL_HINT + self.segments.len() * 24 + self.lead_shards.len() * 8 + views + self.delete_floors.len() * 3
    }
}

impl SizeHint for CompactTask {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.inputs.len() * 24
    }
}

impl SizeHint for CompactOutcome {}

impl SizeHint for CompactionState {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.plans.iter().map(|p| 16 + p.sources.len()).sum::<usize>()
    }
}

impl SizeHint for CompactionJobId {}
impl SizeHint for CompactRequest {}

impl SizeHint for ReleaseSegments {
    fn hint_words(&self) -> usize {
        SMALL_HINT + self.segments.len()
    }
}

impl SizeHint for NodeSearch {
    fn hint_words(&self) -> usize {
        search_words(&self.search) + self.segments.len() + self.growing.len() * 8
    }
}

impl SizeHint for Query {
    fn hint_words(&self) -> usize {
        SMALL_HINT + text_words(&self.filter) + strings_words(&self.output_fields)
    }
}

impl SizeHint for QueryResults {
    fn hint_words(&self) -> usize {
        SMALL_HINT + row_batch_words(&self.rows)
    }
}

impl SizeHint for NodeQuery {
    fn hint_words(&self) -> usize {
        self.query.hint_words() + text_words(&self.filter) + self.segments.len() + self.growing.len() * 8
    }
}

impl SizeHint for NodeGet {
    fn hint_words(&self) -> usize {
        get_words(&self.get) + self.segments.len() + self.growing.len() * 8
    }
}

impl SizeHint for GetResults {
    fn hint_words(&self) -> usize {
        SMALL_HINT + row_batch_words(&self.rows) + self.seqs.len()
    }
}

impl SizeHint for Distribution {
    fn hint_words(&self) -> usize {
        let groups: usize = self.replicas.iter().map(|g| 2 + g.nodes.len() * 8).sum();
        SMALL_HINT + (self.segments.len() + self.unserved.len()) * 32 + self.shards.len() * 8 + groups
    }
}

/// `impl Wire for $ty` through the generated struct `cp::$module` and the `$put`/`$get`
/// conversion functions.
macro_rules! wire {
    ($($ty:ident => $module:ident, $put:ident, $get:ident;)*) => {$(
        impl Wire for $ty {
            fn to_bytes(&self) -> Vec<u8> {
                encode::<cp::$module::Owned>(self.hint_words(), |b| $put(self, b))
            }

            fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                decode::<cp::$module::Owned, _>(bytes, stringify!($ty), $get)
            }
        }
    )*};
}

wire! {
    CreateCollection => create_collection, put_create_collection, get_create_collection;
    CollectionName => collection_name, put_collection_name, get_collection_name;
    Empty => empty, put_empty, get_empty;
    CollectionList => collection_list, put_collection_list, get_collection_list;
    CollectionDescription => collection_description, put_collection_description, get_collection_description;
    CreateIndex => create_index, put_create_index, get_create_index;
    CreateScalarIndex => create_scalar_index, put_create_scalar_index, get_create_scalar_index;
    DropScalarIndex => drop_scalar_index, put_drop_scalar_index, get_drop_scalar_index;
    PartitionRequest => partition_request, put_partition_request, get_partition_request;
    Insert => insert, put_insert, get_insert;
    Delete => delete, put_delete, get_delete;
    MutationResult => mutation_result, put_mutation_result, get_mutation_result;
    Get => get, put_get, get_get;
    Search => search, put_search, get_search;
    Query => query, put_query, get_query;
    QueryResults => query_results, put_query_results, get_query_results;
    SearchResults => search_results, put_search_results, get_search_results;
    NodeSearchResults => node_search_results, put_node_search_results, get_node_search_results;
    FlushResult => flush_result, put_flush_result, get_flush_result;
    ClusterStatus => cluster_status, put_cluster_status, get_cluster_status;
    PluginUpload => plugin_upload, put_plugin_upload, get_plugin_upload;
    PluginActivate => plugin_activate, put_plugin_activate, get_plugin_activate;
    PluginRollback => plugin_rollback, put_plugin_rollback, get_plugin_rollback;
    PluginReport => plugin_report, put_plugin_report, get_plugin_report;
    Alloc => alloc, put_alloc, get_alloc;
    AllocRange => alloc_range, put_alloc_range, get_alloc_range;
    Stall => stall, put_stall, get_stall;
    DmlEntry => dml_entry, put_dml_entry, get_dml_entry;
    SegmentFlushed => segment_flushed, put_segment_flushed, get_segment_flushed;
    BuildIndex => build_index, put_build_index, get_build_index;
    IndexBuilt => index_built, put_index_built, get_index_built;
    LoadSegments => load_segments, put_load_segments, get_load_segments;
    ReleaseSegments => release_segments, put_release_segments, get_release_segments;
    NodeSearch => node_search, put_node_search, get_node_search;
    NodeGet => node_get, put_node_get, get_node_get;
    NodeQuery => node_query, put_node_query, get_node_query;
    GetResults => get_results, put_get_results, get_get_results;
    Distribution => distribution, put_distribution, get_distribution;
    LoadCollection => load_collection, put_load_collection, get_load_collection;
    NodeStatus => node_status, put_node_status, get_node_status;
    WatchChannels => watch_channels, put_watch_channels, get_watch_channels;
    ScaleRequest => scale_request, put_scale_request, get_scale_request;
    ScaleReply => scale_reply, put_scale_reply, get_scale_reply;
    ScalingStatus => scaling_status, put_scaling_status, get_scaling_status;
    ClusterEvents => cluster_events, put_cluster_events, get_cluster_events;
    SegmentChangeInfo => segment_change_info, put_segment_change_info, get_segment_change_info;
    StartNode => start_node, put_start_node, get_start_node;
    StopNode => stop_node, put_stop_node, get_stop_node;
    AutoscaleRequest => autoscale_request, put_autoscale_request, get_autoscale_request;
    AutoscaleStatus => autoscale_status, put_autoscale_status, get_autoscale_status;
    IdlingStatus => idling_status, put_idling_status, get_idling_status;
    CompactTask => compact_task, put_compact_task, get_compact_task;
    CompactOutcome => compact_outcome, put_compact_outcome, get_compact_outcome;
    CompactionState => compaction_state, put_compaction_state, get_compaction_state;
    CompactionJobId => compaction_job_id, put_compaction_job_id, get_compaction_job_id;
    CompactRequest => compact_request, put_compact_request, get_compact_request;
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::time::Instant;

    use super::*;

    fn field(name: &str, data_type: DataType) -> FieldSchema {
        FieldSchema {
            name: name.to_string(),
            data_type,
            is_primary: data_type == DataType::Int64,
            auto_id: data_type == DataType::Int64,
            dim: if data_type == DataType::FloatVector { 4 } else { 0 },
            max_length: if data_type == DataType::VarChar { 128 } else { 0 },
            description: format!("the {name} field"),
        }
    }

    fn schema() -> CollectionSchema {
        CollectionSchema {
            name: "docs".to_string(),
            description: "documents — with unicode ✓".to_string(),
            fields: vec![
                field("id", DataType::Int64),
                field("flag", DataType::Bool),
                field("f", DataType::Float),
                field("d", DataType::Double),
                field("title", DataType::VarChar),
                field("meta", DataType::Json),
                field("emb", DataType::FloatVector),
            ],
            enable_dynamic_field: true,
            num_shards: 3,
            consistency: Consistency::Eventually,
        }
    }

    fn index_params(index_type: IndexType, metric: MetricType) -> IndexParams {
        IndexParams {
            index_type,
            metric,
            nlist: 128,
            m: 16,
            nbits: 8,
            ef_construction: 200,
            auto: false,
            name: "idx".into(),
        }
    }

    fn info(index: Option<IndexParams>) -> CollectionInfo {
        let scalar_indexes = vec![
            ScalarIndex {
                name: "id_sort".into(),
                field: "id".into(),
                index_type: ScalarIndexType::StlSort,
                params: vec![],
            },
            ScalarIndex {
                name: "meta_idx".into(),
                field: "meta".into(),
                index_type: ScalarIndexType::Inverted,
                params: vec![("json_cast_type".into(), "DOUBLE".into()), ("json_path".into(), "meta[\"a\"]".into())],
            },
        ];
        let partitions = vec![
            PartitionInfo { id: 0, name: "_default".into(), created_ts: 1, state: PartitionState::Loaded },
            PartitionInfo { id: 1, name: "p1".into(), created_ts: 2, state: PartitionState::Released },
            PartitionInfo { id: 2, name: "p2".into(), created_ts: 3, state: PartitionState::Dropped },
        ];
        CollectionInfo {
            id: 42,
            schema: schema(),
            index,
            created_ts: ts_compose(1_700_000_000_000, 7),
            scalar_indexes,
            partitions,
        }
    }

    fn segment(id: SegmentId, index_path: Option<String>, state: SegmentState) -> SegmentInfo {
        SegmentInfo {
            partitions: vec![0, 3, 9],
            id,
            collection: 42,
            shard: 2,
            rows: 10_000,
            start_seq: 5,
            end_seq: 10_004,
            data_path: format!("segments/42/{id}.data"),
            index_path,
            state,
            mem_size: u64::MAX - 1,
            delete_seq: u64::MAX,
            compacted_from: vec![1, u64::MAX],
        }
    }

    fn all_scalars() -> Vec<ScalarValue> {
        vec![
            ScalarValue::Null,
            ScalarValue::Bool(true),
            ScalarValue::Bool(false),
            ScalarValue::Int64(i64::MIN),
            ScalarValue::Float(-1.5),
            ScalarValue::Double(std::f64::consts::PI),
            ScalarValue::VarChar("héllo".to_string()),
            ScalarValue::VarChar(String::new()),
            ScalarValue::Json(r#"{"a":[1,2]}"#.to_string()),
        ]
    }

    fn pks() -> Vec<PrimaryKey> {
        vec![
            PrimaryKey::Int64(-7),
            PrimaryKey::VarChar("key-1".to_string()),
            PrimaryKey::Int64(i64::MAX),
            PrimaryKey::VarChar(String::new()),
        ]
    }

    fn rows() -> RowBatch {
        let n = all_scalars().len();
        RowBatch {
            pks: (0..n as i64).map(PrimaryKey::Int64).collect(),
            dim: 4,
            vectors: (0..n * 4).map(|i| i as f32 * 0.25 - 3.0).collect(),
            columns: vec![
                Column { name: "mixed".to_string(), values: all_scalars() },
                Column { name: "empty".to_string(), values: vec![] },
            ],
            dynamic: (0..n).map(|i| format!(r#"{{"extra":{i}}}"#)).collect(),
        }
    }

    fn get() -> Get {
        Get {
            collection: "docs".to_string(),
            pks: pks(),
            output_fields: vec!["title".to_string(), "meta".to_string()],
            consistency: Consistency::Strong,
        }
    }

    fn search(consistency: Consistency) -> Search {
        Search {
            partitions: vec!["p1".into()],
            collection: "docs".to_string(),
            dim: 4,
            vectors: vec![0.5, -0.5, 1e-30, f32::MAX, 1.0, 2.0, 3.0, f32::MIN_POSITIVE],
            top_k: 10,
            params: SearchParams { nprobe: 16, ef: 64 },
            output_fields: vec!["title".to_string()],
            consistency,
            filter: "title like \"a%\" and $meta[\"k\"] > 1".to_string(),
        }
    }

    fn placement(shard: ShardId) -> ShardPlacement {
        ShardPlacement { shard, leader: format!("qn-{shard}"), sealed_seq: 99 + u64::from(shard), replica: shard % 2 }
    }

    fn node(role: Role, healthy: bool) -> NodeStatus {
        NodeStatus {
            node_id: format!("{}-1", role.as_str()),
            role,
            host: "10.0.0.1".to_string(),
            pid: 4242,
            healthy,
            mem_used: 1 << 30,
            mem_capacity: 8 << 30,
            segments: 12,
            restarts: 1,
            started_ms: 1_700_000_000_000,
            heartbeat_ms: 1_700_000_001_000,
            detail: if healthy { String::new() } else { "lagging".to_string() },
            state: if healthy { NodeState::Serving } else { NodeState::Draining },
            cpu_cores: 2.0,
            cpu_busy: 0.25,
            host_agent: if healthy { "h1".to_string() } else { String::new() },
            faiss_simd: if healthy { "avx2".to_string() } else { String::new() },
            memory_refusals: if healthy { 0 } else { 3 },
            last_request_ms: if healthy { 1_700_000_000_500 } else { 0 },
        }
    }

    fn host() -> HostStatus {
        HostStatus {
            host_id: "h1".into(),
            hostname: "box".into(),
            pid: 7,
            cpus: 16,
            mem_total: 64 << 30,
            mem_available: 40 << 30,
            max_nodes: 8,
            nodes: vec![
                HostedNode {
                    node_id: "querynode-3".into(),
                    roles: vec![Role::QueryNode],
                    pid: 99,
                    restarts: 1,
                    managed: true,
                    stopping: false,
                    last_exit: "killed by SIGKILL".into(),
                    size: NodeSize { cpu_millis: 2_500, memory_bytes: 10 << 30 },
                    oom_kills: 2,
                },
                HostedNode { node_id: "dn".into(), roles: vec![Role::DataNode, Role::IndexNode], ..Default::default() },
            ],
            started_ms: 5,
            heartbeat_ms: 6,
            enforcement: "cgroup-v2".into(),
        }
    }

    fn role_scaling() -> RoleScaling {
        RoleScaling {
            role: Role::QueryNode,
            desired: 3,
            serving: 2,
            starting: 1,
            draining: 0,
            converged: false,
            activity: "starting querynode-3 on h1".into(),
            size: NodeSize { cpu_millis: 1_000, memory_bytes: 4 << 30 },
            resizing: 1,
        }
    }

    #[test]
    fn node_sizes_read_for_people() {
        let size = |cpu_millis, memory_bytes| NodeSize { cpu_millis, memory_bytes }.to_string();
        assert_eq!(size(0, 0), "unsized");
        assert_eq!(size(2_000, 8 << 30), "2 CPU / 8 GiB");
        assert_eq!(size(500, 512 << 20), "0.5 CPU / 512 MiB");
        assert_eq!(size(1_500, 3 << 29), "1.5 CPU / 1.5 GiB");
        assert_eq!(size(2_345, 2_400 << 20), "2.345 CPU / 2400 MiB");
        assert_eq!(size(16_000, 64 << 30), "16 CPU / 64 GiB");
    }

    /// Round-trips `value`, checks single-segment framing, and decodes from an unaligned copy.
    fn rt<T: Wire + PartialEq + Debug>(value: &T) -> Vec<u8> {
        let bytes = value.to_bytes();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0], "expected a single segment");
        let back = T::from_bytes(&bytes).unwrap();
        assert_eq!(&back, value);
        let mut unaligned = vec![0u8; bytes.len() + 1];
        unaligned[1..].copy_from_slice(&bytes);
        assert_eq!(&T::from_bytes(&unaligned[1..]).unwrap(), value);
        bytes
    }

    /// Every bus message type, with varied values; returns their encodings.
    #[allow(clippy::vec_init_then_push)]
    fn all_encodings() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        out.push(rt(&CreateCollection { schema: schema() }));
        out.push(rt(&CreateCollection {
            schema: CollectionSchema {
                name: String::new(),
                description: String::new(),
                fields: vec![],
                enable_dynamic_field: false,
                num_shards: 0,
                consistency: Consistency::Strong,
            },
        }));
        out.push(rt(&CollectionName { name: "docs".to_string() }));
        out.push(rt(&CompactRequest { name: "docs".to_string(), force: true, target_rows: 123 }));
        out.push(rt(&Empty {}));
        out.push(rt(&CollectionList { names: vec!["a".to_string(), String::new(), "c".to_string()] }));
        out.push(rt(&CollectionList { names: vec![] }));
        out.push(rt(&CollectionDescription {
            info: info(Some(index_params(IndexType::Hnsw, MetricType::Cosine))),
            num_rows: 1_000_000,
            sealed_segments: 9,
        }));
        out.push(rt(&CollectionDescription { info: info(None), num_rows: 0, sealed_segments: 0 }));
        for (t, m) in [
            (IndexType::Flat, MetricType::L2),
            (IndexType::IvfFlat, MetricType::Ip),
            (IndexType::IvfSq8, MetricType::Cosine),
            (IndexType::IvfPq, MetricType::L2),
            (IndexType::Hnsw, MetricType::Ip),
        ] {
            out.push(rt(&CreateIndex { collection: "docs".to_string(), params: index_params(t, m) }));
        }
        for t in [
            ScalarIndexType::StlSort,
            ScalarIndexType::Inverted,
            ScalarIndexType::Bitmap,
            ScalarIndexType::Trie,
            ScalarIndexType::Auto,
        ] {
            let index = ScalarIndex { name: "i".into(), field: "f".into(), index_type: t, params: vec![] };
            out.push(rt(&CreateScalarIndex { collection: "docs".to_string(), index }));
        }
        out.push(rt(&DropScalarIndex { collection: "docs".to_string(), name: "i".into() }));
        out.push(rt(&PartitionRequest {
            collection: "docs".to_string(),
            names: vec!["a".into(), "b".into()],
            replicas: 2,
        }));
        out.push(rt(&Insert { collection: "docs".to_string(), rows: rows(), partition: "a".into() }));
        out.push(rt(&Insert { collection: "docs".to_string(), rows: RowBatch::default(), partition: String::new() }));
        out.push(rt(&Delete {
            collection: "docs".to_string(),
            pks: pks(),
            filter: String::new(),
            partition: "p".into(),
        }));
        out.push(rt(&Delete {
            partition: Default::default(),
            collection: "docs".to_string(),
            pks: vec![],
            filter: "f > 0.5".to_string(),
        }));
        let query = Query {
            partitions: vec!["a".into(), "_default".into()],
            collection: "docs".to_string(),
            filter: "id in [1, 2]".to_string(),
            output_fields: vec!["*".to_string()],
            limit: 10,
            offset: 5,
            consistency: Consistency::Eventually,
        };
        out.push(rt(&query));
        out.push(rt(&QueryResults { rows: rows() }));
        out.push(rt(&NodeQuery {
            collection: 42,
            query,
            segments: vec![7],
            growing: vec![placement(0)],
            guarantee_ts: 9,
            filter: "{\"in\":[]}".to_string(),
        }));
        out.push(rt(&MutationResult { pks: pks(), timestamp: 123 << TS_LOGICAL_BITS, count: 4 }));
        out.push(rt(&get()));
        for c in [Consistency::Strong, Consistency::Bounded, Consistency::Eventually] {
            out.push(rt(&search(c)));
            out.push(rt(&Get { consistency: c, ..get() }));
        }
        out.push(rt(&SearchResults {
            results: vec![
                Hits {
                    pks: pks(),
                    scores: vec![0.1, 0.2, 0.3, 0.4],
                    columns: vec![Column { name: "title".to_string(), values: all_scalars()[..4].to_vec() }],
                },
                Hits::default(),
            ],
        }));
        out.push(rt(&SearchResults::default()));
        out.push(rt(&NodeSearchResults {
            results: vec![Hits { pks: pks(), scores: vec![0.1, 0.2, 0.3, 0.4], columns: vec![] }],
            shards: vec![ShardView { shard: 3, version: u64::MAX, segments: vec![7, 8, 9] }],
            in_flight: 12,
            rows_searched: 1 << 40,
        }));
        out.push(rt(&NodeSearchResults::default()));
        out.push(rt(&FlushResult { segments: vec![1, 2, u64::MAX] }));
        out.push(rt(&FlushResult { segments: vec![] }));
        out.push(rt(&ClusterStatus {
            cluster: "prod".to_string(),
            nodes: Role::ALL.iter().enumerate().map(|(i, r)| node(*r, i % 2 == 0)).collect(),
            roles: vec![role_scaling()],
            hosts: vec![host()],
            notes: vec!["scaler unavailable".into()],
        }));
        let size = NodeSize { cpu_millis: 2_000, memory_bytes: 8 << 30 };
        out.push(rt(&ScaleRequest { role: "querynode".into(), replicas: 3, size }));
        out.push(rt(&ScaleReply {
            role: Role::Proxy,
            replicas: 1,
            previous: 2,
            warning: "one node".into(),
            size,
            previous_size: NodeSize::UNSIZED,
        }));
        out.push(rt(&AutoscaleRequest {
            role: "querynode".into(),
            min_memory_bytes: 4 << 30,
            max_memory_bytes: 64 << 30,
            reset: false,
        }));
        let decision = AutoscaleDecision {
            at_ms: 12,
            role: Role::QueryNode,
            from: NodeSize::UNSIZED,
            to: size,
            reason: "cpu peak 80.0% > 75%: double".into(),
            plugin: "threshold@builtin".into(),
            action: "resize".into(),
        };
        out.push(rt(&AutoscaleStatus {
            enabled: true,
            interval_ms: 60_000,
            window_ms: 108_000_000,
            roles: vec![RoleAutoscale {
                role: Role::QueryNode,
                enabled: true,
                min_memory_bytes: 4 << 30,
                max_memory_bytes: 64 << 30,
                size,
                samples: 1_800,
                peak_cpu_percent: 80.5,
                peak_memory_bytes: 3 << 30,
                ooms: 1,
                held_until_ms: 99,
            }],
            decisions: vec![decision.clone(), decision],
        }));
        out.push(rt(&IdlingStatus {
            enabled: true,
            state: "idle".into(),
            since_ms: 5,
            last_request_ms: 4,
            after_ms: 900_000,
            timeout_ms: 1_800_000,
            last_startup_ms: 1_234_000,
            blocked: String::new(),
            stopped: 3,
        }));
        out.push(rt(&ScalingStatus { roles: vec![role_scaling()], hosts: vec![host(), HostStatus::default()] }));
        let change = SegmentChangeInfo {
            collection: 9,
            online_node_id: "q2".into(),
            online_segment_ids: vec![1, 2],
            offline_node_id: "q1".into(),
            offline_segment_ids: vec![1, 2],
            reason: "balance".into(),
            at_ms: 10,
            released_ms: 11,
        };
        out.push(rt(&change));
        out.push(rt(&ClusterEvents {
            handoffs: vec![change],
            scaling: vec![ScalingEvent {
                at_ms: 1,
                role: Role::DataNode,
                node_id: "datanode-4".into(),
                action: "drain".into(),
                detail: "fewest shards (1)".into(),
            }],
        }));
        out.push(rt(&StartNode { node_id: "querynode-5".into(), role: Role::QueryNode, size }));
        out.push(rt(&StopNode { node_id: "querynode-5".into() }));
        out.push(rt(&Alloc { count: 1000 }));
        out.push(rt(&AllocRange { start: u64::MAX - 5, count: 5 }));
        out.push(rt(&DmlEntry::Insert { partition: Default::default(), timestamp: 77, rows: rows() }));
        out.push(rt(&DmlEntry::Insert { partition: Default::default(), timestamp: 0, rows: RowBatch::default() }));
        out.push(rt(&DmlEntry::Delete { timestamp: 78, pks: pks() }));
        out.push(rt(&DmlEntry::Delete { timestamp: 79, pks: vec![] }));
        out.push(rt(&SegmentFlushed { segment: segment(1, None, SegmentState::Flushed) }));
        out.push(rt(&BuildIndex {
            segment: segment(2, Some("idx/2".to_string()), SegmentState::Indexed),
            params: index_params(IndexType::IvfPq, MetricType::L2),
            dim: 384,
        }));
        out.push(rt(&IndexBuilt { segment: 2, collection: 42, index_path: "idx/2".to_string(), build_ms: 1234 }));
        out.push(rt(&LoadSegments {
            collection: info(Some(index_params(IndexType::IvfFlat, MetricType::Ip))),
            segments: vec![
                segment(1, None, SegmentState::Flushed),
                segment(2, Some(String::new()), SegmentState::Dropped),
            ],
            lead_shards: vec![placement(0), placement(1)],
            shard_views: vec![ShardView { shard: 0, version: 9, segments: vec![1, 2] }, ShardView::default()],
            delete_floors: vec![ShardSeq { shard: 0, seq: 7 }, ShardSeq { shard: u32::MAX, seq: u64::MAX }],
        }));
        out.push(rt(&LoadSegments {
            collection: info(None),
            segments: vec![],
            lead_shards: vec![],
            shard_views: vec![],
            delete_floors: vec![],
        }));
        out.push(rt(&ReleaseSegments { collection: 42, segments: vec![1, 2], all: false }));
        out.push(rt(&ReleaseSegments { collection: 42, segments: vec![], all: true }));
        out.push(rt(&NodeSearch {
            collection: 42,
            search: search(Consistency::Bounded),
            segments: vec![3, 4],
            growing: vec![placement(0)],
            guarantee_ts: 555,
            filter: String::new(),
        }));
        out.push(rt(&NodeGet {
            collection: 42,
            get: get(),
            segments: vec![],
            growing: vec![placement(1), placement(2)],
            guarantee_ts: 0,
            partitions: vec![0, 3],
        }));
        out.push(rt(&GetResults { rows: rows(), seqs: vec![1, 2, u64::MAX] }));
        out.push(rt(&GetResults { rows: RowBatch::default(), seqs: Vec::new() }));
        out.push(rt(&Distribution {
            collection: info(Some(index_params(IndexType::Flat, MetricType::L2))),
            shards: vec![placement(0), placement(1)],
            segments: vec![SegmentPlacement {
                segment: segment(5, Some("idx/5".to_string()), SegmentState::Indexed),
                nodes: vec!["qn-0".to_string(), "qn-1".to_string()],
            }],
            version: 17,
            released: true,
            replicas: vec![
                ReplicaGroup { id: 0, nodes: vec!["qn-0".to_string()] },
                ReplicaGroup { id: 1, nodes: vec!["qn-1".to_string(), "qn-2".to_string()] },
            ],
            unserved: vec![segment(6, None, SegmentState::Flushed)],
        }));
        for (i, r) in Role::ALL.into_iter().enumerate() {
            out.push(rt(&node(r, i % 2 == 1)));
        }
        out
    }

    #[test]
    fn round_trips_every_message_type() {
        assert!(all_encodings().len() > 40);
    }

    /// Decodes `bytes` as every message type, returning how many succeeded. Must not panic.
    fn decode_as_all(bytes: &[u8]) -> Vec<Result<(), DecodeError>> {
        fn one<T: Wire>(bytes: &[u8]) -> Result<(), DecodeError> {
            T::from_bytes(bytes).map(|_| ())
        }
        vec![
            one::<CreateCollection>(bytes),
            one::<CollectionName>(bytes),
            one::<CompactRequest>(bytes),
            one::<Empty>(bytes),
            one::<CollectionList>(bytes),
            one::<CollectionDescription>(bytes),
            one::<CreateIndex>(bytes),
            one::<CreateScalarIndex>(bytes),
            one::<DropScalarIndex>(bytes),
            one::<PartitionRequest>(bytes),
            one::<Insert>(bytes),
            one::<Delete>(bytes),
            one::<MutationResult>(bytes),
            one::<Get>(bytes),
            one::<Search>(bytes),
            one::<Query>(bytes),
            one::<QueryResults>(bytes),
            one::<NodeQuery>(bytes),
            one::<SearchResults>(bytes),
            one::<NodeSearchResults>(bytes),
            one::<FlushResult>(bytes),
            one::<ClusterStatus>(bytes),
            one::<Alloc>(bytes),
            one::<AllocRange>(bytes),
            one::<DmlEntry>(bytes),
            one::<SegmentFlushed>(bytes),
            one::<BuildIndex>(bytes),
            one::<IndexBuilt>(bytes),
            one::<LoadSegments>(bytes),
            one::<ReleaseSegments>(bytes),
            one::<NodeSearch>(bytes),
            one::<NodeGet>(bytes),
            one::<GetResults>(bytes),
            one::<Distribution>(bytes),
            one::<NodeStatus>(bytes),
        ]
    }

    #[test]
    fn empty_garbage_and_truncated_input_is_an_error() {
        let garbage: [&[u8]; 5] = [b"", b"\x00", b"garbage!", b"garbage!garbage!garbage!", &[0xff; 64]];
        for bytes in garbage {
            for result in decode_as_all(bytes) {
                assert!(result.is_err(), "{bytes:?} decoded");
            }
        }

        let err = Insert::from_bytes(b"").unwrap_err();
        let DecodeError::Malformed { message_type, reason } = &err;
        assert_eq!(*message_type, "Insert");
        assert!(reason.contains("empty"), "{reason}");
        assert!(err.to_string().contains("Insert"), "{err}");

        let bytes = Insert { partition: Default::default(), collection: "docs".to_string(), rows: rows() }.to_bytes();
        for len in 0..bytes.len() {
            let err = Insert::from_bytes(&bytes[..len]).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        let err = Insert::from_bytes(&longer).unwrap_err().to_string();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn bad_enum_and_utf8_name_the_field() {
        // Get's data section holds only `consistency` (UInt16 at offset 0, stored XOR the
        // default): segment table (8 bytes), root pointer (8 bytes), then the data section.
        let mut bytes = get().to_bytes();
        bytes[16] = 0xc8;
        bytes[17] = 0x00;
        let err = Get::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("consistency"), "{err}");

        let mut bytes = CollectionName { name: "abc".to_string() }.to_bytes();
        let at = bytes.windows(3).position(|w| w == b"abc").unwrap();
        bytes[at] = 0xff;
        let err = CollectionName::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("name") && err.contains("UTF-8"), "{err}");

        let mut bytes = Insert {
            partition: Default::default(),
            collection: "c".to_string(),
            rows: RowBatch { columns: vec![Column { name: "n".into(), values: all_scalars() }], ..RowBatch::default() },
        }
        .to_bytes();
        let needle = "héllo".as_bytes();
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        bytes[at + 1] = 0xff;
        let err = Insert::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("rows.columns[0].values[6].varChar"), "{err}");
    }

    #[test]
    fn corrupted_input_never_panics() {
        let encodings = all_encodings();
        for bytes in &encodings {
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut corrupt = bytes.clone();
                    corrupt[i] ^= flip;
                    let _ = decode_as_all(&corrupt);
                }
            }
        }
        // Random bodies behind a plausible single-segment header exercise pointer decoding.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let words = (next() % 32) as usize;
            let mut bytes = vec![0u8; 8 + words * 8];
            bytes[4..8].copy_from_slice(&(words as u32).to_le_bytes());
            for chunk in bytes[8..].chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            let _ = decode_as_all(&bytes);
        }
    }

    #[test]
    fn underestimated_size_is_still_one_segment() {
        let long = "n".repeat(200);
        let distribution = Distribution {
            collection: info(None),
            shards: vec![],
            segments: (0..50)
                .map(|i| SegmentPlacement {
                    segment: segment(i, Some(long.clone()), SegmentState::Indexed),
                    nodes: vec![long.clone(); 20],
                })
                .collect(),
            version: 1,
            released: false,
            replicas: vec![],
            unserved: Vec::new(),
        };
        rt(&distribution);
    }

    /// Every list-heavy message, scaled up so the size-based traversal limit has no slack to
    /// hide in: each must still decode (a decoder that read a list twice would be caught).
    #[test]
    fn large_messages_decode_within_the_size_based_traversal_limit() {
        let many = |n: usize| {
            let one = rows();
            let per = one.pks.len();
            let mut all = RowBatch { dim: one.dim, ..RowBatch::default() };
            for r in 0..n {
                all.pks.extend((0..per).map(|i| PrimaryKey::Int64((r * per + i) as i64)));
                all.vectors.extend_from_slice(&one.vectors);
                all.dynamic.extend(one.dynamic.iter().cloned());
            }
            all.columns = one
                .columns
                .iter()
                .map(|c| Column { name: c.name.clone(), values: (0..n).flat_map(|_| c.values.clone()).collect() })
                .collect();
            all
        };
        let rows = many(2000);
        let insert = rt(&Insert { partition: Default::default(), collection: "docs".to_string(), rows: rows.clone() });
        assert!(insert.len() > 1 << 20, "{} bytes", insert.len());
        rt(&QueryResults { rows: rows.clone() });
        rt(&MutationResult { pks: rows.pks.clone(), timestamp: 1, count: rows.pks.len() as u64 });
        rt(&Delete {
            partition: Default::default(),
            collection: "docs".to_string(),
            pks: rows.pks.clone(),
            filter: String::new(),
        });
        let hits = Hits {
            pks: rows.pks.clone(),
            scores: (0..rows.pks.len()).map(|i| i as f32).collect(),
            columns: rows.columns.clone(),
        };
        rt(&SearchResults { results: vec![hits; 8] });
    }

    /// A ~40-byte `Delete` whose key list claims 10⁸ zero-sized elements: Cap'n Proto charges
    /// each against the traversal limit, which is sized from the input, so decoding fails at
    /// once instead of building 10⁸ keys.
    #[test]
    fn a_tiny_message_claiming_a_huge_list_is_refused() {
        let words: [u64; 5] = [
            3 << 48,              // root: struct, no data, 3 pointers, right after
            0,                    // collection: null
            (7 << 32) | (1 << 2), // pks: inline-composite list, 0 words, tag 1 word ahead
            0,                    // filter: null
            100_000_000 << 2,     // tag: 10⁸ elements of 0 data words and 0 pointers
        ];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let start = Instant::now();
        let err = Delete::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("pks"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn an_older_clients_collection_name_reads_as_a_plain_compact() {
        let bytes = CollectionName { name: "docs".to_string() }.to_bytes();
        let req = CompactRequest::from_bytes(&bytes).unwrap();
        assert_eq!(req, CompactRequest { name: "docs".to_string(), force: false, target_rows: 0 });
    }

    #[test]
    fn big_insert_timing() {
        let (n, dim) = (1000usize, 384usize);
        let insert = Insert {
            partition: Default::default(),
            collection: "docs".to_string(),
            rows: RowBatch {
                pks: (0..n as i64).map(PrimaryKey::Int64).collect(),
                dim: dim as u32,
                vectors: (0..n * dim).map(|i| (i % 1000) as f32 / 1000.0).collect(),
                columns: vec![Column {
                    name: "title".to_string(),
                    values: (0..n).map(|i| ScalarValue::VarChar(format!("doc {i}"))).collect(),
                }],
                dynamic: vec![],
            },
        };
        let bytes = rt(&insert);
        let iterations = 20;
        let start = Instant::now();
        for _ in 0..iterations {
            let bytes = insert.to_bytes();
            std::hint::black_box(&bytes);
        }
        let encode = start.elapsed() / iterations;
        let start = Instant::now();
        for _ in 0..iterations {
            let back = Insert::from_bytes(&bytes).unwrap();
            std::hint::black_box(&back);
        }
        let decode = start.elapsed() / iterations;
        println!("insert {n}x{dim}: {} bytes, encode {encode:?}, decode {decode:?}", bytes.len());
    }
}
