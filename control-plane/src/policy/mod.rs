//! Policies: the model ([`model`]), how they become filter configurations
//! ([`compile`]), the checks every source applies ([`validate`]), the file source
//! ([`file_source`]) and how sources combine ([`sources`]).

pub mod compile;
pub mod file_source;
pub mod model;
pub mod sources;
pub mod validate;
