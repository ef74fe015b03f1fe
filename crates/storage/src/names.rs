//! Reading the product's names (roles, statuses, kinds, tasks, rules, sources, ...) out
//! of TEXT columns as their domain enums.
//!
//! Every such column is written from the enum's `as_str` and most carry a CHECK
//! constraint listing the names, so an unknown name means the schema and the code
//! disagree. [`Named`] decodes it with the enum's `FromStr` and turns an unknown name
//! into a decode error, instead of each reader choosing its own silent fallback.

use std::str::FromStr;

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// A TEXT column decoded as `T` through `T: FromStr` (use `.0` for the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Named<T>(pub T);

impl<T> Type<Postgres> for Named<T> {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r, T> Decode<'r, Postgres> for Named<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let name = <&str as Decode<'r, Postgres>>::decode(value)?;
        Ok(Named(name.parse()?))
    }
}
