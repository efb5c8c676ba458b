pub mod migrate;
pub mod token;
