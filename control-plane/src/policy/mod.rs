//! Policies: the model ([`model`]), how they become filter configurations
//! ([`compile`]), the checks every source applies ([`validate`]), and the file source
//! ([`file_source`]).

pub mod compile;
pub mod file_source;
pub mod model;
pub mod validate;
