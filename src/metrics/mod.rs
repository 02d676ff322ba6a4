//! Prometheus metrics (SPEC §8) and the HTTP endpoint serving them.
