//! The invoke endpoint's function name, `qualifier` and headers as a device sends them:
//! an invocation or a 400, never a panic. Run: `.ci/fuzz invoke_head`.
#![no_main]

use common::edge::parse_head;
use common::model::RequestId;
use libfuzzer_sys::fuzz_target;
use strata_fuzz::{fields, headers};

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let Some(name) = f.first() else {
        return;
    };
    let qualifier = f.get(1).map(String::as_str).filter(|q| *q != "-");
    let hs = headers(f.get(2..).unwrap_or_default());
    if let Err(e) = parse_head(RequestId::random(), name.clone(), qualifier, &hs) {
        assert_eq!(e.kind, common::model::ErrorKind::BadRequest, "{e:?}");
    }
});
