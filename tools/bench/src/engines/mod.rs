//! One implementation of [`crate::engine::Engine`] per engine.

pub mod carboy;
pub mod fjall;
pub mod hashmap;
pub mod lmdb;
pub mod redb;
pub mod sled;
pub mod sqlite;

/// Every engine, in table order.
pub const ALL: &[&str] = &[
    "carboy", "lmdb", "redb", "sqlite", "sled", "fjall", "hashmap",
];

/// Runs `$body` with `$E` bound to the engine type named `$name`.
#[macro_export]
macro_rules! with_engine {
    ($name:expr, $E:ident => $body:expr) => {
        match $name {
            "carboy" => {
                type $E = $crate::engines::carboy::Carboy;
                $body
            }
            "lmdb" => {
                type $E = $crate::engines::lmdb::Lmdb;
                $body
            }
            "redb" => {
                type $E = $crate::engines::redb::Redb;
                $body
            }
            "sqlite" => {
                type $E = $crate::engines::sqlite::Sqlite;
                $body
            }
            "sled" => {
                type $E = $crate::engines::sled::Sled;
                $body
            }
            "fjall" => {
                type $E = $crate::engines::fjall::Fjall;
                $body
            }
            "hashmap" => {
                type $E = $crate::engines::hashmap::Mem;
                $body
            }
            other => panic!(
                "unknown engine {other:?} (known: {:?})",
                $crate::engines::ALL
            ),
        }
    };
}
