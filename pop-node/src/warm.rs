//! The POP's warm-pool loop: the shared [`common::warm_loop`] (the region's dedicated
//! fleet runs the same one).

pub use common::warm_loop::WarmPlanner;
