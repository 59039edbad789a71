//! The network's own concepts, free of I/O: incidents and their lifecycle, events,
//! principals, and who may see what.

pub mod admission;
pub mod cursor;
pub mod event;
pub mod incident;
pub mod plan;
pub mod principal;
pub mod raise;
pub mod reference;
pub mod visibility;

/// Declares a closed set of lowercase wire names (`"extreme"`, `"amber+strict"`, …) with
/// `as_str`, `FromStr`, `Display` and serde, so every enum of the contract parses and
/// prints the same way.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
            /// The accepted names, for error messages.
            pub fn names() -> String {
                [$($wire),+].join(", ")
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($wire => Ok($name::$variant),)+ _ => Err(()) }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(|_| serde::de::Error::custom(format!(
                    "unknown {} {:?}; expected one of: {}", stringify!($name).to_lowercase(), s, $name::names())))
            }
        }
    };
}
pub(crate) use wire_enum;
