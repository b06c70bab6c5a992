//! Attacks on the multi-tenant front door (issue 15): each is refused with a typed error
//! and the victim tenant is still served. One file per area.

mod hosts;
