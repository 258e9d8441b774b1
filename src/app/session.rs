//! The signed-in admin as the UI sees it: one resource for the whole app, refreshed after
//! sign-in and sign-out. UI checks based on it are cosmetic; the server decides.

use crate::app::server_fns::current_admin;
use crate::model::{AdminView, Permission, UiError};
use leptos::prelude::*;

/// The current admin, shared through context.
pub type Me = Resource<Result<Option<AdminView>, UiError>>;

/// Creates and provides the resource (once, in `App`).
pub fn provide_me() -> Me {
    let me: Me = Resource::new(|| (), |()| current_admin());
    provide_context(me);
    me
}

/// The resource provided by `App`.
#[must_use]
pub fn use_me() -> Me {
    use_context::<Me>().unwrap_or_else(|| Resource::new(|| (), |()| current_admin()))
}

/// The admin once loaded, or `None`.
#[must_use]
pub fn signed_in(me: Me) -> Option<AdminView> {
    me.get().and_then(Result::ok).flatten()
}

/// Whether the signed-in admin's role is granted `permission` by the core's own table (for
/// showing controls only: the core decides).
#[must_use]
pub fn may(me: Me, permission: Permission) -> bool {
    signed_in(me).is_some_and(|a| a.role.may(permission))
}
