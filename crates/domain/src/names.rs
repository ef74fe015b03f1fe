//! The `names!` macro: how the product's closed sets of names (sources, channels,
//! event types, statuses, roles, tasks, rules, ...) are declared, once each.
//!
//! Every such enum travels as a lower-case string in JSON, query strings, stream
//! entries and TEXT columns. The macro takes the enum with one string per variant and
//! writes what each of them needs: serde's rename of every variant, `ALL` (every
//! value, in declaration order), `as_str`, `Display` and `FromStr` (an unknown string
//! is an [`UnknownName`](crate::source::UnknownName) saying what was being parsed).
//! Other methods live in an `impl` block of their own beside it.

/// Declares a closed set of names; see the [module doc](crate::names).
///
/// ```ignore
/// names! {
///     /// What a thing is.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
///     pub enum Kind("kind") {
///         /// The first.
///         First = "first",
///         /// The second.
///         Second = "second",
///     }
/// }
/// ```
// The names are `tt`, not `literal`: a `literal` fragment reaches derive macros wrapped
// in an invisible group, which utoipa's reading of `#[serde(rename = ...)]` does not
// see through (the OpenAPI document would show the Rust variant names).
macro_rules! names {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $str:tt,)+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $str)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($str),+].len()] = [$($name::$variant),+];

            /// The name used in JSON, query strings, stream entries and Postgres.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $str,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::source::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::source::UnknownName {
                        what: $what,
                        value: s.to_owned(),
                    })
            }
        }
    };
}

#[cfg(all(test, feature = "openapi"))]
mod tests {
    use crate::api::*;
    use crate::{Channel, EventType, IdentifierKind, OrderStatus, Source};

    /// The OpenAPI schema of every closed set lists exactly its names, in order.
    #[test]
    fn the_openapi_schemas_list_the_wire_names() {
        macro_rules! check {
            ($($t:ty),+) => {$(
                let schema = serde_json::to_value(<$t as utoipa::PartialSchema>::schema()).unwrap();
                let names: Vec<&str> = <$t>::ALL.iter().map(|v| v.as_str()).collect();
                assert_eq!(schema["enum"], serde_json::json!(names), "{}", stringify!($t));
                for v in <$t>::ALL {
                    assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
                }
            )+};
        }
        check!(
            Source,
            Channel,
            EventType,
            OrderStatus,
            IdentifierKind,
            Role,
            ModelTask,
            ModelStatus,
            CsvImportKind,
            CsvImportStatus,
            MergeAction,
            MergeRule,
            ReviewReason,
            ReviewStatus
        );
    }
}
