//! Route input from the API (host pattern, path prefix, function, qualifier) and a device
//! request's host and path matched against it: a route or a typed error, never a panic.
//! Run: `.ci/fuzz route_parse`.
#![no_main]

use common::edge::RouteTable;
use common::model::{HostPattern, PathPrefix, Route, RouteId, TenantId};
use libfuzzer_sys::fuzz_target;
use strata_fuzz::fields;

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let get = |i: usize| f.get(i).map_or("", String::as_str);
    let _ = HostPattern::new(get(0));
    let _ = PathPrefix::new(get(1));
    let _ = RouteId::parse(get(0));
    let Ok(tenant) = TenantId::new("fuzz") else {
        return;
    };
    let qualifier = f.get(3).map(String::as_str);
    if let Ok(route) = Route::new(tenant, get(0), get(1), get(2), qualifier, 0) {
        // A valid route's id reads back, and its own host and prefix find it.
        assert!(RouteId::parse(route.id.as_str()).is_ok(), "{route:?}");
        let _ = route.qualifier();
        let table = RouteTable::new(1, [route.clone()]);
        let _ = table.lookup(get(4), get(5));
        if route.host.wildcard_suffix().is_none() && !common::model::is_reserved_path(get(1)) {
            assert!(
                table
                    .lookup(route.host.as_str(), route.path_prefix.as_str())
                    .is_some(),
                "{route:?}"
            );
        }
    }
});
