//! Attacks on the multi-tenant front door (issue 15), one file per area, each against real
//! nodes: the attack is refused with a typed error and a victim tenant is still served.

mod forward;
mod frontdoor;
mod hosts;
mod quotas;
mod reuse;
mod tenancy;
