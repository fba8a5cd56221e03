//! Configuration (TOML): parsing and validation.
