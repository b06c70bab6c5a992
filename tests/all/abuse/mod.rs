//! Attacks by one tenant on a shared deployment (issue 15): each is refused with a typed
//! error and the victim tenant is still served correctly. One file per area.

mod quotas;
