//! Running otpgate under an operator's tools: Prometheus metrics (`metrics`, a leaf every
//! layer feeds), the HTTP endpoint of metrics and health (`http`, with `health` deciding
//! readiness), systemd's notify protocol (`notify`) and reload on SIGHUP (`reload`). Above
//! the RADIUS layer: it reads the server's live config, and only `cli::serve` calls it.

pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod reload;
