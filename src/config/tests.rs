//! Tests of the whole pipeline: text → Config or diagnostics with field and line.
