//! MessagePack with named fields: the encoding of every value on NATS.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encoding or decoding a wire value failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("cannot decode {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
}

/// Encodes a value as MessagePack with named fields (the `to_vec_named` layout), in the
/// human-readable form: UUIDs as strings, not 16 raw bytes, so that any language reads them.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    let mut serializer = rmp_serde::Serializer::new(&mut bytes)
        .with_struct_map()
        .with_human_readable();
    value
        .serialize(&mut serializer)
        .map_err(|source| CodecError::Encode {
            what: std::any::type_name::<T>(),
            source,
        })?;
    Ok(bytes)
}

/// Decodes a MessagePack value written by [`encode`] (or by any named-map writer).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    T::deserialize(&mut deserializer).map_err(|source| CodecError::Decode {
        what: std::any::type_name::<T>(),
        source,
    })
}
