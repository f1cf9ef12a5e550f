//! The benchmark: a load driver that speaks Switchboard's protocol,
//! Socket.IO's and a bare server's; the bare ceiling server; the systems'
//! start-up; the scenarios (the soak in its own file); the summary; the store alone. `sbbench`
//! (main.rs) runs them.

pub mod ceiling;
pub mod churn;
pub mod driver;
pub mod plots;
pub mod procstat;
pub mod protocol;
pub mod report;
pub mod run_state;
pub mod scenarios;
pub mod soak;
pub mod store;
pub mod systems;
pub mod webhook;
