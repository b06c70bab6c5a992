//! Attacks of one tenant (or one node) on another, each refused with a typed error while
//! the victim tenant is still served. One file per area of issue 15.

mod tenancy;
