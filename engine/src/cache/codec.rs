//! How cache values become bytes: the [`Codec`] trait and the default,
//! [`Postcard`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns values into bytes and back. A cache is generic over its codec;
/// [`Postcard`] is the default.
///
/// `decode` failing is not an error for the cache: a value that no longer
/// decodes (its type changed since it was stored) is a miss, and the next
/// creation overwrites it.
///
/// ```
/// use carboy::cache::Codec;
///
/// /// JSON-free example: a codec that stores postcard with a schema tag,
/// /// so that values of an older schema read as misses.
/// #[derive(Clone, Copy, Debug, Default)]
/// struct Tagged;
/// impl Codec for Tagged {
///     fn encode<T: serde::Serialize + ?Sized>(&self, v: &T, out: &mut Vec<u8>) -> Result<(), String> {
///         out.push(2); // schema 2
///         carboy::cache::Postcard.encode(v, out)
///     }
///     fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
///         match bytes.split_first() {
///             Some((2, rest)) => carboy::cache::Postcard.decode(rest),
///             _ => Err("another schema".into()),
///         }
///     }
/// }
/// let mut out = Vec::new();
/// Tagged.encode(&5u32, &mut out).unwrap();
/// assert_eq!(Tagged.decode::<u32>(&out), Ok(5));
/// ```
pub trait Codec: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String>;
    /// Decodes a value from all of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// The default codec: [postcard](https://docs.rs/postcard), compact, with
/// a stable and documented wire format. Not self-describing: a stored
/// value decodes only as the type it was stored as (or one with the same
/// serde layout).
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        let taken = std::mem::take(out);
        match postcard::to_extend(value, taken) {
            Ok(v) => {
                *out = v;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(format!("{} bytes left over after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}
