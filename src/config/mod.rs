//! The TOML configuration: schema, embedded defaults, and validation with field names.
